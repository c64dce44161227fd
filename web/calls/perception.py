"""Perception of the caller's camera and microphone during a call (docs/perception.md, "In calls").

The caller's video is read as fast as it arrives and only the newest frame is kept; a worker
thread perceives one frame at a time (glance mode, at most `max_fps` frames a second), so a
slow perceiver skips frames and never holds up the avatar: it shares nothing with the call's
graph but the caller's audio, copied to it as the microphone reads it. Each result goes to the
call's data channel as the events file's records (`{"type": "faces", ...}`, events), and to
the server-wide feed (`GET /v1/perception`, a websocket an operator's dashboard subscribes to).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from engines.worker import ThreadWorker

log = logging.getLogger(__name__)
MAX_SIDE = 640  # frames are perceived at most this large (boxes come back in the caller's pixels)


def warm_perception() -> None:
    """Imports mediapipe and builds its graphs once, at server start (call_perception on):
    done during a call, the import alone holds the interpreter for over a second and the
    call's frames wait behind it. Blocking: run it off the event loop."""
    from pipelines.perception.perceiver import Perceiver

    p = Perceiver(fps=10.0)
    p.push_audio(np.zeros(1600, np.float32), 16000)
    p.push_frame(np.zeros((64, 64, 3), np.uint8), 0.0)


class CallPerception:
    def __init__(self, call_id: str, *, max_fps: float, publish: Callable[[dict[str, Any]], None],
                 origin: Callable[[], float | None]) -> None:
        self.call_id, self.max_fps, self.publish, self._origin = call_id, max_fps, publish, origin
        self.worker = ThreadWorker(f"perceive-{call_id}")
        self._perceiver: Any = None
        self._audio: list[tuple[np.ndarray, int]] = []
        self._audio_from: float | None = None  # session time of the first sample given
        self._latest: tuple[Any, float] | None = None
        self._new = asyncio.Event()
        self.frames_in = 0
        self.frames_perceived = 0
        self.cpu_s = 0.0  # thread CPU time spent perceiving (BENCHMARKS: CPU per call)
        self.error: str | None = None

    # the microphone's copy (MicSource tap): session time of the chunk's first sample
    def audio(self, samples: np.ndarray, rate: int, t: float) -> None:
        if self._audio_from is None:
            self._audio_from = t
        self._audio.append((np.asarray(samples, np.float32), rate))

    async def read(self, track: MediaStreamTrack) -> None:
        """Reads the caller's video; keeps the newest frame."""
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                origin = self._origin()
                if origin is None:
                    continue
                self.frames_in += 1
                self._latest = (frame, time.monotonic() - origin)
                self._new.set()

    async def run(self) -> None:
        self.worker.start()
        try:
            period = 1.0 / self.max_fps
            next_at = 0.0
            while True:
                await self._new.wait()
                self._new.clear()
                now = time.monotonic()
                if now < next_at:
                    await asyncio.sleep(next_at - now)
                next_at = max(now, next_at) + period
                if self._latest is None:
                    continue
                frame, t = self._latest
                self._latest = None
                audio, self._audio = self._audio, []
                try:
                    records = await self.worker.call(self._perceive, frame, t, audio)
                except Exception as exc:  # noqa: BLE001 - perception failing must not end the call
                    self.error = f"{type(exc).__name__}: {exc}"
                    log.warning("call %s: perception stopped: %s", self.call_id, self.error)
                    self.publish({"type": "error", "code": "perception_failed", "message": self.error[:200]})
                    return
                for r in records:
                    self.publish(r)
        finally:
            await self.worker.close()

    def _perceive(self, frame: Any, t: float, audio: list[tuple[np.ndarray, int]]) -> list[dict[str, Any]]:
        from pipelines.perception.perceiver import Perceiver
        from pipelines.perception.records import records_of

        c0 = time.thread_time()
        if self._perceiver is None:
            # the perceiver reads audio from media time 0 = its first sample: frames are put on
            # the same timeline
            self._perceiver = Perceiver(fps=self.max_fps, glance=False, lookahead_s=0.2)
        p = self._perceiver
        for samples, rate in audio:
            p.push_audio(samples, rate)
        rgb = frame.to_ndarray(format="rgb24")
        h, w = rgb.shape[:2]
        scale = min(1.0, MAX_SIDE / max(h, w))
        if scale < 1.0:
            from PIL import Image
            rgb = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale)))))
        t_audio = t - (self._audio_from if self._audio_from is not None else t)
        results = p.push_frame(rgb, max(0.0, t_audio))
        self.frames_perceived += 1
        out: list[dict[str, Any]] = []
        for r in results:
            for rec in records_of(r, analysed_size=rgb.shape[:2], input_size=(h, w)):
                d = rec.model_dump(mode="json", exclude_none=True)
                d["t"] = round(float(d["t"]) + (self._audio_from or 0.0), 4)  # back on the call's timeline
                out.append(d)
        self.cpu_s += time.thread_time() - c0
        return out
