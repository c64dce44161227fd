// The operators' dashboard: one Server-Sent Events feed (/v1/dashboard/feed), one JSON
// snapshot a second (docs/dashboard.md), plotted with uPlot (web/static/vendor/, vendored by
// ui/build.sh). URL parameters: ?token=… (if the server wants one; passed on to the feed),
// ?session=<id> (open that session's plots). Nothing is fetched from anywhere else.
"use strict";

const params = new URLSearchParams(location.search);
const KEEP = 300; // snapshots kept for the plots (5 minutes at one a second)
const HISTORY_S = 120; // asked for when the feed (re)connects, so the plots start full
const COLORS = ["#4ea8ff", "#ffb84e", "#5fd38d", "#ff6b8b", "#b48cff", "#4fd6d6", "#e0d45a", "#ff8f4e"];
const $ = (id) => document.getElementById(id);

let snaps = []; // oldest first
let selected = params.get("session");
const colorOf = new Map(); // session id -> color, stable while the page is open
const charts = {}; // name -> Chart

// what the tests (and a curious operator's console) can read
window.dashboard = { snapshots: 0, seq: 0, sessions: [], points: 0, charts, last: null };

function feedUrl() {
  const url = new URL("/v1/dashboard/feed", location.href);
  url.searchParams.set("history", String(HISTORY_S));
  if (params.get("token")) url.searchParams.set("token", params.get("token"));
  return url.toString();
}

function color(id) {
  if (!colorOf.has(id)) colorOf.set(id, COLORS[colorOf.size % COLORS.length]);
  return colorOf.get(id);
}

// -- charts ----------------------------------------------------------------------------------
// A Chart is redrawn from the snapshots each second; it is rebuilt when its series change
// (a session came or went), uPlot's series being fixed per instance.
class Chart {
  constructor(parent, name, title, note, build) {
    this.name = name;
    this.build = build; // snaps -> {series: [{label, color, scale?}], data: [xs, ...ys], axes?}
    this.box = document.createElement("div");
    this.box.className = "chart";
    this.box.dataset.chart = name;
    this.box.innerHTML = `<h3>${title}</h3>` + (note ? `<div class="note">${note}</div>` : "");
    this.body = document.createElement("div");
    this.box.appendChild(this.body);
    parent.appendChild(this.box);
    this.u = null;
    this.key = "";
    charts[name] = this;
  }

  width() { return Math.max(300, this.box.clientWidth - 16); }

  update() {
    const spec = this.build(snaps);
    if (!spec.series.length) {
      this.destroy();
      this.body.innerHTML = `<div class="empty">${spec.empty || "no data yet"}</div>`;
      return;
    }
    const key = JSON.stringify(spec.series.map((s) => [s.label, s.scale || "y"]));
    if (!this.u || key !== this.key) {
      this.destroy();
      this.body.innerHTML = "";
      this.key = key;
      this.u = new uPlot(this.options(spec), spec.data, this.body);
    } else {
      this.u.setData(spec.data);
    }
  }

  options(spec) {
    const scales = [...new Set(spec.series.map((s) => s.scale || "y"))];
    const axis = { stroke: "#8a939b", grid: { stroke: "#23282d", width: 1 }, ticks: { stroke: "#23282d", width: 1 } };
    const axes = [{ ...axis }];
    scales.forEach((sc, i) => {
      axes.push({ ...axis, scale: sc, side: i === 0 ? 3 : 1, grid: { ...axis.grid, show: i === 0 }, size: 52,
                  label: (spec.units || {})[sc] || "", labelSize: 18, labelFont: "12px system-ui" });
    });
    const scaleOpts = { x: { time: true } };
    for (const sc of scales) scaleOpts[sc] = { range: (u, lo, hi) => [Math.min(0, lo ?? 0), Math.max(hi ?? 1, (spec.min || {})[sc] ?? 1) * 1.08] };
    return {
      width: this.width(), height: 170, scales: scaleOpts, axes,
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      series: [{}, ...spec.series.map((s) => ({ label: s.label, stroke: s.color, width: 1.6, scale: s.scale || "y",
                                                  dash: s.dash, points: { show: false }, spanGaps: false,
                                                  value: (u, v) => v == null ? "–" : (+v).toFixed(s.digits ?? 1) }))],
    };
  }

  resize() { if (this.u) this.u.setSize({ width: this.width(), height: 170 }); }

  destroy() {
    if (this.u) { this.u.destroy(); this.u = null; }
    this.key = "";
  }
}

const xs = (list) => list.map((s) => s.time);
const sessionIds = (list) => {
  const ids = [];
  for (const s of list) for (const x of s.sessions) if (!ids.includes(x.id)) ids.push(x.id);
  return ids;
};
const field = (list, id, f) => list.map((s) => {
  const x = s.sessions.find((y) => y.id === id);
  const v = x ? f(x) : null;
  return v === undefined ? null : v;
});

// one series per session of a figure, for the overview plots
function perSession(f, opts = {}) {
  return (list) => {
    const ids = sessionIds(list).filter((id) => !opts.only || list.some((s) => s.sessions.some((x) => x.id === id && opts.only(x))));
    return { series: ids.map((id) => ({ label: id, color: color(id), digits: opts.digits })),
             data: [xs(list), ...ids.map((id) => field(list, id, f))], min: opts.min, empty: opts.empty };
  };
}

// the selected session's own plots
function ofSelected(lines, opts = {}) {
  return (list) => {
    if (!selected) return { series: [] };
    const sel = list.filter((s) => s.sessions.some((x) => x.id === selected));
    const last = sel.length ? sel[sel.length - 1].sessions.find((x) => x.id === selected) : null;
    const chosen = lines.filter((l) => !l.when || (last && l.when(last)));
    if (!sel.length || !chosen.length) return { series: [], empty: opts.empty };
    return { series: chosen.map((l) => ({ label: l.label, color: l.color, scale: l.scale, dash: l.dash, digits: l.digits })),
             data: [xs(sel), ...chosen.map((l) => field(sel, selected, l.f))], min: opts.min, units: opts.units };
  };
}

function stageLines(list) {
  if (!selected) return { series: [] };
  const sel = list.filter((s) => s.sessions.some((x) => x.id === selected));
  if (!sel.length) return { series: [] };
  const last = sel[sel.length - 1].sessions.find((x) => x.id === selected);
  const names = last.stages.filter((st) => sel.some((s) => {
    const x = s.sessions.find((y) => y.id === selected);
    return x && x.stages.some((y) => y.stage === st.stage && y.p99_ms != null);
  })).map((st) => st.stage);
  if (!names.length) return { series: [], empty: "no stage has timed a frame yet" };
  return { series: names.map((n, i) => ({ label: n, color: COLORS[i % COLORS.length] })),
           data: [xs(sel), ...names.map((n) => field(sel, selected, (x) => {
             const st = x.stages.find((y) => y.stage === n);
             return st ? st.p99_ms : null;
           }))], min: { y: 5 } };
}

function setupCharts() {
  const server = $("server-charts"), overview = $("overview-charts"), detail = $("detail-charts");
  const srv = (f) => (list) => list.map((s) => f(s.server));
  new Chart(server, "load", "CPU and memory", "server process: CPU % (100 = one core), resident MB", (list) => ({
    series: [{ label: "CPU %", color: COLORS[0], scale: "%" }, { label: "RSS MB", color: COLORS[1], scale: "MB", digits: 0 }],
    data: [xs(list), srv((x) => x.cpu_percent)(list), srv((x) => x.rss_mb)(list)],
    units: { "%": "CPU %", MB: "MB" }, min: { "%": 10, MB: 100 },
  }));
  new Chart(server, "loop", "Event loop lag", "how late the loop woke its 50 ms timer, ms, each second", (list) => ({
    series: [{ label: "p50", color: COLORS[2], digits: 2 }, { label: "p99", color: COLORS[3], digits: 2 }],
    data: [xs(list), srv((x) => x.loop_lag_p50_ms)(list), srv((x) => x.loop_lag_p99_ms)(list)], min: { y: 5 },
  }));
  new Chart(server, "active", "Sessions running", "calls (of max) and websocket streams", (list) => ({
    series: [{ label: "calls", color: COLORS[0], digits: 0 }, { label: "calls max", color: "#666", dash: [4, 4], digits: 0 },
             { label: "streams", color: COLORS[4], digits: 0 }],
    data: [xs(list), srv((x) => x.calls_active)(list), srv((x) => x.calls_max)(list), srv((x) => x.streams_active)(list)],
    min: { y: 2 },
  }));

  new Chart(overview, "fps", "Frames per second", "video frames sent per second, per session",
            perSession((x) => x.fps, { min: { y: 30 }, empty: "no session yet" }));
  new Chart(overview, "latency", "Engine latency p50 (ms)", "mirroring calls: caller audio in → the frame showing it sent",
            perSession((x) => x.engine_latency_p50_ms, { only: (x) => x.engine_latency_p50_ms != null,
                                                         empty: "no mirroring call: nothing to time" }));
  new Chart(overview, "offset", "A/V offset (ms)", "calls: how much later video reaches the encoder than audio",
            perSession((x) => x.av_offset_ms, { only: (x) => x.av_offset_ms != null, empty: "no call running" }));
  new Chart(overview, "drops", "Drops per second", "frames dropped in each session's graph, tracks and queue",
            perSession((x) => x.drops_per_s, { min: { y: 1 } }));

  new Chart(detail, "s-fps", "Frames per second", "", ofSelected([{ label: "fps", color: COLORS[0], f: (x) => x.fps }], { min: { y: 30 } }));
  new Chart(detail, "s-latency", "Engine latency (ms)", "caller audio in → frame sent (mirror mode only)",
            ofSelected([{ label: "p50", color: COLORS[2], f: (x) => x.engine_latency_p50_ms, when: (x) => x.engine_latency_p50_ms != null },
                        { label: "p99", color: COLORS[3], f: (x) => x.engine_latency_p99_ms, when: (x) => x.engine_latency_p99_ms != null }],
                       { empty: "not measured for this session: no caller audio is shown (agent mode or a stream)" }));
  new Chart(detail, "s-offset", "A/V offset (ms)", "",
            ofSelected([{ label: "A/V offset", color: COLORS[1], f: (x) => x.av_offset_ms, when: (x) => x.av_offset_ms != null }],
                       { empty: "streams do not measure it (the client plays both tracks by their timestamps)" }));
  new Chart(detail, "s-drops", "Drops and late frames per second", "",
            ofSelected([{ label: "drops/s", color: COLORS[3], f: (x) => x.drops_per_s },
                        { label: "late/s", color: COLORS[6], f: (x) => x.late_per_s }], { min: { y: 1 } }));
  new Chart(detail, "s-stages", "Stage latency p99 (ms)", "processing time per frame, every session of this graph", stageLines);
}

// -- tables and tiles --------------------------------------------------------------------------
const fmt = (v, d = 1, unit = "") => (v == null ? "–" : `${(+v).toFixed(d)}${unit}`);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

function renderTiles(s) {
  const v = s.server;
  $("t-cpu").innerHTML = v.cpu_percent == null ? "–" : `${v.cpu_percent.toFixed(0)}<small> %</small>`;
  $("t-rss").innerHTML = v.rss_mb == null ? "–" : `${v.rss_mb.toFixed(0)}<small> MB</small>`;
  $("t-lag").innerHTML = v.loop_lag_p99_ms == null ? "–" : `${v.loop_lag_p99_ms.toFixed(1)}<small> ms</small>`;
  $("t-calls").textContent = `${v.calls_active} / ${v.calls_max}`;
  $("t-streams").textContent = `${v.streams_active} / ${v.streams_max}`;
  $("session-count").textContent = String(s.sessions.length);
}

function renderSessions(s) {
  const body = $("sessions").querySelector("tbody");
  body.innerHTML = s.sessions.map((x) => `
    <tr data-session="${esc(x.id)}" class="${x.id === selected ? "selected" : ""}">
      <td><span class="swatch" style="background:${color(x.id)}"></span>${esc(x.id)}</td>
      <td><span class="pill ${x.kind}">${x.kind}</span></td><td>${esc(x.mode)}</td><td>${esc(x.state)}</td>
      <td class="num">${x.age_s.toFixed(0)} s</td><td class="num" data-fps>${x.fps.toFixed(1)}</td>
      <td class="num">${x.drops}</td><td class="num">${x.drops_per_s.toFixed(1)}</td><td class="num">${x.late_per_s.toFixed(1)}</td>
      <td class="num">${fmt(x.av_offset_ms, 1, " ms")}</td>
      <td class="num">${x.engine_latency_p50_ms == null ? "–" : `${fmt(x.engine_latency_p50_ms, 0)} / ${fmt(x.engine_latency_p99_ms, 0)} ms`}</td>
      <td class="num">${x.queued_utterances}</td>
    </tr>`).join("");
  $("no-sessions").style.display = s.sessions.length ? "none" : "";
}

function renderDetail(s) {
  const x = selected && s.sessions.find((y) => y.id === selected);
  const wasOpen = !$("detail").hidden;
  if (!selected) { $("detail").hidden = true; return; }
  $("detail").hidden = false;
  $("detail-title").textContent = x ? `Session ${x.id} — ${x.kind}, ${x.mode}, ${x.state}` : `Session ${selected} — ended`;
  $("stage-note").textContent = `p50/p99 over the last ${s.stage_window_s} s, all sessions of graph ${x ? x.graph : "?"}; queued: this session`;
  $("stages").querySelector("tbody").innerHTML = x ? x.stages.map((st) => `
    <tr><td>${esc(st.stage)}</td><td class="num">${st.queued}</td><td class="num">${fmt(st.p50_ms, 2)}</td>
    <td class="num">${fmt(st.p99_ms, 2)}</td><td class="num">${fmt(st.queue_p50_ms, 2)}</td>
    <td class="num">${fmt(st.queue_p99_ms, 2)}</td><td class="num">${st.frames}</td></tr>`).join("") : "";
  if (!wasOpen) for (const c of Object.values(charts)) c.resize();
}

function render() {
  if (!snaps.length) return;
  const s = snaps[snaps.length - 1];
  renderTiles(s);
  renderSessions(s);
  renderDetail(s);
  for (const c of Object.values(charts)) c.update();
  const d = window.dashboard;
  d.snapshots = snaps.length;
  d.seq = s.seq;
  d.last = s;
  d.sessions = s.sessions.map((x) => x.id);
  d.points = charts.fps.u ? charts.fps.u.data[0].length : 0;
}

function select(id) {
  selected = selected === id ? null : id;
  const url = new URL(location.href);
  if (selected) url.searchParams.set("session", selected); else url.searchParams.delete("session");
  history.replaceState(null, "", url);
  render();
  if (selected) $("detail").scrollIntoView({ behavior: "smooth", block: "start" });
}

$("sessions").addEventListener("click", (e) => {
  const row = e.target.closest("tr[data-session]");
  if (row) select(row.dataset.session);
});

// -- the feed ----------------------------------------------------------------------------------
let lastRx = 0; // when the page last got something (its own clock: the server's may differ)

function live() {
  lastRx = Date.now();
  $("feed-state").className = "live";
  $("feed-state").textContent = "live";
}

function connect() {
  const es = new EventSource(feedUrl());
  es.addEventListener("history", (e) => {
    live();
    snaps = JSON.parse(e.data).slice(-KEEP); // a (re)connect starts from the server's own history
    render();
  });
  es.addEventListener("snapshot", (e) => {
    live();
    const s = JSON.parse(e.data);
    if (snaps.length && s.seq <= snaps[snaps.length - 1].seq) return;
    snaps.push(s);
    if (snaps.length > KEEP) snaps.splice(0, snaps.length - KEEP);
    render();
  });
  es.onopen = live;
  es.onerror = () => {
    $("feed-state").className = "down";
    $("feed-state").textContent = "feed interrupted — reconnecting";
  };
  setInterval(() => { // a feed that goes quiet without an error is shown too
    const quiet = (Date.now() - lastRx) / 1000;
    if (es.readyState === EventSource.OPEN && lastRx && quiet > 5) {
      $("feed-state").className = "down";
      $("feed-state").textContent = `no snapshot for ${quiet.toFixed(0)} s`;
    }
  }, 1000);
}

setupCharts();
window.addEventListener("resize", () => { for (const c of Object.values(charts)) c.resize(); });
connect();
