"""Perception as an engine: every call's `Perceiver`, kept in one place, fed one frame at a time.

In the server it runs in a child process (engines.SubprocessEngine, web/resources.py): the
perceiver is Python-heavy (mediapipe's graph calls, the tracker, the synchrony per face) and,
in a thread of the server, it took turns with the event loop for the interpreter lock — one
call's avatar lost a quarter of its frames to it (BENCHMARKS.md, "Perception in a call"). In
its own process it takes no turn from the call's media.

An item is one call's newest camera frame with the audio heard since the last one:

    {"call": id, "rgb": HxWx3 uint8, "t": s, "audio": [(samples, rate), ...]}  -> {"records": [...], "cpu_s": s}
    {"call": id, "end": True}                                                 -> {"records": [], "cpu_s": 0}

`t` is the frame's time on the call's timeline; the perceiver puts the call's first audio
sample at its own time 0, and records come back on the call's timeline. Frames are perceived
at most MAX_SIDE px on their long side; boxes and masks come back in the caller's pixels.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.base import Engine

MAX_SIDE = 640


@dataclass
class _CallState:
    perceiver: Any
    audio_from: float | None = None  # the call's time of the first sample heard


class PerceptionEngine(Engine[dict[str, Any], dict[str, Any]]):
    name = "perception"

    def __init__(self, *, fps: float = 10.0, lookahead_s: float = 0.2, max_calls: int = 64) -> None:
        self.fps, self.lookahead_s, self.max_calls = float(fps), float(lookahead_s), int(max_calls)
        self._calls: dict[str, _CallState] = {}

    def load(self) -> None:
        # mediapipe imported and its graphs built now, not on a call's first frame (the import
        # alone takes over a second)
        from pipelines.perception.perceiver import Perceiver

        p = Perceiver(fps=self.fps)
        p.push_audio(np.zeros(1600, np.float32), 16000)
        p.push_frame(np.zeros((64, 64, 3), np.uint8), 0.0)

    def describe(self) -> dict[str, object]:
        return {"backend": "mediapipe", "fps": self.fps, "lookahead_s": self.lookahead_s}

    @property
    def calls(self) -> int:
        return len(self._calls)

    def run_batch(self, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self._one(item) for item in items]

    def _one(self, item: dict[str, Any]) -> dict[str, Any]:
        call = str(item["call"])
        if item.get("end"):
            self._calls.pop(call, None)
            return {"records": [], "cpu_s": 0.0}
        c0 = time.thread_time()
        state = self._calls.get(call)
        if state is None:
            if len(self._calls) >= self.max_calls:
                raise RuntimeError(f"perception serves at most {self.max_calls} calls at once")
            from pipelines.perception.perceiver import Perceiver

            state = self._calls[call] = _CallState(Perceiver(fps=self.fps, glance=False, lookahead_s=self.lookahead_s))
        p = state.perceiver
        t = float(item["t"])
        for samples, rate, t_first in item.get("audio") or ():
            if state.audio_from is None:
                state.audio_from = float(t_first)
            p.push_audio(np.asarray(samples, np.float32), int(rate))
        rgb = np.ascontiguousarray(np.asarray(item["rgb"], np.uint8))
        h, w = rgb.shape[:2]
        scale = min(1.0, MAX_SIDE / max(h, w))
        if scale < 1.0:
            from PIL import Image

            rgb = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale)))))
        origin = state.audio_from if state.audio_from is not None else t
        results = p.push_frame(rgb, max(0.0, t - origin))
        return {"records": records(results, rgb.shape[:2], (h, w), origin), "cpu_s": time.thread_time() - c0}

    def close(self) -> None:
        self._calls.clear()


def records(results: Sequence[Any], analysed: tuple[int, int], size: tuple[int, int], origin: float) -> list[dict[str, Any]]:
    """The perceiver's results as the events file's records (JSON-ready), on the call's timeline."""
    from pipelines.perception.records import records_of

    out: list[dict[str, Any]] = []
    for r in results:
        for rec in records_of(r, analysed_size=analysed, input_size=size):
            d = rec.model_dump(mode="json", exclude_none=True)
            d["t"] = round(float(d["t"]) + origin, 4)
            out.append(d)
    return out


def perception_engine(fps: float) -> PerceptionEngine:
    """The factory a child process builds the engine with (pickled: module-level)."""
    return PerceptionEngine(fps=fps)
