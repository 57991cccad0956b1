/*
 * mainevent web player: hls.js (or dash.js for DASH) on an HTMLVideoElement plus live QoE figures.
 *
 * Query parameters:
 *   src=URL         playlist (default /live/demo/master.m3u8)
 *   ll=1            hls.js lowLatencyMode (LL-HLS: parts, blocking reload, delta updates; starts
 *                   PART-HOLD-BACK behind the edge); default standard live, 3 x TD behind the edge
 *   dash=1          play a DASH MPD with dash.js (implied when src ends in .mpd); default
 *                   src is then /live/demo/manifest.mpd
 *   player=shaka    play src (HLS or DASH) with Shaka Player, stock configuration, instead of
 *                   hls.js / dash.js (the latency bench compares stock players)
 *   autoplay=0      do not start on load (default: start muted, so browsers allow it)
 *   edges=A,B       base URLs of alternative CDNs (parsed and shown; not used yet)
 *   telemetry=URL   telemetry collector: hls.js sends CMCD v2 event reports there with its own
 *                   `cmcd: {version: 2, eventTargets: [...]}` options (no reporting code here)
 *   ti=S            CMCD time-interval (heartbeat) period in seconds (default 1)
 *
 * window.mainevent.stats() returns a plain JSON-able snapshot (see statsSnapshot below); the
 * end-to-end tests poll it.
 */
(function () {
  "use strict";

  var UPDATE_MS = 250;
  var HISTORY_S = 120;
  var MAX_ERRORS = 50;

  var params = new URLSearchParams(window.location.search);
  var dash = flag(params.get("dash"), /\.mpd(\?|$)/.test(params.get("src") || ""));
  var defaultSrc = dash ? "/live/demo/manifest.mpd" : "/live/demo/master.m3u8";
  var src = new URL(params.get("src") || defaultSrc, window.location.href).href;
  var lowLatency = flag(params.get("ll"), false);
  var autoplay = flag(params.get("autoplay"), true);
  var edges = parseEdges(params.get("edges"));
  var useShaka = params.get("player") === "shaka";
  var telemetry = params.get("telemetry");
  var reportInterval = Number(params.get("ti") || 1);
  var eventMatch = /\/live\/([^/]+)\//.exec(new URL(src).pathname);
  var eventId = eventMatch ? eventMatch[1] : "demo";

  var video = document.getElementById("video");
  var hls = null;
  var dashPlayer = null;
  var shakaPlayer = null;
  var mode = "unsupported";

  // Startup is measured from the play request: navigation start when autoplaying (what a
  // viewer waits through), else the first `play` event. With hls.js it is the moment the page
  // hands it the source (script loading is page load, not player start-up): the same instant
  // hls.js's CMCD reporter starts, so the page and the telemetry API measure the same thing.
  var playRequestedAt = autoplay ? 0 : null;
  var playingCandidate = null; // {t, ct}: a `playing` event not yet confirmed by currentTime moving
  var started = false;
  var startupSec = null;
  var firstFrameT = null; // performance.now() of the first frame (the confirmed `playing`)

  var stalled = false;
  var stallStartedAt = 0;
  var stallStartCt = 0;
  var stalls = 0;
  var stallTimeMs = 0;
  var longestStallMs = 0;

  var errors = [];
  var errorCount = 0;
  var fatal = false;
  var fatalReason = null;
  var recovered = { media: false, network: false, manifest: false };

  var level = -1;
  var lastFrag = null; // {start, pdtMs} of the fragment at the playhead (FRAG_CHANGED)
  var history = [];

  function flag(value, fallback) {
    if (value === null) return fallback;
    return ["0", "false", "no", "off"].indexOf(value.trim().toLowerCase()) === -1;
  }

  function parseEdges(value) {
    if (!value) return [];
    return value.split(",").map(function (s) { return s.trim(); }).filter(Boolean).map(function (s) {
      var valid = true;
      try { new URL(s); } catch (e) { valid = false; }
      return { url: s, valid: valid };
    });
  }

  function now() { return performance.now(); }

  // ---- errors and recovery ------------------------------------------------------------------

  function recordError(type, details, isFatal, message) {
    errorCount += 1;
    errors.push({
      t: Math.round(now()) / 1000,
      at: new Date().toISOString(),
      type: String(type),
      details: String(details),
      fatal: !!isFatal,
      message: message ? String(message).slice(0, 300) : null,
    });
    if (errors.length > MAX_ERRORS) errors.shift();
  }

  function markFatal(reason) {
    fatal = true;
    fatalReason = reason;
    endStall();
    showOverlay("fatal: " + reason, true);
  }

  function onHlsError(_event, data) {
    var reason = data.error && data.error.message ? data.error.message : data.reason;
    recordError(data.type, data.details, data.fatal, reason);
    if (data.details === Hls.ErrorDetails.BUFFER_STALLED_ERROR) beginStall();
    if (!data.fatal || fatal) return;
    var manifest = /^manifest/i.test(data.details || "");
    if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !recovered.media) {
      recovered.media = true;
      hls.recoverMediaError();
      return;
    }
    if (data.type === Hls.ErrorTypes.NETWORK_ERROR && manifest && !recovered.manifest) {
      recovered.manifest = true; // startLoad() does not reload a multivariant playlist
      hls.loadSource(src);
      return;
    }
    if (data.type === Hls.ErrorTypes.NETWORK_ERROR && !manifest && !recovered.network) {
      recovered.network = true;
      hls.startLoad();
      return;
    }
    markFatal(data.type + ": " + data.details);
    hls.destroy();
    hls = null;
  }

  // ---- stalls and startup -------------------------------------------------------------------

  function beginStall() {
    if (!started || stalled || fatal || video.paused || video.seeking || video.ended) return;
    stalled = true;
    stalls += 1;
    stallStartedAt = now();
    stallStartCt = video.currentTime;
  }

  function endStall() {
    if (!stalled) return;
    stalled = false;
    stallTimeMs += now() - stallStartedAt;
    longestStallMs = Math.max(longestStallMs, now() - stallStartedAt);
  }

  function onPlaying() {
    if (!started) playingCandidate = { t: now(), ct: video.currentTime };
    endStall();
  }

  function onTimeUpdate() {
    var ct = video.currentTime;
    if (!started && playingCandidate && ct > playingCandidate.ct + 0.01) {
      started = true;
      startupSec = (playingCandidate.t - (playRequestedAt || 0)) / 1000;
      firstFrameT = playingCandidate.t;
      showOverlay(null);
    }
    if (stalled && ct > stallStartCt + 0.05) endStall();
  }

  function onWaiting() {
    if (!started) { playingCandidate = null; return; }
    beginStall();
  }

  // ---- figures ------------------------------------------------------------------------------

  function bufferAhead() {
    var b = video.buffered;
    var ct = video.currentTime;
    for (var i = 0; i < b.length; i++) {
      if (b.start(i) - 0.1 <= ct && ct < b.end(i)) return b.end(i) - ct;
    }
    return 0;
  }

  function playheadDateMs() {
    if (shakaPlayer) {
      // Shaka maps the playhead to wall-clock time (PDT for HLS, the MPD timeline for DASH).
      var date = shakaPlayer.getPlayheadTimeAsDate();
      return date && !isNaN(date.getTime()) ? date.getTime() : null;
    }
    if (dashPlayer) {
      // dash.js maps the playhead to UTC through the MPD timeline and the UTCTiming clock.
      var utc = dashPlayer.timeAsUTC();
      return utc && isFinite(utc) ? utc * 1000 : null;
    }
    if (hls) {
      var d = hls.playingDate;
      if (d && !isNaN(d.getTime())) return d.getTime();
      if (lastFrag && lastFrag.pdtMs) return lastFrag.pdtMs + (video.currentTime - lastFrag.start) * 1000;
      return null;
    }
    if (mode === "native" && typeof video.getStartDate === "function") {
      var start = video.getStartDate().getTime();
      if (!isNaN(start)) return start + video.currentTime * 1000;
    }
    return null;
  }

  function levelList() {
    if (dashPlayer) {
      var reps = dashPlayer.getRepresentationsByType ? dashPlayer.getRepresentationsByType("video") : [];
      return (reps || []).map(function (r) {
        return {
          height: r.height || null,
          width: r.width || null,
          bitrate: r.bandwidth || null,
          name: r.id || null,
          codecs: r.codecs || null,
        };
      });
    }
    if (!hls || !hls.levels) return [];
    return hls.levels.map(function (l) {
      return {
        height: l.height || null,
        width: l.width || null,
        bitrate: l.bitrate || null,
        name: l.name || null,
        codecs: [l.videoCodec, l.audioCodec].filter(Boolean).join(",") || null,
      };
    });
  }

  function currentLevel() {
    if (!hls) return -1;
    return hls.currentLevel >= 0 ? hls.currentLevel : level;
  }

  function round(x, digits) {
    if (x === null || x === undefined || !isFinite(x)) return null;
    var f = Math.pow(10, digits);
    return Math.round(x * f) / f;
  }

  function stateName() {
    if (fatal) return "fatal";
    if (video.ended) return "ended";
    if (!started) return playRequestedAt === null ? "paused" : "loading";
    if (stalled) return "stalled";
    if (video.paused) return "paused";
    return "playing";
  }

  function statsSnapshot() {
    var pdt = playheadDateMs();
    var lv = currentLevel();
    var levels = levelList();
    var stallMs = stallTimeMs + (stalled ? now() - stallStartedAt : 0);
    var q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    return {
      playing: stateName() === "playing",
      state: stateName(),
      currentTime: round(video.currentTime, 3),
      latencySec: pdt === null ? null : round((Date.now() - pdt) / 1000, 3),
      playheadDate: pdt === null ? null : new Date(pdt).toISOString(),
      level: lv,
      loadLevel: hls ? hls.loadLevel : -1,
      levels: levels,
      height: lv >= 0 && levels[lv] ? levels[lv].height : (video.videoHeight || null),
      bitrate: lv >= 0 && levels[lv] ? levels[lv].bitrate : null,
      bufferSec: round(bufferAhead(), 3),
      stalls: stalls,
      stallTimeSec: round(stallMs / 1000, 3),
      longestStallSec: round(Math.max(longestStallMs, stalled ? now() - stallStartedAt : 0) / 1000, 3),
      errors: errors.slice(),
      errorCount: errorCount,
      fatal: fatal,
      fatalReason: fatalReason,
      startupSec: round(startupSec, 3),
      firstFrameAtMs: firstFrameT === null ? null : Math.round(performance.timeOrigin + firstFrameT),
      bandwidthEstimate: hls ? Math.round(hls.bandwidthEstimate) || null : null,
      sessionId: hls ? hls.sessionId || null : null,
      droppedFrames: q ? q.droppedVideoFrames : null,
      lowLatency: lowLatency,
      mode: mode,
      hlsVersion: typeof Hls !== "undefined" ? Hls.version : null,
      dashVersion: dashPlayer ? dashPlayer.getVersion() : null,
      shakaVersion: shakaPlayer ? shaka.Player.version : null,
      src: src,
      edges: edges.map(function (e) { return e.url; }),
    };
  }

  // ---- rendering ----------------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function text(id, value, cls) {
    var el = $(id);
    el.textContent = value;
    el.className = cls || "";
  }

  function fmtSec(x, digits) { return x === null ? "–" : x.toFixed(digits === undefined ? 2 : digits) + " s"; }

  function fmtBps(bps) {
    if (!bps) return "–";
    return bps >= 1e6 ? (bps / 1e6).toFixed(2) + " Mbit/s" : Math.round(bps / 1e3) + " kbit/s";
  }

  function clip(str, n) { return str.length > n ? str.slice(0, n - 1) + "…" : str; }

  function fmtClock(iso) { return iso ? iso.slice(11, 23) + "Z" : "–"; }

  function showOverlay(message, isFatal) {
    var el = $("overlay");
    if (!message) { el.hidden = true; return; }
    el.hidden = false;
    el.textContent = message;
    el.className = "overlay" + (isFatal ? " fatal" : "");
  }

  var renderedLevels = "";
  var renderedErrors = -1;

  function render() {
    var s = statsSnapshot();

    var pill = $("status");
    pill.textContent = s.state.toUpperCase();
    pill.className = "pill pill-" + s.state;

    var lat = s.latencySec;
    $("m-latency").textContent = lat === null ? "–" : lat.toFixed(2);
    $("m-latency").className = lat === null ? "" : lat > (lowLatency ? 6 : 15) ? "bad" : lat > (lowLatency ? 3 : 10) ? "warn" : "";

    var cur = s.level >= 0 ? s.levels[s.level] : null;
    text("m-rendition", cur ? (cur.height ? cur.height + "p" : "audio/other") + " · L" + s.level : s.height ? s.height + "p" : "–");
    text("m-bitrate", fmtBps(s.bitrate));
    text("m-buffer", fmtSec(s.bufferSec), s.state === "playing" && s.bufferSec < 1 ? "warn" : "");
    text("m-startup", fmtSec(s.startupSec, 3));
    text("m-stalls", String(s.stalls), s.stalls ? "warn" : "");
    text("m-stalltime", fmtSec(s.stallTimeSec), s.stallTimeSec > 0 ? "warn" : "");
    text("m-playhead", fmtSec(s.currentTime, 3));
    text("m-pdt", fmtClock(s.playheadDate));
    text("m-bw", fmtBps(s.bandwidthEstimate));
    text("m-dropped", s.droppedFrames === null ? "–" : String(s.droppedFrames));
    text("m-llmode", lowLatency ? "low latency (LL-HLS)" : "standard (3 × TD)");

    var levelKey = JSON.stringify([s.levels, s.level, s.loadLevel]);
    if (levelKey !== renderedLevels) {
      renderedLevels = levelKey;
      var body = $("levels");
      body.textContent = "";
      if (!s.levels.length) {
        body.innerHTML = '<tr><td colspan="4" class="dim">–</td></tr>';
      }
      for (var i = s.levels.length - 1; i >= 0; i--) {
        var l = s.levels[i];
        var tr = document.createElement("tr");
        if (i === s.level) tr.className = "current";
        else if (i === s.loadLevel) tr.className = "loading";
        [String(i), l.height ? l.height + "p" : "–", fmtBps(l.bitrate), l.codecs || ""].forEach(function (v) {
          var td = document.createElement("td");
          td.textContent = v;
          tr.appendChild(td);
        });
        body.appendChild(tr);
      }
    }

    if (errorCount !== renderedErrors) {
      renderedErrors = errorCount;
      $("m-errcount").textContent = String(errorCount);
      var list = $("errors");
      list.textContent = "";
      if (!errors.length) list.innerHTML = '<li class="dim">none</li>';
      errors.slice(-12).reverse().forEach(function (e) {
        var li = document.createElement("li");
        var t = document.createElement("span");
        t.className = "t";
        t.textContent = e.at.slice(11, 19);
        li.appendChild(t);
        var d = document.createElement("span");
        if (e.fatal) d.className = "fatal";
        d.textContent = (e.fatal ? "FATAL " : "") + e.type + " · " + e.details + (e.message ? " — " + clip(e.message, 110) : "");
        li.appendChild(d);
        list.appendChild(li);
      });
    }

    history.push({ t: now(), latency: lat, buffer: s.bufferSec });
    while (history.length && history[0].t < now() - HISTORY_S * 1000) history.shift();
    drawChart();
  }

  function renderStatic() {
    $("src").textContent = src;
    $("mode").textContent = mode + (typeof Hls !== "undefined" ? " " + Hls.version : "");
    var list = $("edges");
    if (edges.length) {
      list.textContent = "";
      edges.forEach(function (e) {
        var li = document.createElement("li");
        li.textContent = e.url;
        if (!e.valid) { li.className = "bad"; li.title = "not a valid URL"; }
        list.appendChild(li);
      });
    }
  }

  function drawChart() {
    var canvas = $("chart");
    var ratio = window.devicePixelRatio || 1;
    var w = canvas.clientWidth;
    var h = canvas.clientHeight;
    if (!w || !h) return;
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    var maxY = 4;
    history.forEach(function (p) {
      if (p.latency !== null) maxY = Math.max(maxY, p.latency);
      if (p.buffer !== null) maxY = Math.max(maxY, p.buffer);
    });
    var step = [1, 2, 5, 10, 20, 50, 100].find(function (st) { return maxY * 1.15 / st <= 4; }) || 200;
    maxY = Math.ceil((maxY * 1.15) / step) * step;
    var t1 = now();
    var x = function (t) { return w - ((t1 - t) / (HISTORY_S * 1000)) * w; };
    var y = function (v) { return h - 4 - (v / maxY) * (h - 12); };
    ctx.strokeStyle = "#222a36";
    ctx.fillStyle = "#7c8797";
    ctx.font = "11px ui-monospace, monospace";
    ctx.lineWidth = 1;
    for (var g = 0; g <= maxY; g += step) {
      ctx.beginPath();
      ctx.moveTo(0, y(g));
      ctx.lineTo(w, y(g));
      ctx.stroke();
      ctx.fillText(String(g), 2, g === maxY ? y(g) + 11 : y(g) - 2);
    }
    [["latency", "#4fb3ff"], ["buffer", "#3ecf8e"]].forEach(function (series) {
      ctx.strokeStyle = series[1];
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      var pen = false;
      history.forEach(function (p) {
        var v = p[series[0]];
        if (v === null) { pen = false; return; }
        if (pen) ctx.lineTo(x(p.t), y(v)); else ctx.moveTo(x(p.t), y(v));
        pen = true;
      });
      ctx.stroke();
    });
  }

  // ---- wiring -------------------------------------------------------------------------------

  function startHls() {
    mode = "hls.js";
    var config = {
      lowLatencyMode: lowLatency,
      enableWorker: true,
      backBufferLength: 30,
    };
    if (!lowLatency) config.liveSyncDurationCount = 3;
    // Video is independent only at segment starts (2 s GOP), so hls.js starts up to a segment
    // further back than PART-HOLD-BACK; a gentle speed-up brings it to its target latency.
    if (lowLatency) config.maxLiveSyncPlaybackRate = 1.25;
    // hls.js moves its live target back by this much after every stall (default 1 s, for the
    // rest of the session). With parts of 0.5 s, one short stall at join would otherwise cost
    // 1 s of latency for good; half a second keeps the back-off proportionate to the parts.
    if (lowLatency) config.liveSyncOnStallIncrease = 0.5;
    if (telemetry) {
      // CMCD v2 entirely by hls.js: keys on every request (query), event reports POSTed as
      // application/cmcd to the collector: play-state changes (their `ts` is the media
      // element's `playing`/`waiting` instant, so start-up and stalls are exact, not known
      // only to the heartbeat bracket), heartbeats, errors, bitrate changes, responses.
      config.cmcd = {
        version: 2,
        contentId: eventId,
        eventTargets: [{
          url: telemetry.replace(/\/$/, "") + "/v1/cmcd/" + encodeURIComponent(eventId),
          events: ["ps", "t", "e", "bc", "rr"],
          interval: reportInterval,
        }],
      };
    }
    hls = new Hls(config);
    hls.on(Hls.Events.ERROR, onHlsError);
    hls.on(Hls.Events.LEVEL_SWITCHED, function (_e, data) { level = data.level; });
    hls.on(Hls.Events.FRAG_CHANGED, function (_e, data) {
      var f = data.frag;
      lastFrag = { start: f.start, pdtMs: f.programDateTime || null };
    });
    hls.on(Hls.Events.MANIFEST_PARSED, function () {
      if (autoplay) {
        video.play().catch(function (err) {
          recordError("playError", err.name || "play() rejected", false, err.message);
          showOverlay("autoplay blocked: press play");
        });
      }
    });
    if (autoplay) playRequestedAt = now();
    hls.loadSource(src);
    hls.attachMedia(video);
  }

  function startDash() {
    mode = "dash.js";
    var script = document.createElement("script");
    script.src = "/static/vendor/dash.all.min.js";
    script.onerror = function () { markFatal("dash.js is not installed (make setup copies it)"); };
    script.onload = function () {
      dashPlayer = dashjs.MediaPlayer().create();
      dashPlayer.on(dashjs.MediaPlayer.events.ERROR, function (e) {
        var err = e && e.error ? e.error : {};
        recordError("dashError", String(err.code || "error"), false, err.message);
      });
      dashPlayer.on(dashjs.MediaPlayer.events.PLAYBACK_ERROR, function (e) {
        recordError("dashPlaybackError", "playback", true, e && e.error ? String(e.error) : null);
        markFatal("dash.js playback error");
      });
      dashPlayer.initialize(video, src, autoplay);
    };
    document.head.appendChild(script);
  }

  function startShaka() {
    mode = "shaka";
    var script = document.createElement("script");
    script.src = "/static/vendor/shaka-player.compiled.js";
    script.onerror = function () { markFatal("Shaka Player is not installed (make setup copies it)"); };
    script.onload = function () {
      shaka.polyfill.installAll();
      shakaPlayer = new shaka.Player();
      shakaPlayer.addEventListener("error", function (e) {
        var err = e.detail || {};
        recordError("shakaError", String(err.code || "error"), err.severity === 2, err.message);
        if (err.severity === 2) markFatal("shaka error " + err.code);
      });
      shakaPlayer.attach(video).then(function () {
        return shakaPlayer.load(src);
      }).then(function () {
        if (autoplay) {
          video.play().catch(function (err) {
            recordError("playError", err.name || "play() rejected", false, err.message);
          });
        }
      }).catch(function (err) {
        recordError("shakaError", String(err.code || "load"), true, err.message);
        markFatal("shaka load failed: " + (err.code || err.message));
      });
    };
    document.head.appendChild(script);
  }

  function startNative() {
    mode = "native";
    video.src = src;
    if (autoplay) {
      video.play().catch(function (err) {
        recordError("playError", err.name || "play() rejected", false, err.message);
      });
    }
  }

  video.muted = true;
  video.addEventListener("playing", onPlaying);
  video.addEventListener("timeupdate", onTimeUpdate);
  video.addEventListener("waiting", onWaiting);
  video.addEventListener("play", function () {
    if (playRequestedAt === null) playRequestedAt = now();
  });
  video.addEventListener("error", function () {
    if (mode !== "native" || fatal) return;
    var err = video.error;
    recordError("mediaError", err ? "code " + err.code : "unknown", true, err && err.message);
    markFatal("media element error" + (err ? " " + err.code : ""));
  });

  // Chromium answers canPlayType(HLS) with "maybe" but cannot play it natively: MSE first.
  if (useShaka) {
    startShaka();
  } else if (dash) {
    startDash();
  } else if (typeof Hls !== "undefined" && Hls.isSupported()) {
    startHls();
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    startNative();
  } else {
    mode = "unsupported";
    markFatal("this browser supports neither Media Source Extensions nor native HLS");
  }

  renderStatic();
  render();
  setInterval(render, UPDATE_MS);

  window.mainevent = {
    stats: statsSnapshot,
    hls: function () { return hls; },
    dash: function () { return dashPlayer; },
    shaka: function () { return shakaPlayer; },
    config: { src: src, lowLatency: lowLatency, dash: dash, shaka: useShaka, autoplay: autoplay, edges: edges.map(function (e) { return e.url; }) },
  };
})();
