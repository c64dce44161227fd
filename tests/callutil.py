"""An aiortc client for the call tests: it offers its microphone (a wav file played in real
time, or silence), receives the avatar, and records what arrives with arrival times."""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack


class TimedTrack(MediaStreamTrack):
    """Wraps the microphone track: remembers when each frame went to the sender."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.source = source
        self.sent: list[tuple[float, np.ndarray, int]] = []  # (send time, mono float, rate)

    async def recv(self) -> Any:
        frame = await self.source.recv()
        pcm = frame.to_ndarray().astype(np.float32) / 32768.0
        ch = len(frame.layout.channels)
        mono = pcm.reshape(-1, ch).mean(1) if not frame.format.is_planar else pcm.reshape(ch, -1).mean(0)
        self.sent.append((time.monotonic(), mono, frame.sample_rate))
        return frame


@dataclass
class Received:
    video: list[tuple[float, Any]] = field(default_factory=list)  # (arrival, av.VideoFrame)
    audio: list[tuple[float, np.ndarray, int]] = field(default_factory=list)  # (arrival, mono float, rate)
    events: list[dict[str, Any]] = field(default_factory=list)
    video_pts: list[int] = field(default_factory=list)  # RTP timestamps (90 kHz) of the frames
    audio_pts: list[int] = field(default_factory=list)  # RTP timestamps (48 kHz) of the frames
    # RTCP sender reports by kind: (RTP timestamp, sender's NTP time in s) — what a browser
    # lip-syncs with: both tracks mapped to the sender's clock.
    sr: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: {"audio": [], "video": []})
    rtp_origin: dict[str, int] = field(default_factory=dict)  # aiortc counts received pts from the first

    def sender_times(self, kind: str) -> np.ndarray:
        """The sender's clock time of each received frame of `kind`: its RTP timestamps mapped
        through a line fitted to all the track's sender reports (one SR: the nominal rate). A
        track whose RTP clock runs off its wall clock (Pipecat's video track stamps 1/30 s per
        frame, whatever rate it is fed at) is mapped as its reports say, not drifting away."""
        if not self.sr[kind]:
            raise AssertionError(f"no RTCP sender report received for {kind}")
        rate = 90000 if kind == "video" else 48000
        rtp0, ntp0 = self.sr[kind][0]

        def unwrap(ts: np.ndarray) -> np.ndarray:  # RTP timestamps wrap at 32 bits
            return (ts - rtp0 + 2**31) % 2**32 - 2**31

        sr_rtp = unwrap(np.array([r for r, _ in self.sr[kind]], dtype=np.int64)).astype(np.float64)
        sr_ntp = np.array([n for _, n in self.sr[kind]]) - ntp0
        pts = unwrap(np.array(self.video_pts if kind == "video" else self.audio_pts, dtype=np.int64)
                     + self.rtp_origin[kind]).astype(np.float64)
        if len(sr_rtp) < 2 or np.ptp(sr_rtp) < rate:  # under a second of reports: no fit
            return ntp0 + pts / rate
        slope, offset = np.polyfit(sr_rtp, sr_ntp, 1)
        return ntp0 + offset + slope * pts


class CallClient:
    def __init__(self, http: str, *, wav: str | None = None, mode: str = "agent", keep_video: bool = True,
                 rewrite_offer: Any = None, rewrite_answer: Any = None, camera: str | None = None) -> None:
        self.http, self.wav, self.mode, self.keep_video = http, wav, mode, keep_video
        self.camera = camera  # a video file (with its audio) sent as the caller's camera and microphone
        # SDP -> SDP, e.g. to route the media through a test relay (tests/udprelay.py)
        self.rewrite_offer, self.rewrite_answer = rewrite_offer, rewrite_answer
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.got = Received()
        self.location: str | None = None
        self.channel: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.player: MediaPlayer | None = None
        self.mic_started: float | None = None
        self.mic: TimedTrack | None = None

    async def start(self) -> int:
        if self.wav or self.camera:
            self.player = MediaPlayer(self.camera or self.wav)
            self.mic = TimedTrack(self.player.audio)
            self.pc.addTrack(self.mic)
        else:
            self.pc.addTransceiver("audio", direction="recvonly")
        if self.camera:
            assert self.player is not None and self.player.video is not None
            self.pc.addTrack(self.player.video)  # sendrecv: the avatar comes back on it
        else:
            self.pc.addTransceiver("video", direction="recvonly")
        self.channel = self.pc.createDataChannel("control")

        @self.channel.on("message")
        def _on_message(message: str) -> None:
            import json

            self.got.events.append(json.loads(message))

        @self.pc.on("track")
        def _on_track(track: Any) -> None:
            self._tasks.append(asyncio.ensure_future(self._read(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        if self.rewrite_offer is not None:
            offer = self.rewrite_offer(offer)
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{self.http}/v1/calls?mode={self.mode}", data=offer,
                              headers={"Content-Type": "application/sdp"}) as r:
                if r.status != 201:
                    return r.status
                self.location = r.headers["Location"]
                answer = await r.text()
        if self.rewrite_answer is not None:
            answer = self.rewrite_answer(answer)
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        for t in self.pc.getTransceivers():
            self._spy_sender_reports(t.receiver, t.kind)
        self.mic_started = time.monotonic()
        return 201

    def _spy_sender_reports(self, receiver: Any, kind: str) -> None:
        from aiortc.rtp import RtcpSrPacket

        handle = receiver._handle_rtcp_packet

        async def spy(packet: Any) -> None:
            # (an SR sent before the track's first packet says NTP 0, RTP 0: aiortc's initial
            # values, no mapping at all; Pipecat's video starts seconds after its audio)
            if isinstance(packet, RtcpSrPacket) and packet.sender_info.ntp_timestamp:
                ntp = packet.sender_info.ntp_timestamp
                self.got.sr[kind].append((packet.sender_info.rtp_timestamp, (ntp >> 32) + (ntp & 0xFFFFFFFF) / 2**32))
            await handle(packet)

        receiver._handle_rtcp_packet = spy

    async def _read(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    # keep the decoded frame; converting to RGB here would slow the receiver
                    self.got.video.append((now, frame if self.keep_video else None))
                    self.got.video_pts.append(frame.pts)
                else:
                    pcm = frame.to_ndarray().astype(np.float32) / 32768.0
                    ch = len(frame.layout.channels)
                    mono = pcm.reshape(-1, ch).mean(1) if not frame.format.is_planar else pcm.reshape(ch, -1).mean(0)
                    self.got.audio.append((now, mono, frame.sample_rate))
                    self.got.audio_pts.append(frame.pts)

    @property
    def call_url(self) -> str:
        """The call's URL: its `Location`, absolute when the server has a public_url."""
        assert self.location is not None
        return self.location if self.location.startswith("http") else f"{self.http}{self.location}"

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, s.post(f"{self.call_url}/{path}", json=body) as r:
            return r.status, await r.json()

    async def stats(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.call_url}") as r:
            return await r.json()

    async def close(self, delete: bool = True) -> int | None:
        status = None
        if delete and self.location:
            async with aiohttp.ClientSession() as s, s.delete(f"{self.call_url}") as r:
                status = r.status
        for tr in self.pc.getTransceivers():
            mapper = getattr(tr.receiver, "_RTCRtpReceiver__timestamp_mapper", None)
            if getattr(mapper, "_origin", None) is not None:
                self.got.rtp_origin[tr.kind] = mapper._origin  # type: ignore[union-attr]
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()
        if self.player is not None and self.player.audio is not None:
            self.player.audio.stop()
        return status


def envelope_at(times: list[float] | np.ndarray, audio: list[tuple[float, np.ndarray, int]],
                window: float = 0.04) -> np.ndarray:
    """Loudness (dB) of audio in the `window` before each time, by its wall-clock time: a frame
    stamped t covers [t - its duration, t)."""
    starts = np.array([t - len(x) / r for t, x, r in audio])
    ends = np.array([t for t, _, _ in audio])
    energy = np.array([float(np.mean(x.astype(np.float64) ** 2)) for _, x, _ in audio])
    out = np.empty(len(times))
    for i, t in enumerate(times):
        sel = (ends > t - window) & (starts < t)
        out[i] = 10 * np.log10(energy[sel].mean() + 1e-10) if sel.any() else -100.0
    return np.maximum(out - out.max(), -50.0)


def rgb(frame: Any) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


@dataclass
class ServerProcess:
    http: str
    proc: Any  # subprocess.Popen
    log: list[str]  # its output, line by line, as it comes


@contextlib.asynccontextmanager
async def server_process(*, _log: list[str] | None = None, **settings: Any) -> Any:
    """`avatar serve` in its own process (as in production: the caller is elsewhere), on a
    free port; yields its base URL. Settings go in as AVATAR_* variables; `_log` collects its
    output."""
    async with started_server(**settings) as server:
        try:
            yield server.http
        finally:
            if _log is not None:
                _log.extend(server.log)


@contextlib.asynccontextmanager
async def started_server(*, new_session: bool = False, hostile_signals: bool = False, **settings: Any) -> Any:
    """Like server_process, yielding a ServerProcess. `new_session`: in its own session and
    process group (setsid), as a service manager or container runtime starts it.
    `hostile_signals`: started with SIGINT ignored and SIGINT/SIGTERM blocked (inherited
    across exec, as from some supervisors and from shells that background a job)."""
    import json
    import os
    import subprocess
    import sys

    port = free_port()
    env = {**os.environ, **{f"AVATAR_{k.upper()}": json.dumps(v) if isinstance(v, list | dict) else str(v)
                            for k, v in settings.items()}}
    env.setdefault("MALLOC_ARENA_MAX", "2")  # as `make serve` runs it (docs/calls.md, "Memory")
    def hostile() -> None:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

    proc = subprocess.Popen([sys.executable, "-m", "avatar", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=new_session,
                            preexec_fn=hostile if hostile_signals else None)
    log: list[str] = []
    try:
        await read_until(proc, log, r"serving on", 90, "avatar serve")
        yield ServerProcess(f"http://127.0.0.1:{port}", proc, log)
    finally:
        await stop_process(proc)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def read_until(proc: Any, log: list[str], pattern: str, timeout_s: float, what: str) -> None:
    """Reads a child's output into `log` until a line matches `pattern`, then goes on reading
    it in a thread (a full pipe would block the child on its next log line)."""
    import re
    import threading

    assert proc.stdout is not None
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await asyncio.to_thread(proc.stdout.readline)).decode(errors="replace")
            log.append(line)
            if not line and proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}: {''.join(log)[-3000:]}")
            if re.search(pattern, line):
                break

    def pump() -> None:
        for raw in proc.stdout:
            log.append(raw.decode(errors="replace"))

    threading.Thread(target=pump, daemon=True).start()


async def stop_process(proc: Any) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    if proc.poll() is None:
        proc.terminate()
    try:
        await asyncio.wait_for(asyncio.to_thread(proc.wait), 15)
    except TimeoutError:
        proc.kill()
