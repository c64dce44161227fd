"""Mirror mode: the caller's voice drives the avatar's lips (dubbing, puppeteering).

    mic ─► resample ─► vad ─► MirrorMouth ──MirrorData──► CallArticulate.mirror

`MirrorMouth` streams 16 kHz audio through the audio-to-motion model. Its input pts are on the
session timeline (the mic source stamps them so), so each output says which session instant
it describes. `CallArticulate` is the live articulator (the session's clock master) with one
more input: when it has no sentence of its own to speak and mirroring is on, frame k shows the
mouth the model found for the instant `k / fps - delay` and carries the caller's audio of that
instant, so the avatar's lips and its (the caller's) voice stay in sync, `delay` behind the
caller. The delay covers the model's look-ahead, its framing and a margin for jitter.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines import EngineWorker
from realtime import AudioFrame, Stage, StageContext

from .audio_model import StreamingAudioToMotion
from .live import LiveArticulate, _Speaking
from .params import MOUTH, N_PARAMS, MotionFrame

MIC_RATE = 16000


@dataclass(frozen=True, slots=True)
class MirrorData:
    """Caller audio (16 kHz, starting at session time `audio_t0`) and the model's mouth
    parameters for session instants `times`."""

    audio_t0: float
    audio: np.ndarray
    times: np.ndarray
    mouth: np.ndarray  # (len(times), 5)
    epoch: int = 0


class MirrorMouth(Stage):
    def __init__(self, name: str, worker: EngineWorker[Any, Any], *, lookahead_ms: int = 40,
                 budget_s: float = 0.010) -> None:
        super().__init__(name, budget_s=budget_s)
        self.worker, self.lookahead_ms = worker, lookahead_ms
        # Only while mirroring: in agent mode the model's ~10 % of a core per call is wasted.
        self.active = True

    async def run(self, ctx: StageContext) -> None:
        engine = self.worker.engine
        state: StreamingAudioToMotion | None = None
        meter = ctx.meter(self)
        pushed = 0  # samples the model has seen
        async for frame in ctx.input():
            if not isinstance(frame, AudioFrame):
                continue
            if not self.active:
                state = None  # resumed later from a fresh stream: no stale context
                continue
            if state is None:
                state = engine.stream(self.lookahead_ms)  # type: ignore[attr-defined]
                pushed = 0
            # Model time counts samples; the session time of model time 0 follows the latest
            # frame, so a correction of the caller's timeline (mic source) carries through.
            t_origin = frame.time - pushed / MIC_RATE
            pushed += len(frame.samples)
            meter.frames_in()
            t0 = ctx.clock.now()
            [(times, mouth)] = await self.worker.run([(state, frame.samples)])
            meter.work(ctx.clock.now() - t0)
            await ctx.output().put(MirrorData(frame.time, frame.samples, times + t_origin, mouth))
            meter.frames_out()


class MirrorBuffer:
    """The last few seconds of caller audio and mouth, looked up by session time."""

    def __init__(self, seconds: float = 3.0) -> None:
        self.seconds = seconds
        self._chunks: deque[tuple[float, np.ndarray]] = deque()
        self._t: deque[float] = deque()
        self._m: deque[np.ndarray] = deque()

    def add(self, d: MirrorData) -> None:
        self._chunks.append((d.audio_t0, d.audio))
        self._t.extend(d.times.tolist())
        self._m.extend(list(d.mouth))
        horizon = (self._chunks[-1][0] if self._chunks else 0.0) - self.seconds
        while self._chunks and self._chunks[0][0] < horizon:
            self._chunks.popleft()
        while self._t and self._t[0] < horizon:
            self._t.popleft()
            self._m.popleft()

    def mouth_at(self, t: float) -> np.ndarray | None:
        if not self._t or t > self._t[-1] + 0.1 or t < self._t[0]:
            return None  # nothing heard for that instant (yet, or any more): rest
        ts = np.fromiter(self._t, float)
        ms = np.stack(list(self._m))
        return np.array([np.interp(t, ts, ms[:, i]) for i in range(ms.shape[1])], np.float32)

    def ahead(self, t: float) -> bool:
        """Whether `t` lies past the latest instant the model has described."""
        return bool(self._t) and t > self._t[-1]

    def audio(self, t0: float, n: int, rate: int) -> np.ndarray:
        """n samples at `rate` from session time t0 (silence where nothing was heard)."""
        out = np.zeros(n, np.float32)
        if not self._chunks:
            return out
        times = t0 + np.arange(n) / rate
        for c_t0, c in self._chunks:
            c_t1 = c_t0 + len(c) / MIC_RATE
            sel = (times >= c_t0) & (times < c_t1)
            if sel.any():
                out[sel] = np.interp(times[sel], c_t0 + np.arange(len(c)) / MIC_RATE, c)
        return out


class CallArticulate(LiveArticulate):
    """LiveArticulate with a `mirror` input: in mirror mode, idle frames carry the caller."""

    inputs = ("in", "mirror")

    def __init__(self, name: str, *, fps: int, sample_rate: int, lookahead_frames: int = 2,
                 mirror_delay_s: float = 0.08, mirror_hold_s: float = 0.0, budget_s: float = 0.010) -> None:
        super().__init__(name, fps=fps, sample_rate=sample_rate, lookahead_frames=lookahead_frames,
                         budget_s=budget_s)
        self.mirror = False
        self.mirror_delay_s = mirror_delay_s
        # Mirroring, a frame is emitted this long after its media time (what the renderer does
        # not need of the playout budget): the caller's latest audio reaches the lips.
        self.mirror_hold_s = mirror_hold_s
        self.buffer = MirrorBuffer()
        self.mirrored_frames = 0
        # Mirrored frames showing a mouth from before their own display interval: the model had
        # not reached the interval's start in time (held mouth). A mouth from inside the 1/fps
        # interval (aiortc's chunk bursts leave it 10-20 ms short of the middle now and then)
        # is that frame's mouth and is not counted.
        self.stale_frames = 0

    def _lead_s(self) -> float:
        return -self.mirror_hold_s if self.mirror else self.lookahead_s

    async def _emit_frame(self, ctx: StageContext, cur: _Speaking | None) -> None:
        mirror_in = ctx.input("mirror")
        while (item := mirror_in.try_get()) is not None:
            if isinstance(item, MirrorData):
                self.buffer.add(item)
        if cur is not None or not self.mirror:
            await super()._emit_frame(ctx, cur)
            return
        k = self.frame
        a0, a1 = self._boundary(k), self._boundary(k + 1)
        t = k / self.fps - self.mirror_delay_s
        params = np.zeros(N_PARAMS, dtype=np.float32)
        mouth = self.buffer.mouth_at(t + 0.5 / self.fps)  # the middle of the frame's display interval
        if mouth is not None:
            params[MOUTH] = mouth
            self.mirrored_frames += 1
            self.stale_frames += self.buffer.ahead(t)
        samples = self.buffer.audio(t, a1 - a0, self.sample_rate)
        stamp = ctx.stamp(k / self.fps)
        await ctx.output("audio").put(AudioFrame(pts=a0, time_base=self._atb, samples=samples,
                                                 sample_rate=self.sample_rate, **stamp))
        await ctx.output("motion").put(MotionFrame(pts=k, time_base=self._vtb, params=params, **stamp))
        self.frame = k + 1
