// mainevent operations console: sign in, events list, per-event live view and controls.
// Talks to the control plane's operator API with the session cookie (HttpOnly, SameSite=Strict)
// and the session's CSRF token; every change carries an Idempotency-Key made when its
// confirmation opens (a double click replays, never applies twice) and If-Match with the ETag
// the operator saw (another operator's change first: 412, shown, nothing applied).
"use strict";

(function () {
  const $ = (sel) => document.querySelector(sel);
  const WINDOW_S = 120;
  const state = {
    session: null,
    view: null,
    eventId: null,
    event: null,
    etag: null,
    media: null,
    live: null,
    audience: {},
    history: [], // client-side samples of counters and pipelines, one per live poll
    charts: {},
    timers: [],
    lastAction: null,
  };

  // -- HTTP ---------------------------------------------------------------------------------------

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function api(method, path, opts = {}) {
    const headers = { Accept: "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && state.session) headers["X-CSRF-Token"] = state.session.csrf;
    if (opts.idem) headers["Idempotency-Key"] = opts.idem;
    if (opts.ifMatch) headers["If-Match"] = opts.ifMatch;
    const r = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    });
    let body = null;
    const text = await r.text();
    if (text) {
      try { body = JSON.parse(text); } catch (_) { body = { raw: text }; }
    }
    if (r.status === 401 && !opts.allow401) signedOut();
    return { status: r.status, ok: r.ok, body, headers: r.headers };
  }

  function errorText(res) {
    const e = res.body && res.body.error;
    if (e && typeof e === "object") return `${e.reason}: ${e.message}`;
    return `HTTP ${res.status}`;
  }

  // -- session ------------------------------------------------------------------------------------

  function show(id) {
    for (const s of ["login", "events-view", "event-view"]) $("#" + s).hidden = s !== id;
    state.view = id;
  }

  function canAct() {
    return !!state.session && (state.session.role === "operator" || state.session.role === "admin");
  }

  function signedOut() {
    state.session = null;
    stopTimers();
    $("#whoami").hidden = true;
    $("#logout").hidden = true;
    show("login");
  }

  function signedIn(session) {
    state.session = session;
    $("#whoami").textContent = `${session.name} (${session.role})`;
    $("#whoami").hidden = false;
    $("#logout").hidden = false;
    document.body.dataset.role = session.role;
    route();
  }

  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const err = $("#login-error");
    err.hidden = true;
    const key = $("#login-key").value;
    const res = await api("POST", "/console/api/login", { body: { key }, allow401: true });
    if (res.ok) {
      $("#login-key").value = "";
      signedIn(res.body);
      return;
    }
    let msg = errorText(res);
    if (res.status === 401) msg = "That API key is not valid. Check it and try again.";
    if (res.status === 429) {
      msg = `Too many failed sign-ins: try again in ${res.headers.get("Retry-After") || "a few"} s.`;
    }
    err.textContent = msg;
    err.hidden = false;
  });

  $("#logout").addEventListener("click", async () => {
    await api("POST", "/console/api/logout", { allow401: true });
    signedOut();
  });

  // -- routing and polling ------------------------------------------------------------------------

  function stopTimers() {
    for (const t of state.timers) clearInterval(t);
    state.timers = [];
  }

  function every(ms, fn) {
    fn();
    state.timers.push(setInterval(fn, ms));
  }

  function route() {
    if (!state.session) return;
    stopTimers();
    const m = location.hash.match(/^#\/events\/([A-Za-z0-9_-]+)/);
    if (m) {
      openEvent(m[1]);
    } else {
      show("events-view");
      every(2000, refreshEvents);
    }
  }
  window.addEventListener("hashchange", route);

  // -- events list --------------------------------------------------------------------------------

  function when(iso) {
    return iso ? new Date(iso).toLocaleString() : "—";
  }

  async function refreshEvents() {
    const [res, aud] = await Promise.all([
      api("GET", "/v1/events?limit=200"),
      api("GET", "/console/api/audience"),
    ]);
    if (!res.ok) return;
    state.audience = aud.ok ? aud.body.sessions : {};  // null: not counted (shared store)
    const tbody = $("#events tbody");
    tbody.replaceChildren();
    for (const e of res.body.events) {
      const tr = document.createElement("tr");
      tr.className = "clickable";
      tr.dataset.event = e.id;
      for (const v of [e.id, e.title, e.status, when(e.starts_at), when(e.ends_at), state.audience === null ? "–" : state.audience[e.id] || 0]) {
        const td = document.createElement("td");
        td.textContent = String(v);
        tr.appendChild(td);
      }
      tr.children[2].className = "state " + e.status;
      tr.addEventListener("click", () => { location.hash = `#/events/${e.id}`; });
      tbody.appendChild(tr);
    }
    applyRole();
  }

  $("#create-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    notifyList("");
    const f = new FormData(ev.target);
    const start = Date.now() + Number(f.get("starts_in") || 0) * 60_000;
    const body = {
      id: String(f.get("id")),
      title: String(f.get("title")),
      starts_at: new Date(start).toISOString(),
      ends_at: new Date(start + Number(f.get("duration") || 180) * 60_000).toISOString(),
      segment_duration_ms: Math.round(Number(f.get("segment") || 2) * 1000),
      latency_mode: String(f.get("latency") || "standard"),
    };
    const ladder = String(f.get("ladder") || "").trim();
    if (ladder) {
      try {
        body.ladder = parseLadder(ladder);
      } catch (e) {
        notifyList(e.message);
        return;
      }
    }
    confirmThen(`Create event ${body.id} “${body.title}”?`, async (idem) => {
      const res = await api("POST", "/v1/events", { body, idem });
      if (res.ok) {
        const sched = await api("POST", `/v1/events/${body.id}/transitions`, {
          body: { to: "scheduled" }, idem: idem + ":schedule", ifMatch: res.headers.get("ETag"),
        });
        notify(sched.ok ? "applied" : "failed", sched.ok ? `Event ${body.id} created and scheduled.` : errorText(sched));
        location.hash = `#/events/${body.id}`;
      } else {
        notifyList(`Not created: ${errorText(res)}`);
      }
    });
  });

  // `v720:1280x720:2500,v360:640x360:700` → rungs (as `mainevent up --ladder` takes them).
  function parseLadder(text) {
    return text.split(",").map((item) => {
      const m = item.trim().match(/^([a-z0-9][a-z0-9_-]{0,31}):(\d+)x(\d+):(\d+)$/);
      if (!m) throw new Error(`ladder: “${item}” is not ID:WIDTHxHEIGHT:KBPS`);
      return { id: m[1], width: Number(m[2]), height: Number(m[3]), bitrate_kbps: Number(m[4]) };
    });
  }

  function notifyList(text) {
    const p = $("#create-error");
    p.textContent = text;
    p.hidden = !text;
  }

  // -- confirmation, notices ----------------------------------------------------------------------

  function confirmThen(text, action, opts = {}) {
    if (!canAct()) return;
    const dlg = $("#confirm");
    const idem = newKey(); // made once per confirmation: a replay never applies twice
    $("#confirm-text").textContent = text;
    $("#confirm-reason-row").hidden = !opts.reason;
    $("#confirm-reason").value = "";
    dlg.returnValue = "";
    dlg.onclose = async () => {
      if (dlg.returnValue !== "ok") return;
      await action(idem, $("#confirm-reason").value);
    };
    dlg.showModal();
  }

  function notify(kind, text) {
    const n = $("#notice");
    n.className = kind;
    n.textContent = text;
    n.hidden = false;
    state.lastAction = { kind, text, at: Date.now() };
  }

  // -- one event ----------------------------------------------------------------------------------

  const LIFECYCLE = [
    { command: "rehearse", label: "Rehearse", from: ["scheduled"] },
    { command: "preflight", label: "Run preflight", from: ["rehearsal"] },
    { command: "go_live", label: "Go live", from: ["rehearsal"] },
    { command: "pause", label: "Pause", from: ["live"] },
    { command: "resume", label: "Resume", from: ["paused"] },
    { command: "end", label: "End", from: ["live", "paused", "rehearsal"] },
    { command: "archive", label: "Archive", from: ["ended"] },
  ];

  function openEvent(id) {
    if (state.eventId !== id) {
      state.history = [];
      for (const c of Object.values(state.charts)) c.plot.destroy();
      state.charts = {};
      $("#charts").replaceChildren();
      if (!state.lastAction || Date.now() - state.lastAction.at > 5000) $("#notice").hidden = true;
    }
    state.eventId = id;
    show("event-view");
    every(1000, refreshEvent);
    every(1000, refreshLive);
    every(2000, refreshAudit);
    every(5000, refreshSteering);
    every(5000, refreshPreflight);
  }

  async function refreshPreflight() {
    const res = await api("GET", `/v1/events/${state.eventId}/preflight`);
    if (res.ok) renderPreflight(res.body);
  }

  function renderPreflight(p) {
    $("#preflight-summary").textContent =
      `${p.passed ? "passed" : "FAILS: " + p.failing.join(", ")} at ${new Date(p.at).toLocaleTimeString()}`;
    $("#preflight-summary").dataset.passed = p.passed ? "1" : "0";
    cells($("#preflight tbody"), p.checks.map((c) => ({
      values: [c.passed ? "✔" : "✘", c.name, c.detail],
      cls: c.passed ? "verdict-healthy" : "verdict-lost",
    })));
  }

  async function refreshEvent() {
    const id = state.eventId;
    const [res, media, aud] = await Promise.all([
      api("GET", `/v1/events/${id}`),
      api("GET", `/v1/events/${id}/media`),
      api("GET", "/console/api/audience"),
    ]);
    if (!res.ok) {
      notify("failed", errorText(res));
      return;
    }
    state.event = res.body;
    state.etag = res.headers.get("ETag");
    state.media = media.ok ? media.body : null;
    state.audience = aud.ok ? aud.body.sessions : state.audience;
    const e = res.body;
    $("#ev-title").textContent = e.title;
    $("#ev-state").textContent = e.status;
    $("#ev-state").className = "state " + e.status;
    $("#ev-id").textContent = e.id;
    $("#ev-starts").textContent = when(e.starts_at);
    $("#ev-ends").textContent = when(e.ends_at);
    $("#ev-version").textContent = String(e.version);
    $("#ev-audience").textContent = String(state.audience[e.id] || 0);
    renderLifecycle(e);
    renderMedia();
    applyRole();
  }

  function renderLifecycle(e) {
    const box = $("#lifecycle");
    box.replaceChildren();
    for (const c of LIFECYCLE) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = c.label;
      b.dataset.command = c.command;
      b.dataset.enabled = c.from.includes(e.status) ? "1" : "0";
      b.addEventListener("click", () => lifecycle(c));
      box.appendChild(b);
    }
    const degraded = new Set(e.degraded || []);
    for (const box of document.querySelectorAll("[data-feature]")) {
      if (document.activeElement !== box) box.checked = degraded.has(box.dataset.feature);
    }
  }

  function lifecycle(c) {
    const e = state.event;
    const etag = state.etag; // the version the operator is looking at
    if (c.command === "preflight") {
      confirmThen(`Run the preflight checks of ${e.id}?`, async (idem) => {
        const res = await api("POST", `/v1/events/${e.id}/preflight`, { body: {}, idem });
        if (res.ok) {
          const failing = res.body.failing || [];
          notify(failing.length ? "failed" : "applied",
            failing.length ? `Preflight fails: ${failing.join(", ")}` : "Preflight passed: every check is green.");
          renderPreflight(res.body);
        } else {
          notify("failed", errorText(res));
        }
      });
      return;
    }
    const text = c.command === "go_live"
      ? `Go live with ${e.id}? Viewers with a playback token will see it. (Give a reason only to override failing preflight checks.)`
      : `${c.label} ${e.id} (now ${e.status})?`;
    confirmThen(text, async (idem, reason) => {
      const body = { command: c.command };
      if (c.command === "go_live" && reason) body.override = { reason };
      await command(body, idem, etag);
    }, { reason: c.command === "go_live" });
  }

  async function command(body, idem, etag) {
    const id = state.eventId;
    const res = await api("POST", `/v1/events/${id}/commands`, { body, idem, ifMatch: etag });
    if (res.ok) {
      const replayed = res.headers.get("Idempotent-Replayed") === "true";
      notify("applied", `${body.command} applied${replayed ? " (already done: replayed, not applied again)" : ""}.`);
    } else if (res.status === 412) {
      notify("conflict",
        `Conflict: another operator changed ${id} first (you saw ${etag}). Nothing was applied; review the new state and try again.`);
    } else {
      notify("failed", `${body.command} refused: ${errorText(res)}`);
    }
    await refreshEvent();
    return res;
  }

  for (const b of document.querySelectorAll("[data-pipeline]")) {
    b.addEventListener("click", () => {
      const mode = b.dataset.pipeline;
      const etag = state.etag;
      confirmThen(`Set the pipeline of ${state.eventId} to ${mode}?`,
        (idem) => command({ command: "force_pipeline", mode }, idem, etag));
    });
  }

  for (const box of document.querySelectorAll("[data-feature]")) {
    box.addEventListener("change", (ev) => {
      ev.preventDefault();
      const wanted = new Set(state.event ? state.event.degraded || [] : []);
      if (box.checked) wanted.add(box.dataset.feature); else wanted.delete(box.dataset.feature);
      const features = [...wanted].sort();
      const etag = state.etag;
      box.checked = !box.checked; // shown as applied once the event says so
      confirmThen(`Degrade ${state.eventId}: ${features.length ? features.join(", ") + " off" : "restore every feature"}?`,
        (idem) => command({ command: "degrade", features }, idem, etag));
    });
  }

  $("#cdn-drain").addEventListener("click", () => cdnCommand("drain_cdn"));
  $("#cdn-restore").addEventListener("click", () => cdnCommand("restore_cdn"));

  function cdnCommand(name) {
    const region = $("#cdn-region").value;
    const cdn = $("#cdn-name").value;
    const etag = state.etag;
    const verb = name === "drain_cdn" ? "Drain" : "Restore";
    confirmThen(`${verb} ${cdn} in region ${region === "*" ? "every region" : region}?`,
      (idem) => command({ command: name, region, cdn }, idem, etag));
  }

  async function refreshSteering() {
    const res = await api("GET", "/v1/steering");
    const regions = new Set(["*"]);
    let cdns = state.event ? state.event.cdns || [] : [];
    let overrides = [];
    if (res.ok) {
      for (const s of res.body.sessions) regions.add(s.region);
      for (const l of res.body.links) regions.add(l.region);
      cdns = Object.keys(res.body.cdns);
      overrides = res.body.overrides;
    }
    for (const r of ["eu", "us", "apac"]) regions.add(r);
    fillSelect($("#cdn-region"), [...regions]);
    fillSelect($("#cdn-name"), cdns);
    $("#overrides").textContent = overrides.length
      ? overrides.map((o) => `${o.action} ${o.cdn}@${o.region}`).join(", ")
      : "no overrides";
  }

  function fillSelect(sel, values) {
    const cur = sel.value;
    if ([...sel.options].map((o) => o.value).join() === values.join()) return;
    sel.replaceChildren(...values.map((v) => new Option(v, v)));
    if (values.includes(cur)) sel.value = cur;
  }

  function applyRole() {
    const can = canAct();
    for (const b of document.querySelectorAll("#event-view button, #create button")) {
      const enabled = b.dataset.enabled === undefined || b.dataset.enabled === "1";
      b.disabled = !can || !enabled;
      if (!can) b.title = "read-only: you cannot act";
    }
    for (const i of document.querySelectorAll("#event-view input[type=checkbox], #create input, #create select")) {
      i.disabled = !can;
    }
    $("#create").hidden = !can;
  }

  // -- media state and live view ------------------------------------------------------------------

  function cells(tbody, rows) {
    tbody.replaceChildren();
    for (const row of rows) {
      const tr = document.createElement("tr");
      for (const v of row.values) {
        const td = document.createElement("td");
        td.textContent = v === null || v === undefined ? "—" : String(v);
        tr.appendChild(td);
      }
      if (row.cls) tr.className = row.cls;
      if (row.data) Object.assign(tr.dataset, row.data);
      tbody.appendChild(tr);
    }
  }

  function renderMedia() {
    const m = state.media;
    const live = state.live;
    let pipelines = [];
    let published = null;
    if (m) {
      published = m.published_pipeline;
      pipelines = m.pipelines.map((p) => ({
        values: [p.name, p.name === published ? "published" : "", p.verdict, p.bitrate_kbps, p.fps,
          p.av_drift_ms === null ? null : (p.av_drift_ms / 1000).toFixed(3), p.since_last_packet_s,
          p.dropped_frames, p.transcoder_restarts],
        cls: p.name === published ? "published" : "",
        data: { pipeline: p.name },
      }));
      $("#media-error").textContent = m.error ? `Media plane: ${m.error}` : "";
      $("#media-error").hidden = !m.error;
    } else if (live) {
      const pub = live.pipelines.find((p) => p.published);
      published = pub ? pub.pipeline : null;
      pipelines = live.pipelines.map((p) => ({
        values: [p.pipeline, p.published ? "published" : "", p.verdict, p.bitrate_kbps, p.fps,
          p.av_offset_s, p.since_last_packet_s, p.input_errors, p.transcoder_restarts],
        cls: p.published ? "published" : "",
        data: { pipeline: p.pipeline },
      }));
    }
    cells($("#pipelines tbody"), pipelines);
    const mode = m ? m.pipeline_mode : (state.event && state.event.pipeline_mode) || "auto";
    $("#published").textContent = published ? `published: ${published} (mode ${mode})` : `mode ${mode}`;
    $("#published").dataset.published = published || "";
    const renditions = m && m.renditions.length
      ? m.renditions.map((r) => ({ values: [r.rendition, r.last_msn, r.since_publish_s, ""] }))
      : (live ? live.renditions.map((r) => ({ values: [r.rendition, r.last_msn, r.age_s, r.stalled ? "STALLED" : ""] })) : []);
    cells($("#renditions tbody"), renditions);
    renderDegraded(m);
  }

  const FEATURE_EFFECT = {
    dvr: "DVR off: the origin answers 503 behind the live edge",
    telemetry_detail: "telemetry detail off: aggregates only",
  };

  function renderDegraded(m) {
    // What the media plane applies (the supervisor's view), next to what the record asks.
    const asked = (state.event && state.event.degraded) || [];
    const applied = m ? m.degraded || [] : [];
    const box = $("#degraded-state");
    const pending = asked.filter((f) => !applied.includes(f));
    const parts = applied.map((f) => FEATURE_EFFECT[f] || `${f} off`);
    if (pending.length) parts.push(`pending: ${pending.join(", ")}`);
    box.textContent = parts.length ? parts.join("; ") : "every feature on";
    box.dataset.degraded = applied.join(",");
    box.className = applied.length ? "degraded" : "";
  }

  async function refreshLive() {
    const res = await api("GET", `/console/api/events/${state.eventId}/live`);
    if (!res.ok) return;
    const live = res.body;
    state.live = live;
    const pub = state.media
      ? state.media.pipelines.map((p) => [p.name, p.bitrate_kbps || 0])
      : live.pipelines.map((p) => [p.pipeline, p.bitrate_kbps]);
    const shield = live.delivery.find((d) => d.name === "shield");
    const edges = live.delivery.filter((d) => d.name !== "shield");
    state.history.push({
      t: live.at,
      grants: live.playback.grants,
      denials: Object.values(live.playback.denials).reduce((a, b) => a + b, 0),
      shed: Object.values(live.playback.shed).reduce((a, b) => a + b, 0),
      bitrate: Object.fromEntries(pub),
      originFetches: shield ? shield.upstream_fetches : null,
      hit: Object.fromEntries(live.delivery.map((d) => [d.name, d.hit_ratio])),
      edgeRequests: edges.reduce((a, d) => a + d.requests, 0),
    });
    while (state.history.length && state.history[0].t < live.at - WINDOW_S) state.history.shift();
    renderMedia();
    cells($("#delivery tbody"), live.delivery.map((d) => ({
      values: [d.name, d.requests, d.hit_ratio === null ? null : (100 * d.hit_ratio).toFixed(1) + " %", d.upstream_fetches, d.upstream_errors],
    })));
    const pb = live.playback;
    cells($("#playback tbody"), [
      { values: ["authorisations", pb.grants] },
      { values: ["pre-authorisations", pb.preauth_grants] },
      { values: ["token refreshes", pb.refreshes] },
      { values: ["degraded grants", pb.degraded_grants] },
      ...Object.entries(pb.denials).map(([r, n]) => ({ values: [`denied: ${r}`, n] })),
      ...Object.entries(pb.shed).map(([p, n]) => ({ values: [`shed: ${p}`, n] })),
      { values: ["playback sessions", pb.sessions] },
    ]);
    renderAlerts(live.alerts);
    $("#sources").replaceChildren(...Object.entries(live.sources).map(([k, v]) => {
      const li = document.createElement("li");
      li.textContent = `${k}: ${v}`;
      return li;
    }));
    drawCharts(live);
  }

  function renderAlerts(alerts) {
    const ul = $("#alerts");
    const items = [
      ...alerts.firing.map((a) => ({ a, cls: "firing", text: "FIRING" })),
      ...alerts.events.slice().reverse().filter((a) => a.state !== "firing").slice(0, 10)
        .map((a) => ({ a, cls: "resolved", text: a.state })),
    ];
    if (!items.length) {
      const li = document.createElement("li");
      li.textContent = "no alerts";
      ul.replaceChildren(li);
      return;
    }
    ul.replaceChildren(...items.map(({ a, cls, text }) => {
      const li = document.createElement("li");
      li.className = cls;
      li.dataset.rule = a.rule;
      const labels = Object.entries(a.labels || {}).map(([k, v]) => `${k}=${v}`).join(" ");
      li.textContent = `${text} ${a.rule} ${labels} value ${Number(a.value).toFixed(3)} at ${new Date(a.at * 1000).toLocaleTimeString()}`;
      return li;
    }));
  }

  // -- charts (uPlot) -----------------------------------------------------------------------------

  // Series from the telemetry API: each its own timestamps; aligned on the union of them.
  function align(list) {
    const ts = [...new Set(list.flatMap((s) => s.t))].sort((a, b) => a - b);
    const idx = new Map(ts.map((t, i) => [t, i]));
    const ys = list.map((s) => {
      const col = new Array(ts.length).fill(null);
      s.t.forEach((t, i) => { col[idx.get(t)] = s.v[i]; });
      return col;
    });
    return [ts, ...ys];
  }

  function qoeSeries(group, field, scale = 1) {
    const list = (state.live.qoe[group] || []).map((s) => ({
      label: group === "event" ? field : (s.labels[group] || "?"),
      t: s.columns.t,
      v: s.columns[field].map((x) => (x === null ? null : x * scale)),
    }));
    return list;
  }

  function historySeries(pick) {
    const h = state.history;
    const names = new Set();
    for (const s of h) for (const k of Object.keys(pick(s) || {})) names.add(k);
    return [...names].map((n) => ({ label: n, t: h.map((s) => s.t), v: h.map((s) => { const o = pick(s) || {}; return o[n] === undefined ? null : o[n]; }) }));
  }

  function rateSeries(label, get) {
    const h = state.history;
    const t = [], v = [];
    for (let i = 1; i < h.length; i++) {
      const a = get(h[i - 1]), b = get(h[i]);
      t.push(h[i].t);
      v.push(a === null || b === null ? null : Math.max(0, (b - a) / Math.max(0.001, h[i].t - h[i - 1].t)));
    }
    return { label, t, v };
  }

  const COLORS = ["#4c8dff", "#e5484d", "#2fbf71", "#e3a008", "#b072ff", "#00b3b3", "#ff7ab6", "#9aa0a6"];

  function chart(id, title, list) {
    const labels = list.map((s) => s.label);
    const data = list.length ? align(list) : [[]];
    let c = state.charts[id];
    const c0 = c; // redrawn with other series: the count of updates goes on
    if (c && c.labels.join("|") !== labels.join("|")) {
      c.plot.destroy();
      c.el.remove();
      c = null;
    }
    if (!c) {
      const el = document.createElement("div");
      el.className = "chart";
      el.dataset.chart = id;
      const h = document.createElement("h3");
      h.textContent = title;
      el.appendChild(h);
      $("#charts").appendChild(el);
      const opts = {
        width: 380, height: 170,
        scales: { x: { time: true } },
        axes: [{ stroke: "#9aa0a6", grid: { stroke: "#2a2f3a" } }, { stroke: "#9aa0a6", grid: { stroke: "#2a2f3a" }, size: 55 }],
        series: [{}, ...labels.map((l, i) => ({ label: l, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true }))],
        legend: { show: true },
      };
      const plot = new uPlot(opts, data, el);
      c = state.charts[id] = { plot, labels, el, updates: c0 ? c0.updates : 0 };
    } else {
      c.plot.setData(data);
    }
    c.updates += 1;
    c.points = data[0].length;
    c.last = data.slice(1).map((col) => { for (let i = col.length - 1; i >= 0; i--) if (col[i] !== null) return col[i]; return null; });
  }

  function drawCharts(live) {
    chart("viewers", "Concurrent viewers", qoeSeries("event", "concurrent_sessions"));
    chart("start", "Video start time p50 (ms)", qoeSeries("event", "video_start_time_p50_ms"));
    chart("rebuffer", "Rebuffer ratio (%)", qoeSeries("event", "rebuffer_ratio", 100));
    chart("latency", "Live latency p50 (s)", qoeSeries("event", "live_latency_p50_ms", 0.001));
    chart("errors-cdn", "CDN error rate by CDN (%)", qoeSeries("cdn", "error_rate", 100));
    chart("ttfb-cdn", "TTFB p50 by CDN (ms)", qoeSeries("cdn", "cdn_ttfb_p50_ms"));
    chart("errors-region", "CDN error rate by region (%)", qoeSeries("region", "error_rate", 100));
    chart("ttfb-region", "TTFB p50 by region (ms)", qoeSeries("region", "cdn_ttfb_p50_ms"));
    chart("ingest", "Ingest bitrate by pipeline (kbit/s)", historySeries((s) => s.bitrate));
    chart("hit", "Cache hit ratio (shield, edges)", historySeries((s) => s.hit));
    chart("delivery", "Edge requests and origin fetches (/s)", [
      rateSeries("edge requests", (s) => s.edgeRequests),
      rateSeries("origin fetches", (s) => s.originFetches),
    ]);
    chart("auth", "Authorisations, denials, shedding (/s)", [
      rateSeries("authorised", (s) => s.grants),
      rateSeries("denied", (s) => s.denials),
      rateSeries("shed", (s) => s.shed),
    ]);
  }

  // -- audit --------------------------------------------------------------------------------------

  async function refreshAudit() {
    const res = await api("GET", `/v1/audit?target_id=${encodeURIComponent(state.eventId)}&limit=50`);
    if (!res.ok) return;
    cells($("#audit tbody"), res.body.entries.map((a) => ({
      values: [new Date(a.at).toLocaleTimeString(), `${a.actor} (${a.role})`, a.action, `${a.target_type}/${a.target_id}`,
        change(a)],
      data: { action: a.action },
    })));
  }

  function change(a) {
    const b = a.before || {}, af = a.after || {};
    if (b.status !== af.status && af.status) return `${b.status || "—"} → ${af.status}`;
    if (af.command_result) return JSON.stringify(af.command_result).slice(0, 120);
    const diffs = [];
    for (const k of ["pipeline_mode", "degraded", "title", "starts_at", "ends_at", "policy", "ladder"]) {
      const x = JSON.stringify(b[k]), y = JSON.stringify(af[k]);
      if (a.before && a.after && x !== y) diffs.push(`${k}: ${x} → ${y}`);
    }
    if (diffs.length) return diffs.join("; ").slice(0, 160);
    if (a.target_type !== "event" && af && Object.keys(af).length) return JSON.stringify(af).slice(0, 120);
    return "";
  }

  // -- test hooks ---------------------------------------------------------------------------------

  window.meConsole = {
    charts: () => Object.fromEntries(Object.entries(state.charts).map(([k, c]) => [k, { labels: c.labels, points: c.points, updates: c.updates, last: c.last }])),
    state: () => ({ event: state.event, etag: state.etag, media: state.media, role: state.session && state.session.role, lastAction: state.lastAction }),
  };

  // -- start --------------------------------------------------------------------------------------

  (async () => {
    const res = await api("GET", "/console/api/session", { allow401: true });
    if (res.ok) signedIn(res.body); else signedOut();
  })();
})();
