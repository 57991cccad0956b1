/*
 * DVR controls of the mainevent player page: a seek bar over the DVR window (the media
 * element's seekable range, which hls.js keeps equal to the playlist's window), a "live"
 * button (back to the live edge) and a "start over" button (the event's start-over playlist,
 * /live/<event>/startover.m3u8, from its first segment).
 *
 * window.mainevent.dvr: window() -> {start, end, behindLiveSec}; seekBy(seconds); live();
 * startOver(). The end-to-end tests drive the page through it.
 */
(function () {
  "use strict";

  var video = document.getElementById("video");
  var bar = document.getElementById("dvr-seek");
  var liveButton = document.getElementById("dvr-live");
  var startButton = document.getElementById("dvr-startover");
  var label = document.getElementById("dvr-behind");
  var dragging = false;

  function hls() { return window.mainevent && window.mainevent.hls ? window.mainevent.hls() : null; }

  function seekWindow() {
    var s = video.seekable;
    if (!s || s.length === 0) return null;
    var start = s.start(0);
    var end = s.end(s.length - 1);
    var h = hls();
    // The live edge a player should sit at (hold-back behind the newest segment), not the very end.
    var edge = h && h.liveSyncPosition ? Math.min(h.liveSyncPosition, end) : end;
    return { start: start, end: end, edge: edge, behindLiveSec: Math.max(0, edge - video.currentTime) };
  }

  function clamp(t, w) { return Math.max(w.start, Math.min(w.edge, t)); }

  function seekBy(seconds) {
    var w = seekWindow();
    if (!w) return false;
    video.currentTime = clamp(video.currentTime + seconds, w);
    return true;
  }

  function live() {
    var w = seekWindow();
    if (!w) return false;
    video.currentTime = w.edge;
    if (video.paused) video.play().catch(function () {});
    return true;
  }

  function startOverUrl() {
    var src = new URL(window.mainevent.config.src);
    src.pathname = src.pathname.replace(/\/[^/]+\.m3u8$/, "/startover.m3u8");
    return src.pathname + src.search;
  }

  function startOver() {
    var params = new URLSearchParams(window.location.search);
    params.set("src", startOverUrl());
    window.location.search = params.toString();
  }

  function render() {
    var w = seekWindow();
    var shown = !!w && w.edge - w.start > 1;
    bar.disabled = !shown;
    liveButton.disabled = !shown;
    if (!w) { label.textContent = "–"; return; }
    bar.min = String(w.start);
    bar.max = String(w.edge);
    if (!dragging) bar.value = String(video.currentTime);
    var behind = w.behindLiveSec;
    label.textContent = behind < 1 ? "live" : "−" + behind.toFixed(0) + " s";
    liveButton.classList.toggle("at-live", behind < 1);
  }

  bar.addEventListener("input", function () { dragging = true; });
  bar.addEventListener("change", function () {
    dragging = false;
    var w = seekWindow();
    if (w) video.currentTime = clamp(Number(bar.value), w);
  });
  liveButton.addEventListener("click", live);
  startButton.addEventListener("click", startOver);
  setInterval(render, 250);

  if (window.mainevent) {
    window.mainevent.dvr = { window: seekWindow, seekBy: seekBy, live: live, startOver: startOver };
  }
})();
