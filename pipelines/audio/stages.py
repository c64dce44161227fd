"""Stage wrappers of the audio front end:

    mic / file ─► Resample ─► DetectVoice ─► Features ─► (audio-to-motion)
                  any rate     16 kHz, +vad    FeatureFrame per 20 ms
                               events

`Resample` and `Features` are numpy/libswresample work of ~0.1 ms per 20 ms frame and run
on the loop; silero-vad is a torch model and runs on its own engine thread (`VadEngine`).
All three flush at end of stream, so nothing stays inside a filter or buffer.
"""
from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from engines import Engine, EngineWorker
from realtime import AudioFrame, Frame, MapStage, StageContext

from .events import VoiceActivity
from .features import FRAME_RATE, HOP, N_MELS, SAMPLE_RATE, StreamingLogMel
from .resample import StreamingResampler
from .vad import WINDOW, StreamingVad, VadResult

OUT_TB = Fraction(1, SAMPLE_RATE)
FEATURE_TB = Fraction(1, FRAME_RATE)
PROBABILITY_HISTORY = 60 * SAMPLE_RATE // WINDOW  # one minute of VAD windows


@dataclass(slots=True, kw_only=True)
class FeatureFrame(Frame):
    """Log-mel rows (n, 80) float32; pts counts 10 ms feature frames (time_base 1/100), so
    row i of frame f is feature frame f.pts + i, whose window starts at (pts + i) * 10 ms."""

    features: np.ndarray


def _timing(frame: Frame) -> dict[str, Any]:
    return {"entered": frame.entered, "deadline": frame.deadline, "epoch": frame.epoch}


class Resample(MapStage):
    """AudioFrame at any rate, mono or interleaved (n, channels), int or float → AudioFrame
    at 16 kHz mono float32. Output pts count output samples from the first frame's time,
    with no gaps: a hole in the input pts is closed up, not filled."""

    def __init__(self, name: str, *, budget_s: float = 0.005) -> None:
        super().__init__(name, budget_s=budget_s)
        self._rs: StreamingResampler | None = None
        self._next_pts: int | None = None
        self._last: Frame | None = None

    async def setup(self, ctx: StageContext) -> None:
        self._rs, self._next_pts, self._last = None, None, None

    async def process(self, frame: AudioFrame, ctx: StageContext) -> AsyncIterator[AudioFrame]:
        channels = 1 if frame.samples.ndim == 1 else frame.samples.shape[1]
        parts = []
        if self._rs is None or (self._rs.in_rate, self._rs.channels) != (frame.sample_rate, channels):
            if self._rs is not None:  # the source changed format: drain the old filter first
                parts.append(self._rs.flush())
            self._rs = StreamingResampler(frame.sample_rate, channels)
        if self._next_pts is None:
            self._next_pts = round(frame.time * SAMPLE_RATE)
        self._last = frame
        parts.append(self._rs.push(frame.samples))
        out = self._frame(np.concatenate(parts), frame)
        if out is not None:
            yield out

    async def run(self, ctx: StageContext) -> None:
        await super().run(ctx)
        if self._rs is not None and self._last is not None:
            tail = self._frame(self._rs.flush(), self._last)
            if tail is not None:
                await ctx.output().put(tail)

    def _frame(self, samples: np.ndarray, src: Frame) -> AudioFrame | None:
        if len(samples) == 0 or self._next_pts is None:
            return None
        out = AudioFrame(pts=self._next_pts, time_base=OUT_TB, samples=samples,
                         sample_rate=SAMPLE_RATE, **_timing(src))
        self._next_pts += len(samples)
        return out


class VadEngine(Engine[np.ndarray | None, VadResult]):
    """One StreamingVad behind the engine interface. The model carries the recurrent state
    of one stream, so each stream (session) gets its own engine. An item of None means end
    of stream: its result holds the closing events (`StreamingVad.flush`)."""

    name = "vad"

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.vad: StreamingVad | None = None

    def load(self) -> None:
        self.vad = StreamingVad(**self.params)

    def warmup(self) -> None:
        # TorchScript optimises on its first calls; do them now, then forget that audio.
        assert self.vad is not None
        self.vad.push(np.zeros(4 * WINDOW, np.float32))
        self.vad.reset()

    def run_batch(self, items: Sequence[np.ndarray | None]) -> list[VadResult]:
        if self.vad is None:
            raise RuntimeError("vad engine used before load()")
        out = []
        for x in items:
            if x is None:
                out.append(VadResult(self.vad.flush(), np.zeros(0, np.float32), self.vad.windows))
            else:
                out.append(self.vad.analyse(x))
        return out

    def close(self) -> None:
        self.vad = None


class DetectVoice(MapStage):
    """16 kHz AudioFrames pass through untouched; speech start/end become session events
    `vad` {"kind", "time" (s, media time of the stream), "probability"}.

    Frames are handed on before the VAD runs on them, so the audio path does not wait for
    the model; events are about the past anyway (see vad.py for their delays)."""

    def __init__(self, name: str, *, budget_s: float = 0.010, **vad_params: Any) -> None:
        super().__init__(name, budget_s=budget_s)
        self.vad_params = vad_params
        self.worker: EngineWorker[np.ndarray | None, VadResult] | None = None
        self._origin: float | None = None  # media time of the first sample
        # The last minute of per-window (32 ms) speech probabilities, for inspection.
        self.probabilities: deque[float] = deque(maxlen=PROBABILITY_HISTORY)

    async def setup(self, ctx: StageContext) -> None:
        self._origin = None
        self.probabilities.clear()
        self.worker = EngineWorker(VadEngine(**self.vad_params))
        try:
            await self.worker.start()
        except BaseException:
            await self.worker.close()  # teardown is not called for a stage whose setup failed
            raise

    async def process(self, frame: AudioFrame, ctx: StageContext) -> AsyncIterator[AudioFrame]:
        _require_16k(frame, self.name)
        if self._origin is None:
            self._origin = frame.time
        yield frame
        await self._analyse(frame.samples, ctx)

    async def run(self, ctx: StageContext) -> None:
        await super().run(ctx)
        await self._analyse(None, ctx)

    async def _analyse(self, samples: np.ndarray | None, ctx: StageContext) -> None:
        assert self.worker is not None
        [res] = await self.worker.run([samples])
        self.probabilities.extend(res.probabilities.tolist())
        for ev in res.events:
            ctx.report(VoiceActivity(change=ev.kind, time=(self._origin or 0.0) + ev.time_s,
                                     probability=ev.probability))

    async def teardown(self) -> None:
        if self.worker is not None:
            await self.worker.close()
            self.worker = None


class Features(MapStage):
    """16 kHz AudioFrames → FeatureFrames of `rows` log-mel frames each (2 = one per 20 ms).
    Feature pts count from the first audio frame's time; the last FeatureFrame of a stream
    may hold fewer rows."""

    def __init__(self, name: str, *, rows: int = 2, budget_s: float = 0.005) -> None:
        super().__init__(name, budget_s=budget_s)
        if rows < 1:
            raise ValueError("rows must be >= 1")
        self.rows = rows
        self._mel = StreamingLogMel()
        self._pending = np.zeros((0, N_MELS), np.float32)
        self._next_pts: int | None = None
        self._last: Frame | None = None

    async def setup(self, ctx: StageContext) -> None:
        self._mel.reset()
        self._pending = np.zeros((0, N_MELS), np.float32)
        self._next_pts, self._last = None, None

    async def process(self, frame: AudioFrame, ctx: StageContext) -> AsyncIterator[FeatureFrame]:
        _require_16k(frame, self.name)
        if self._next_pts is None:
            self._next_pts = round(frame.pts * frame.time_base * SAMPLE_RATE / HOP)
        self._last = frame
        self._pending = np.concatenate([self._pending, self._mel.push(frame.samples)])
        while len(self._pending) >= self.rows:
            yield self._take(self.rows, frame)

    async def run(self, ctx: StageContext) -> None:
        await super().run(ctx)
        if len(self._pending) and self._last is not None:
            await ctx.output().put(self._take(len(self._pending), self._last))

    def _take(self, n: int, src: Frame) -> FeatureFrame:
        assert self._next_pts is not None
        rows, self._pending = self._pending[:n], self._pending[n:]
        out = FeatureFrame(pts=self._next_pts, time_base=FEATURE_TB, features=rows, **_timing(src))
        self._next_pts += n
        return out


def _require_16k(frame: AudioFrame, stage: str) -> None:
    if frame.sample_rate != SAMPLE_RATE or frame.samples.ndim != 1:
        raise ValueError(f"stage {stage!r} takes 16 kHz mono audio, got {frame.sample_rate} Hz "
                         f"shape {frame.samples.shape}: put a Resample stage before it")
