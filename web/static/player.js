// The /v1/stream player: WebCodecs decodes H.264 and Opus (or plays PCM), Web Audio plays the
// sound, and each video frame is drawn when the *audio* clock reaches its time — audio is the
// master, so picture and sound stay in sync whatever the network does.
// URL parameters: ?token=… (if the server wants one), ?autosay=text (say it once ready),
// ?audio=opus|pcm, ?size=256.
"use strict";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const HEADER = 16;            // see docs/stream-protocol.md: u8 version, u8 stream, u16 flags, i64 pts, u32 duration
const JITTER_S = 0.15;        // playout buffer: media is scheduled this far behind its arrival
const stats = window.playerStats = {
  ready: null, connected: false, closeCode: null, videoPackets: 0, audioPackets: 0, decodedFrames: 0,
  drawnFrames: 0, decodedAudio: 0, audioSeconds: 0, keyframes: 0, resyncs: 0, events: {}, errors: [],
  done: [], started: [], lastStats: null,
};

let ws = null, videoDecoder = null, audioDecoder = null, ready = null;
let audioCtx = null, offset = null;   // context time = media time + offset
let frames = [];                      // decoded VideoFrames waiting for their time
let waitingForKey = true;
let words = [];

function log(msg) { $("status").textContent = msg; }
function error(msg) { stats.errors.push(String(msg)); log("error: " + msg); }

function mediaNow() {
  // The audio clock when it runs (autoplay allowed or after a click), else the page's clock.
  if (offset === null) return null;
  if (audioCtx && audioCtx.state === "running") return audioCtx.currentTime - offset - (audioCtx.outputLatency || 0);
  return performance.now() / 1000 - offset;
}

function clockNow() {
  return audioCtx && audioCtx.state === "running" ? audioCtx.currentTime : performance.now() / 1000;
}

function anchor(mediaTime) {
  // First packet, or media arriving later than its slot (the server stalled, we were throttled):
  // re-anchor the timeline so it is played JITTER_S from now. Counted: it is a glitch.
  if (offset !== null) stats.resyncs++;
  offset = clockNow() + JITTER_S - mediaTime;
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const url = new URL(proto + "//" + location.host + "/v1/stream");
  if (params.get("token")) url.searchParams.set("token", params.get("token"));
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    stats.connected = true;
    const config = { type: "config", audio: $("audio").value, size: Number($("size").value) };
    ws.send(JSON.stringify(config));
    log("connected; waiting for ready…");
  };
  ws.onclose = (e) => {
    stats.connected = false; stats.closeCode = e.code;
    log(`closed (${e.code}${e.reason ? ": " + e.reason : ""})`);
  };
  ws.onmessage = (e) => (typeof e.data === "string" ? onEvent(JSON.parse(e.data)) : onMedia(e.data));
}

function onEvent(ev) {
  stats.events[ev.type] = (stats.events[ev.type] || 0) + 1;
  switch (ev.type) {
    case "ready": return onReady(ev);
    case "started": stats.started.push(ev); words = []; break;
    case "word": words.push(ev); break;
    case "done": stats.done.push(ev); break;
    case "error": error(`${ev.code}: ${ev.message}`); break;
    case "stats":
      stats.lastStats = ev;
      log(`media ${ev.media_time.toFixed(1)} s · ${stats.decodedFrames} frames decoded · ` +
          `${(ev.bytes_sent / 1024).toFixed(0)} KiB · dropped ${ev.video_dropped} · resyncs ${stats.resyncs}`);
      break;
  }
}

function onReady(ev) {
  ready = stats.ready = ev;
  const canvas = $("screen");
  canvas.width = ev.video.width; canvas.height = ev.video.height;
  audioCtx = audioCtx || new AudioContext({ sampleRate: ev.audio.sample_rate, latencyHint: "interactive" });
  videoDecoder = new VideoDecoder({
    output: (frame) => { stats.decodedFrames++; frames.push(frame); },
    error: (e) => { error("video decoder: " + e.message); resetVideo(); },
  });
  videoDecoder.configure({ codec: ev.video.codec_string, optimizeForLatency: true });
  if (ev.audio.codec === "opus") {
    audioDecoder = new AudioDecoder({
      output: (data) => playAudio(data),
      error: (e) => error("audio decoder: " + e.message),
    });
    audioDecoder.configure({ codec: "opus", sampleRate: ev.audio.sample_rate, numberOfChannels: ev.audio.channels });
  }
  log(`ready: ${ev.video.width}x${ev.video.height} @ ${ev.video.fps} fps, ${ev.audio.codec}, voice ${ev.voice}`);
  const text = params.get("autosay");
  if (text) say(text);
}

function resetVideo() {
  // A broken decoder: start again from the next keyframe, and ask for one now.
  try { videoDecoder.reset(); videoDecoder.configure({ codec: ready.video.codec_string, optimizeForLatency: true }); }
  catch (e) { /* closed: the connection is going away */ }
  waitingForKey = true;
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "keyframe" }));
}

function onMedia(buf) {
  if (!ready) return;
  const view = new DataView(buf);
  const stream = view.getUint8(1), flags = view.getUint16(2), pts = Number(view.getBigInt64(4));
  const data = new Uint8Array(buf, HEADER);
  if (stream === ready.video.stream) {
    stats.videoPackets++;
    const key = (flags & 1) !== 0;
    if (key) stats.keyframes++;
    if (waitingForKey && !key) return;
    waitingForKey = false;
    const tb = ready.video.time_base;
    videoDecoder.decode(new EncodedVideoChunk({
      type: key ? "key" : "delta", timestamp: Math.round(pts * tb[0] / tb[1] * 1e6), data }));
  } else if (stream === ready.audio.stream) {
    stats.audioPackets++;
    const tb = ready.audio.time_base;
    if (audioDecoder) {
      audioDecoder.decode(new EncodedAudioChunk({ type: "key", timestamp: Math.round(pts * tb[0] / tb[1] * 1e6), data }));
    } else {
      const pcm = new Int16Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
      const f = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) f[i] = pcm[i] / 32768;
      schedule(f, pts * tb[0] / tb[1], ready.audio.sample_rate);
    }
  }
}

function playAudio(data) {
  const f = new Float32Array(data.numberOfFrames);
  data.copyTo(f, { planeIndex: 0, format: "f32-planar" });
  const t = data.timestamp / 1e6, rate = data.sampleRate;
  data.close();
  schedule(f, t, rate);
}

function schedule(samples, mediaTime, rate) {
  stats.decodedAudio++;
  stats.audioSeconds += samples.length / rate;
  if (offset === null || mediaTime + offset < clockNow()) anchor(mediaTime);
  if (!audioCtx || audioCtx.state !== "running") return;  // no sound allowed yet: picture only
  const buffer = audioCtx.createBuffer(1, samples.length, rate);
  buffer.copyToChannel(samples, 0);
  const src = audioCtx.createBufferSource();
  src.buffer = buffer;
  src.connect(audioCtx.destination);
  src.start(mediaTime + offset);
}

function draw() {
  const now = mediaNow();
  if (now !== null && frames.length) {
    // the latest frame whose time has come; older ones are skipped
    let pick = null;
    while (frames.length && frames[0].timestamp / 1e6 <= now) {
      if (pick) pick.close();
      pick = frames.shift();
    }
    if (pick) {
      $("screen").getContext("2d").drawImage(pick, 0, 0);
      pick.close();
      stats.drawnFrames++;
    }
    if (frames.length > 250) frames.splice(0, frames.length - 250).forEach((f) => f.close());
  }
  if (now !== null && words.length) {
    $("caption").innerHTML = words.map((w) =>
      `<span class="${w.start <= now && now < w.end ? "now" : ""}">${escapeHtml(w.text)}</span>`).join(" ");
  }
  requestAnimationFrame(draw);
}

function escapeHtml(s) { return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]); }

function say(text) {
  if (audioCtx && audioCtx.state !== "running") audioCtx.resume();  // a click allows sound
  if (ws && ws.readyState === WebSocket.OPEN && text.trim()) ws.send(JSON.stringify({ type: "say", text }));
}

$("say").addEventListener("submit", (e) => { e.preventDefault(); say($("text").value); });
$("interrupt").addEventListener("click", () => ws && ws.send(JSON.stringify({ type: "interrupt" })));
$("reconnect").addEventListener("click", () => {
  if (ws) ws.close();
  frames.forEach((f) => f.close()); frames = []; offset = null; ready = null; waitingForKey = true;
  connect();
});
for (const key of ["audio", "size"]) if (params.get(key)) $(key).value = params.get(key);
connect();
requestAnimationFrame(draw);
