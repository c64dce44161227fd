"""Recipe: an audio file in, the avatar speaking it out. The graph is the whole data path.

    audio ─┬─ audio (per video frame) ─────────────────────────────────────► mp4.audio
           └─ speech (16 kHz, 20 ms) ─► mouth ─► idle ─► render ─► video ─► mp4.video

The speech branch is what a live call runs on the caller's microphone.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from engines import EngineWorker
from pipelines.media.mp4 import Mp4Writer
from pipelines.media.stages import Mp4Sink
from pipelines.motion.audio_stage import AudioToMouth
from pipelines.motion.stages import Animate
from pipelines.render.stage import Render
from realtime import AudioFrame, Graph, LatePolicy, Stage, StageContext
from fractions import Fraction

SPEECH_RATE = 16000
CHUNK = 320  # 20 ms


class AudioArraySource(Stage):
    """Plays a decoded file into the graph: per-video-frame chunks for the output track and
    20 ms chunks at 16 kHz for the speech branch, both paced by the media clock if live."""

    inputs = ()
    outputs = ("audio", "speech")

    def __init__(self, name: str, samples_16k: np.ndarray, *, fps: int, n_frames: int) -> None:
        super().__init__(name)
        self.samples, self.fps, self.n_frames = samples_16k, fps, n_frames

    async def run(self, ctx: StageContext) -> None:
        x = np.zeros(self.n_frames * SPEECH_RATE // self.fps, np.float32)  # exactly n_frames long
        x[: min(len(self.samples), len(x))] = self.samples[: len(x)]
        tb = Fraction(1, SPEECH_RATE)
        per_frame = SPEECH_RATE // self.fps
        next_out = 0
        ctx.event("media_duration", seconds=self.n_frames / self.fps)
        for i in range(0, len(x), CHUNK):
            t = i / SPEECH_RATE
            if ctx.paced:
                await ctx.media_clock.wait_until_due(t - 0.1)  # a live microphone delivers in real time
            chunk = x[i:i + CHUNK]
            await ctx.output("speech").put(AudioFrame(pts=i, time_base=tb, samples=chunk,
                                                      sample_rate=SPEECH_RATE, **ctx.stamp(t)))
            while next_out + per_frame <= i + len(chunk):
                a = x[next_out:next_out + per_frame]
                await ctx.output("audio").put(AudioFrame(pts=next_out, time_base=tb, samples=a,
                                                         sample_rate=SPEECH_RATE, **ctx.stamp(next_out / SPEECH_RATE)))
                next_out += per_frame


def audio_to_video_graph(samples_16k: np.ndarray, *, motion: EngineWorker[Any, Any], renderer: EngineWorker[Any, Any],
                         writer: Mp4Writer, fps: int, lookahead_ms: int = 80, seed: int = 0,
                         image_format: str = "yuv420p") -> Graph:
    if SPEECH_RATE % fps:
        raise ValueError(f"fps must divide {SPEECH_RATE}")
    n_frames = max(1, round(len(samples_16k) / SPEECH_RATE * fps))
    g = Graph("audio_to_video", latency_budget_s=0.25)
    g.add(AudioArraySource("audio", samples_16k, fps=fps, n_frames=n_frames),
          AudioToMouth("mouth", motion, fps=fps, lookahead_ms=lookahead_ms, n_frames=n_frames),
          Animate("idle", seed=seed),
          Render("render", renderer, image_format=image_format),
          Mp4Sink("mp4", writer))
    g.link("audio.audio", "mp4.audio", capacity=4 * fps, policy=LatePolicy.BLOCK)
    g.link("audio.speech", "mouth.in", capacity=16, policy=LatePolicy.BLOCK)
    g.link("mouth.out", "idle.in", capacity=8, policy=LatePolicy.BLOCK)
    g.link("idle.out", "render.in", capacity=8, policy=LatePolicy.DROP)
    g.link("render.out", "mp4.video", capacity=8, policy=LatePolicy.REPEAT_LAST)
    return g
