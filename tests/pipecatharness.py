"""Runs AvatarVideoService in a real Pipecat pipeline in this process, with frames queued at
its head and everything that comes out (either way) recorded with its time."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pipecat.frames.frames import ErrorFrame, Frame, OutputImageRawFrame, TTSAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner


class Recorder(FrameProcessor):
    """Passes everything on; keeps what goes `direction` with time.monotonic()."""

    def __init__(self, direction: FrameDirection) -> None:
        super().__init__()
        self.direction = direction
        self.frames: list[tuple[float, Frame]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self.direction:
            self.frames.append((time.monotonic(), frame))
        await self.push_frame(frame, direction)


@dataclass
class Run:
    """A pipeline [upstream recorder, processor, downstream recorder], running."""

    worker: PipelineWorker
    up: Recorder
    down: Recorder
    task: asyncio.Task[None]
    started: float = field(default_factory=time.monotonic)

    def out(self, kind: type) -> list[tuple[float, Any]]:
        return [(t, f) for t, f in self.down.frames if isinstance(f, kind)]

    def errors(self) -> list[str]:
        return [f.error for _, f in self.up.frames if isinstance(f, ErrorFrame)]

    def images(self) -> list[tuple[float, np.ndarray]]:
        return [(t, np.frombuffer(f.image, np.uint8).reshape(f.size[1], f.size[0], 3))
                for t, f in self.out(OutputImageRawFrame)]

    def speech(self) -> tuple[np.ndarray, int]:
        """All audio that came out, joined (int16 mono), and its rate."""
        chunks = self.out(TTSAudioRawFrame)
        if not chunks:
            return np.zeros(0, np.int16), 0
        rates = {f.sample_rate for _, f in chunks}
        assert len(rates) == 1, rates
        return np.concatenate([np.frombuffer(f.audio, np.int16) for _, f in chunks]), rates.pop()

    def pairs(self) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Each image with the audio pushed right after it (its own 1/fps of speech), if any."""
        out: list[tuple[np.ndarray, np.ndarray | None]] = []
        for _, f in self.down.frames:
            if isinstance(f, OutputImageRawFrame):
                out.append((np.frombuffer(f.image, np.uint8).reshape(f.size[1], f.size[0], 3), None))
            elif isinstance(f, TTSAudioRawFrame) and out and out[-1][1] is None:
                out[-1] = (out[-1][0], np.frombuffer(f.audio, np.int16))
        return out

    async def finish(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self.task, timeout)


async def start(processor: FrameProcessor) -> Run:
    up, down = Recorder(FrameDirection.UPSTREAM), Recorder(FrameDirection.DOWNSTREAM)
    worker = PipelineWorker(Pipeline([up, processor, down]), params=PipelineParams(enable_metrics=False),
                            enable_rtvi=False, idle_timeout_secs=None)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = Run(worker, up, down, asyncio.ensure_future(runner.run()))
    async with asyncio.timeout(60):  # the face loads (seconds, once per process and loop)
        while not any(isinstance(f, OutputImageRawFrame) for _, f in down.frames):
            await asyncio.sleep(0.02)
    return run


def tts_frames(audio: np.ndarray, rate: int, channels: int = 1, chunk_s: float = 0.02) -> list[TTSAudioRawFrame]:
    """int16 audio (samples, or samples x channels) cut into TTS frames of `chunk_s`."""
    x = audio.reshape(len(audio), -1) if audio.ndim > 1 else audio[:, None].repeat(channels, 1)
    n = max(1, int(rate * chunk_s))
    return [TTSAudioRawFrame(audio=x[i:i + n].astype(np.int16).tobytes(), sample_rate=rate,
                             num_channels=x.shape[1], context_id="test") for i in range(0, len(x), n)]
