"""Stages of the motion concern: speech -> mouth motion on the session timeline, idle life."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from pipelines.speech.types import Utterance
from realtime import AudioFrame, MapStage, Stage, StageContext

from .idle import Liveliness
from .params import MOUTH, N_PARAMS, TONGUE, MotionFrame, video_time_base
from .visemes import mouth_params, tongue_params


class Articulate(Stage):
    """Utterances in; audio chunks and mouth motion out, on one timeline.

    Audio is the master clock: each utterance is placed at the next video-frame boundary of
    the session's audio timeline (padded with silence to end on one), cut into one audio
    chunk per video frame, and a motion frame is made for each chunk's time. Sync therefore
    holds by construction, whatever the audio and video rates.
    """

    outputs = ("audio", "motion")

    def __init__(self, name: str, *, fps: int, lead_in_s: float = 0.0, tail_s: float = 0.0,
                 budget_s: float = 0.040) -> None:
        super().__init__(name, budget_s=budget_s)
        self.fps = fps
        self.lead_in_s, self.tail_s = lead_in_s, tail_s
        self.frame = 0  # next video frame index on the session timeline
        self.sample_rate: int | None = None

    def _boundary(self, frame: int) -> int:
        assert self.sample_rate is not None
        return (frame * self.sample_rate) // self.fps  # first sample of video frame `frame`

    async def _emit(self, ctx: StageContext, audio: np.ndarray, mouth: np.ndarray,
                    tongue: np.ndarray | None = None) -> None:
        """Emit len(mouth) frames whose audio is `audio` (already padded to fit exactly)."""
        assert self.sample_rate is not None
        tb = video_time_base(self.fps)
        start = self._boundary(self.frame)
        for j in range(len(mouth)):
            k = self.frame + j
            a0, a1 = self._boundary(k) - start, self._boundary(k + 1) - start
            t = k / self.fps
            stamp = ctx.stamp(t)
            await ctx.output("audio").put(AudioFrame(
                pts=self._boundary(k), time_base=video_time_base(self.sample_rate),
                samples=audio[a0:a1], sample_rate=self.sample_rate, **stamp))
            params = np.zeros(N_PARAMS, dtype=np.float32)
            params[MOUTH] = mouth[j]
            if tongue is not None:
                params[TONGUE] = tongue[j]
            await ctx.output("motion").put(MotionFrame(pts=k, time_base=tb, params=params, **stamp))
        self.frame += len(mouth)

    async def _silence(self, ctx: StageContext, seconds: float) -> None:
        n = round(seconds * self.fps)
        if n > 0 and self.sample_rate is not None:
            samples = self._boundary(self.frame + n) - self._boundary(self.frame)
            await self._emit(ctx, np.zeros(samples, np.float32), np.zeros((n, MOUTH.stop), np.float32))

    async def run(self, ctx: StageContext) -> None:
        first = True
        meter = ctx.meter(self)
        async for utt in ctx.input():
            if not isinstance(utt, Utterance):
                continue
            meter.frames_in()
            if self.sample_rate is None:
                self.sample_rate = utt.sample_rate
            elif utt.sample_rate != self.sample_rate:
                raise ValueError(f"utterance at {utt.sample_rate} Hz in a {self.sample_rate} Hz session")
            if first:
                await self._silence(ctx, self.lead_in_s)
                first = False
            # Pad the utterance with silence so it ends on a video frame boundary.
            start = self._boundary(self.frame)
            n = self.frame
            while self._boundary(n) - start < len(utt.audio):
                n += 1
            n_frames = n - self.frame
            audio = np.zeros(self._boundary(n) - start, np.float32)
            audio[: len(utt.audio)] = utt.audio
            t0 = self.frame / self.fps
            ctx.event("utterance_started", text=utt.text, media_time=t0, duration=len(audio) / self.sample_rate)
            ctx.event("phonemes", items=[(p.symbol, t0 + p.start_ms / 1000, t0 + p.end_ms / 1000)
                                         for p in utt.phonemes])
            for w in utt.words:
                ctx.event("word", text=w.text, char_start=w.char_start, char_end=w.char_end,
                          start=t0 + w.start_ms / 1000, end=t0 + w.end_ms / 1000)
            t_work = ctx.clock.now()
            mouth = mouth_params(utt.phonemes, n_frames, self.fps)
            tongue = tongue_params(utt.phonemes, n_frames, self.fps)
            meter.work(ctx.clock.now() - t_work)  # the viseme function's time per utterance
            await self._emit(ctx, audio, mouth, tongue)
            meter.frames_out(n_frames)
            ctx.event("utterance_done", text=utt.text, media_time=self.frame / self.fps)
        await self._silence(ctx, self.tail_s)


class Animate(MapStage):
    """Adds idle life (blinks, sway, gaze, breathing, brows) to each motion frame, and brows
    that lift on stressed syllables."""

    def __init__(self, name: str, *, seed: int = 0, budget_s: float = 0.005) -> None:
        super().__init__(name, budget_s=budget_s)
        self.life = Liveliness(seed)

    async def process(self, frame: Any, ctx: StageContext) -> AsyncIterator[Any]:
        assert isinstance(frame, MotionFrame)
        frame.params = self.life.apply(frame.params, frame.time)
        yield frame
