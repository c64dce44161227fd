"""A WebRTC caller of this server's /v1/calls (aiortc): what `avatar loadtest` runs N of.

It offers audio (a WAV played in a loop as its microphone, or receive-only) and receive-only
video, posts the offer (WHIP-shaped, docs/calls.md), and records what a person in the call
would see: when the answer came, when the first frame was decoded, every frame's arrival
time and RTP timestamp (for frame rate, interval jitter and frames lost), and the audio
received.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiortc.mediastreams import MediaStreamTrack


class ForwardTimestamps(MediaStreamTrack):
    """A looped file's track whose timestamps keep going forward.

    aiortc's MediaPlayer(loop=True) starts each pass at pts 0 again; sent as it is, the server
    received the first pass only (a 6.5 s camera clip: 162 frames, then none; the same for a
    looped microphone), since RTP timestamps that jump back read as stale packets. Each pass is
    shifted to start one frame after the last one ended."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self._offset = 0
        self._last = -1
        self._step = 0

    async def recv(self) -> Any:
        frame = await self._source.recv()
        if frame.pts is None:
            return frame
        pts = frame.pts + self._offset
        if pts <= self._last:  # a new pass of the loop
            self._offset += self._last + self._step - pts
            pts = self._last + self._step
        self._step = max(1, pts - self._last) if self._last >= 0 else self._step
        self._last = pts
        frame.pts = pts
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


@dataclass
class CallerFigures:
    """What one caller saw, in seconds and counts."""

    status: int | None = None  # the POST's HTTP status (201 when answered)
    error: str = ""
    answer_s: float | None = None  # POST -> answer
    first_frame_s: float | None = None  # answer -> first decoded video frame
    frames: int = 0
    fps: float = 0.0  # frames over the span between the first and the last
    interval_p50_ms: float | None = None
    interval_p99_ms: float | None = None
    jitter_ms: float | None = None  # standard deviation of frame intervals
    lost_frames: int = 0  # RTP timestamps skipped over (at the negotiated frame rate)
    audio_s: float = 0.0  # seconds of audio received
    events: dict[str, int] = field(default_factory=dict)  # data channel events by kind


def count_video_without_decoding() -> None:
    """Callers standing in for remote browsers: decoding N 512² streams on the server's own
    machine would take the CPU being measured. Each video frame aiortc's jitter buffer
    assembles still yields one tiny frame with its RTP timestamp, so frames are counted and
    timed as received. Process-wide (aiortc looks the decoder up in a module)."""
    import aiortc.rtcrtpreceiver as receiver
    import av

    real = receiver.get_decoder
    if getattr(real, "counting", False):
        return

    class Counting:
        def decode(self, encoded: Any) -> list[av.VideoFrame]:
            f = av.VideoFrame(16, 16, "yuv420p")
            f.pts = encoded.timestamp
            return [f]

    def get_decoder(codec: Any) -> Any:
        return Counting() if codec.mimeType.lower().startswith("video/") else real(codec)

    get_decoder.counting = True  # type: ignore[attr-defined]
    receiver.get_decoder = get_decoder


class Caller:
    def __init__(self, base_url: str, *, wav: str | None, mode: str = "mirror", token: str | None = None,
                 fps: int = 25, camera: str | None = None) -> None:
        self.base_url, self.wav, self.mode, self.token, self.fps = base_url.rstrip("/"), wav, mode, token, fps
        self.camera = camera  # a video file sent (looped) as the caller's camera, its sound as the microphone
        self.location: str | None = None
        self.arrivals: list[float] = []  # monotonic time of each decoded video frame
        self.pts: list[int] = []
        self.audio_samples = 0
        self.audio_rate = 48000
        self.events: dict[str, int] = {}
        self.figures = CallerFigures()
        self._pc: Any = None
        self._player: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._answered: float | None = None

    def _headers(self, **extra: str) -> dict[str, str]:
        return {**extra, **({"Authorization": f"Bearer {self.token}"} if self.token else {})}

    @property
    def call_url(self) -> str:
        assert self.location is not None
        return self.location if self.location.startswith("http") else f"{self.base_url}{self.location}"

    async def start(self) -> bool:
        """Offer, post, answer. False (with figures.status / error set) when refused."""
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
        from aiortc.contrib.media import MediaPlayer

        self._pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if self.wav or self.camera:
            self._player = MediaPlayer(self.camera or self.wav, loop=True)
            pc.addTrack(ForwardTimestamps(self._player.audio))
        else:
            pc.addTransceiver("audio", direction="recvonly")
        if self.camera:
            pc.addTrack(ForwardTimestamps(self._player.video))
        else:
            pc.addTransceiver("video", direction="recvonly")
        channel = pc.createDataChannel("control")

        @channel.on("message")
        def _on_message(message: str) -> None:
            with contextlib.suppress(ValueError, AttributeError):
                kind = str(json.loads(message).get("kind", "?"))
                self.events[kind] = self.events.get(kind, 0) + 1

        @pc.on("track")
        def _on_track(track: Any) -> None:
            self._tasks.append(asyncio.ensure_future(self._read(track)))

        await pc.setLocalDescription(await pc.createOffer())
        t0 = time.monotonic()
        try:
            async with aiohttp.ClientSession() as s, s.post(
                    f"{self.base_url}/v1/calls", params={"mode": self.mode}, data=pc.localDescription.sdp,
                    headers=self._headers(**{"Content-Type": "application/sdp"})) as r:
                self.figures.status = r.status
                body = await r.text()
                if r.status != 201:
                    self.figures.error = body[:200]
                    return False
                self.location = r.headers["Location"]
        except aiohttp.ClientError as exc:
            self.figures.error = f"{type(exc).__name__}: {exc}"
            return False
        self._answered = time.monotonic()
        self.figures.answer_s = self._answered - t0
        await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        return True

    async def _read(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.arrivals.append(time.monotonic())
                    self.pts.append(int(frame.pts))
                else:
                    self.audio_samples += frame.samples
                    self.audio_rate = frame.sample_rate

    async def say(self, text: str) -> int:
        async with aiohttp.ClientSession() as s, s.post(f"{self.call_url}/say", json={"text": text},
                                                        headers=self._headers()) as r:
            return r.status

    async def close(self) -> None:
        if self.location:
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as s, s.delete(self.call_url, headers=self._headers()):
                    pass
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pc is not None:
            await self._pc.close()
        if self._player is not None:
            for track in (self._player.audio, self._player.video):
                if track is not None:
                    track.stop()
        self.summarize()

    def fps_now(self, window_s: float = 2.0) -> float:
        """Frames decoded over the last `window_s` (the live progress line)."""
        now = time.monotonic()
        return sum(1 for t in self.arrivals[-4 * self.fps * int(window_s + 1):] if now - t <= window_s) / window_s

    def summarize(self) -> CallerFigures:
        f = self.figures
        f.frames, f.events = len(self.arrivals), dict(self.events)
        f.audio_s = self.audio_samples / self.audio_rate if self.audio_rate else 0.0
        if self.arrivals and self._answered is not None:
            f.first_frame_s = self.arrivals[0] - self._answered
        if len(self.arrivals) >= 2:
            t = np.asarray(self.arrivals)
            f.fps = (len(t) - 1) / max(t[-1] - t[0], 1e-9)
            iv = np.diff(t) * 1000
            f.interval_p50_ms, f.interval_p99_ms = float(np.percentile(iv, 50)), float(np.percentile(iv, 99))
            f.jitter_ms = float(iv.std())
            step = 90000 / self.fps  # RTP video clock
            pts = np.unwrap(np.asarray(self.pts, np.float64), period=2**32)
            expected = int(round((pts.max() - pts.min()) / step)) + 1
            f.lost_frames = max(0, expected - len(set(self.pts)))
        return f
