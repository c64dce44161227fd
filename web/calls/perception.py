"""Perception of the caller's camera and microphone during a call (docs/perception.md, "In calls").

The caller's video is read as fast as it arrives and only the newest frame is kept; the
perception engine (pipelines/perception/engine.py: in a child process of its own, shared by
every call) perceives one frame at a time, at most `max_fps` frames a second, so a slow
perceiver skips frames and never holds up the avatar: it shares nothing with the call's graph
but the caller's audio, copied to it as the microphone reads it. Each result goes to the
call's data channel as the events file's records (`{"type": "faces", ...}`, events), and to
the server-wide feed (`GET /v1/perception`, a websocket an operator's dashboard subscribes to).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from engines.base import EngineWorker

log = logging.getLogger(__name__)


class CallPerception:
    def __init__(self, call_id: str, *, max_fps: float, publish: Callable[[dict[str, Any]], None],
                 origin: Callable[[], float | None],
                 engine: Callable[[], Awaitable[EngineWorker[Any, Any]]]) -> None:
        self.call_id, self.max_fps, self.publish, self._origin = call_id, max_fps, publish, origin
        self._engine = engine
        self._audio: list[tuple[np.ndarray, int, float]] = []
        self._latest: tuple[Any, float] | None = None
        self._new = asyncio.Event()
        self.frames_in = 0
        self.frames_perceived = 0
        self.cpu_s = 0.0  # CPU time the engine spent perceiving this call (BENCHMARKS: CPU per call)
        self.error: str | None = None

    # the microphone's copy (MicSource tap): session time of the chunk's first sample
    def audio(self, samples: np.ndarray, rate: int, t: float) -> None:
        self._audio.append((np.asarray(samples, np.float32), rate, t))

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
        worker: EngineWorker[Any, Any] | None = None
        try:
            worker = await self._engine()
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
                # decoded to RGB here (libav, off the interpreter lock); sent as one array
                rgb = await asyncio.to_thread(frame.to_ndarray, format="rgb24")
                out = (await worker.run([{"call": self.call_id, "rgb": rgb, "t": t, "audio": audio}]))[0]
                self.frames_perceived += 1
                self.cpu_s += float(out["cpu_s"])
                for r in out["records"]:
                    self.publish(r)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - perception failing must not end the call
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("call %s: perception stopped: %s", self.call_id, self.error)
            self.publish({"type": "error", "code": "perception_failed", "message": self.error[:200]})
        finally:
            if worker is not None:  # the engine forgets this call (its perceiver, its audio)
                with contextlib.suppress(Exception):
                    await asyncio.shield(worker.run([{"call": self.call_id, "end": True}]))
