"""The audio-driven motion stage: 16 kHz audio in, motion frames at the video rate out."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engines import Engine, EngineWorker
from realtime import AudioFrame, Stage, StageContext

from .audio_model import AudioToMotion, StreamingAudioToMotion, load_audio_model
from .params import MOUTH, N_PARAMS, MotionFrame, video_time_base
from .streaming_onnx import OnnxStep

Item = tuple[StreamingAudioToMotion, np.ndarray]


class AudioMotionEngine(Engine[Item, tuple[np.ndarray, np.ndarray]]):
    """The model behind the engine interface. Per-session streaming state (log-mel tail,
    attention caches) travels with each item; the engine owns the weights and the thread.

    backend "onnx" (the default) runs each stream's step in onnxruntime, "torch" in eager
    PyTorch: same outputs (to ~1e-5), the first ~3x cheaper per chunk (streaming_onnx.py)."""

    name = "audio2motion"

    def __init__(self, weights_dir: str | None = None, backend: str = "onnx") -> None:
        if backend not in ("onnx", "torch"):
            raise ValueError(f"audio2motion backend must be 'onnx' or 'torch', not {backend!r}")
        self.weights_dir, self.backend = weights_dir, backend
        self.model: AudioToMotion | None = None
        self.step: OnnxStep | None = None
        self.manifest: dict[str, Any] = {}

    def load(self) -> None:
        self.model, self.manifest = load_audio_model(self.weights_dir)
        if self.backend == "onnx":
            self.step = OnnxStep.build(self.model)

    def warmup(self) -> None:
        s = self.stream(80)
        s.push(np.zeros(16000, np.float32))

    def stream(self, lookahead_ms: int) -> StreamingAudioToMotion:
        if self.model is None:
            raise RuntimeError("audio2motion engine used before load()")
        return StreamingAudioToMotion(self.model, lookahead_ms, self.step)

    def run_batch(self, items: Sequence[Item]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [state.push(samples) for state, samples in items]


class AudioToMouth(Stage):
    """Streams audio through the model and resamples its 50 Hz output to video frames.

    Video frame j shows the instant (j + 0.5) / fps (the middle of its display interval); it
    is emitted as soon as the model has described a later instant, interpolating between
    the two outputs around it. At the end of the audio, silence is pushed to flush the
    look-ahead, and exactly `n_frames` frames have been emitted.
    """

    inputs = ("in",)
    outputs = ("out",)

    def __init__(self, name: str, worker: EngineWorker[Any, Any], *, fps: int, lookahead_ms: int = 80,
                 n_frames: int | None = None, budget_s: float = 0.020) -> None:
        super().__init__(name, budget_s=budget_s)
        self.worker, self.fps, self.lookahead_ms, self.n_frames = worker, fps, lookahead_ms, n_frames
        self._t = np.zeros(0)
        self._p = np.zeros((0, 5), np.float32)
        self._next = 0

    async def _emit_ready(self, ctx: StageContext, until_frame: int | None = None) -> None:
        tb = video_time_base(self.fps)
        while len(self._t) and (until_frame is None or self._next < until_frame):
            t = (self._next + 0.5) / self.fps
            if t > self._t[-1] and until_frame is None:
                return
            mouth = np.array([np.interp(t, self._t, self._p[:, i]) for i in range(5)], np.float32)
            params = np.zeros(N_PARAMS, np.float32)
            params[MOUTH] = mouth
            await ctx.output().put(MotionFrame(pts=self._next, time_base=tb, params=params,
                                               **ctx.stamp(self._next / self.fps)))
            self._next += 1
        keep = max(len(self._t) - 8, 0)  # only the recent outputs are needed to interpolate
        self._t, self._p = self._t[keep:], self._p[keep:]

    async def run(self, ctx: StageContext) -> None:
        engine: AudioMotionEngine = self.worker.engine  # type: ignore[assignment]
        state = engine.stream(self.lookahead_ms)
        meter = ctx.meter(self)
        async for frame in ctx.input():
            if not isinstance(frame, AudioFrame):
                continue
            meter.frames_in()
            t0 = ctx.clock.now()
            [(times, params)] = await self.worker.run([(state, frame.samples)])
            meter.work(ctx.clock.now() - t0)
            self._t, self._p = np.concatenate([self._t, times]), np.concatenate([self._p, params])
            await self._emit_ready(ctx)
        # end of audio: flush the look-ahead with silence, then finish the frame count
        [(times, params)] = await self.worker.run([(state, np.zeros(int(16000 * (self.lookahead_ms / 1000 + 0.1)),
                                                                     np.float32))])
        self._t, self._p = np.concatenate([self._t, times]), np.concatenate([self._p, params])
        await self._emit_ready(ctx, until_frame=self.n_frames)
