// The call page: WHIP-style signaling (one POST with the whole offer, ICE gathered first),
// the avatar's audio and video in one MediaStream (so the browser lip-syncs them), control
// over a data channel, live stats from getStats() and the server's call resource.
"use strict";
const $ = (id) => document.getElementById(id);
let pc = null, control = null, callUrl = null, statsTimer = null, lastFrames = null;
window.callStats = { framesDecoded: 0, audioBytes: 0, fps: 0, state: "idle" };  // read by tests

function log(line) {
  const el = $("log");
  el.textContent += `${new Date().toLocaleTimeString()} ${line}\n`;
  el.scrollTop = el.scrollHeight;
}

function setState(s) { $("state").textContent = s; window.callStats.state = s; }

function setInCall(on) {
  $("start").disabled = on; $("end").disabled = !on;
  for (const id of ["say-text", "say-button", "interrupt"]) $(id).disabled = !on;
}

async function localMedia(camera) {
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true, video: camera });
  } catch (e) {
    log(`no ${camera ? "camera/" : ""}microphone (${e.name}); joining to watch and listen`);
    return null;
  }
}

function waitIce(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); } };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000);  // send what we have
  });
}

// The server's STUN/TURN servers (setting ice_servers): a relay for callers behind NAT.
async function iceServers() {
  try {
    const res = await fetch("/v1/ice-servers");
    if (res.ok) return (await res.json()).iceServers || [];
  } catch (_) {}
  return [];
}

async function start() {
  setInCall(true); setState("starting");
  pc = new RTCPeerConnection({ iceServers: await iceServers() });
  const local = await localMedia($("use-camera").checked);
  const kinds = new Set();
  if (local) {
    $("self").srcObject = local;
    for (const t of local.getTracks()) { pc.addTransceiver(t, { direction: "sendrecv", streams: [local] }); kinds.add(t.kind); }
  }
  for (const k of ["audio", "video"]) if (!kinds.has(k)) pc.addTransceiver(k, { direction: "recvonly" });
  control = pc.createDataChannel("control");
  control.onmessage = (e) => onEvent(JSON.parse(e.data));
  control.onopen = () => log("control channel open");
  pc.ontrack = (e) => { if (e.streams[0] && $("avatar").srcObject !== e.streams[0]) $("avatar").srcObject = e.streams[0]; };
  pc.onconnectionstatechange = () => { setState(pc.connectionState); if (["failed", "closed"].includes(pc.connectionState)) end(false); };
  await pc.setLocalDescription(await pc.createOffer());
  await waitIce(pc);
  const mode = $("mirror").checked ? "mirror" : "agent";
  const res = await fetch(`/v1/calls?mode=${mode}`, { method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp });
  if (res.status !== 201) {
    let msg = `${res.status}`;
    try { msg += ` ${(await res.json()).message}`; } catch (_) {}
    log(`call refused: ${msg}`); end(false); return;
  }
  callUrl = res.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  log(`call ${callUrl} (${mode})`);
  statsTimer = setInterval(updateStats, 1000);
}

async function end(sendDelete = true) {
  if (statsTimer) clearInterval(statsTimer);
  statsTimer = null;
  if (sendDelete && callUrl) { try { await fetch(callUrl, { method: "DELETE" }); } catch (_) {} }
  callUrl = null;
  if (pc) { pc.getSenders().forEach((s) => s.track && s.track.stop()); pc.close(); pc = null; }
  setInCall(false); setState("ended");
}

function send(msg) {
  if (control && control.readyState === "open") control.send(JSON.stringify(msg));
  else if (callUrl) fetch(`${callUrl}/${msg.type}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(msg) });
}

function onEvent(ev) {
  if (ev.type === "error") { log(`error: ${ev.message}`); return; }
  if (ev.kind === "word") return;  // captions would go here; the log stays readable
  log(`${ev.kind}${ev.vad ? " " + ev.vad : ""}${ev.text ? ": " + ev.text : ""}${ev.reason ? ": " + ev.reason : ""}`);
}

async function updateStats() {
  if (!pc) return;
  const stats = await pc.getStats();
  let rtt = null;
  stats.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") {
      const now = performance.now();
      if (lastFrames) window.callStats.fps = (r.framesDecoded - lastFrames.n) / ((now - lastFrames.t) / 1000);
      lastFrames = { n: r.framesDecoded, t: now };
      window.callStats.framesDecoded = r.framesDecoded;
      $("s-frames").textContent = r.framesDecoded;
      $("s-fps").textContent = window.callStats.fps.toFixed(1);
      if (r.frameWidth) $("s-size").textContent = `${r.frameWidth}×${r.frameHeight}`;
    }
    if (r.type === "inbound-rtp" && r.kind === "audio") {
      window.callStats.audioBytes = r.bytesReceived;
      $("s-audio").textContent = `${(r.bytesReceived / 1024).toFixed(0)} KiB`;
    }
    if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime !== undefined) rtt = r.currentRoundTripTime;
  });
  if (rtt !== null) $("s-rtt").textContent = `${(rtt * 1000).toFixed(0)} ms`;
  if (callUrl) {
    try {
      const s = await (await fetch(callUrl)).json();
      $("s-av").textContent = `${s.av_offset_ms} ms`;
      if (s.latency_p50_ms !== undefined && s.latency_p50_ms !== null) $("s-lat").textContent = `${s.latency_p50_ms} / ${s.latency_p99_ms} ms`;
    } catch (_) {}
  }
}

$("start").onclick = () => start().catch((e) => { log(`failed: ${e}`); end(false); });
$("end").onclick = () => end();
$("mirror").onchange = () => send({ type: "mode", mode: $("mirror").checked ? "mirror" : "agent" });
$("say").onsubmit = (e) => { e.preventDefault(); const text = $("say-text").value.trim(); if (text) { send({ type: "say", text }); $("say-text").value = ""; } };
$("interrupt").onclick = () => send({ type: "interrupt" });
window.addEventListener("beforeunload", () => { if (callUrl) navigator.sendBeacon && fetch(callUrl, { method: "DELETE", keepalive: true }); });
