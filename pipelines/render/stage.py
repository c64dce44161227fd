"""The render stage: motion frames in, video frames out, through the renderer engine."""
from __future__ import annotations

from typing import Any

import torch

from engines import EngineWorker
from pipelines.motion.params import MotionFrame
from realtime import ChannelClosed, Frame, Stage, StageContext, VideoFrame


class Render(Stage):
    """Takes whatever motion frames are ready (up to `max_batch`) and renders them in one
    engine call; offline that batches, live it is usually one frame at a time."""

    def __init__(self, name: str, worker: EngineWorker[Any, torch.Tensor], *, image_format: str = "rgb24",
                 max_batch: int = 4, budget_s: float = 0.040) -> None:
        super().__init__(name, budget_s=budget_s)
        self.worker = worker
        self.image_format = image_format  # what the renderer engine produces
        self.max_batch = max_batch

    async def run(self, ctx: StageContext) -> None:
        inp, out = ctx.input(), ctx.output()
        meter = ctx.meter(self)
        while True:
            try:
                first = await inp.get()
            except ChannelClosed:
                return
            if not isinstance(first, Frame):
                await out.put(first)
                continue
            batch: list[MotionFrame] = [first]  # type: ignore[list-item]
            marker = None
            while len(batch) < self.max_batch:
                nxt = inp.try_get()
                if nxt is None:
                    break
                if not isinstance(nxt, Frame):
                    marker = nxt
                    break
                batch.append(nxt)  # type: ignore[arg-type]
            meter.frames_in(len(batch))
            t0 = ctx.clock.now()
            images = await self.worker.run([{"params": torch.from_numpy(f.params)} for f in batch])
            meter.work(ctx.clock.now() - t0, len(batch))
            for f, img in zip(batch, images, strict=True):
                await out.put(VideoFrame(image=img.numpy(), format=self.image_format, **f.timing()))
                meter.frames_out()
            if marker is not None:
                await out.put(marker)
