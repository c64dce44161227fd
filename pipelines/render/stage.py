"""The render stage: motion frames in, video frames out, through the renderer engine."""
from __future__ import annotations

import asyncio
import math
from typing import Any

import torch

from engines import EngineDied, EngineWorker
from engines.batcher import Batcher
from pipelines.motion.params import MotionFrame
from realtime import ChannelClosed, Frame, Stage, StageContext, VideoFrame
from .events import EngineFailed


class Render(Stage):
    """Takes whatever motion frames are ready (up to `max_batch`) and renders them in one
    engine call; offline that batches, live it is usually one frame at a time, and the frames
    of many sessions meet in the shared renderer's batcher (engines/batcher.py), which gets
    each frame's deadline.

    `in_flight`: how many engine calls of this stage may run at once (outputs stay in order).
    With one, a session's next frame waits for its previous one; when the renderer is shared by
    many sessions and one call takes most of a frame period, those waits pile up (4 calls at
    512² on cpu2: a batch of four frames takes 30-40 ms, and frames waited up to 80 ms before
    their turn). With two, the next frame joins the next batch, on another renderer replica.

    When the engine dies under a batch (EngineDied: a renderer process killed), those frames
    repeat the last image (the viewer sees a short freeze, not an ended call), counted in
    `avatar_frames_dropped_total{reason="engine_failed"}` and reported as an `engine_failed`
    event; the engine layer restarts the renderer meanwhile."""

    def __init__(self, name: str, worker: EngineWorker[Any, torch.Tensor] | Batcher[Any, torch.Tensor], *,
                 image_format: str = "rgb24",
                 max_batch: int = 4, budget_s: float = 0.040, in_flight: int = 1) -> None:
        super().__init__(name, budget_s=budget_s)
        if in_flight < 1:
            raise ValueError("in_flight must be >= 1")
        self.worker = worker
        self.image_format = image_format  # what the renderer engine produces
        self.max_batch = max_batch
        self.in_flight = in_flight

    async def run(self, ctx: StageContext) -> None:
        slots = asyncio.Semaphore(self.in_flight)
        # (frames, their engine call, a marker that followed them) in input order; None: the end
        calls: asyncio.Queue[tuple[list[MotionFrame], asyncio.Future[Any] | None, object] | None] = asyncio.Queue()
        submit = asyncio.create_task(self._submit(ctx, calls, slots), name=f"{self.name}-submit")
        emit = asyncio.create_task(self._emit(ctx, calls, slots), name=f"{self.name}-emit")
        try:
            await asyncio.wait({submit, emit}, return_when=asyncio.FIRST_COMPLETED)
            if emit.done():  # it only ends early by failing
                emit.result()
            submit.result()
            calls.put_nowait(None)
            await emit
        finally:
            for t in (submit, emit):
                t.cancel()
            await asyncio.gather(submit, emit, return_exceptions=True)
            while not calls.empty():  # cancelled or failed: engine calls nobody will collect
                item = calls.get_nowait()
                if item is not None and item[1] is not None:
                    item[1].cancel()

    async def _submit(self, ctx: StageContext, calls: asyncio.Queue[Any], slots: asyncio.Semaphore) -> None:
        inp = ctx.input()
        meter = ctx.meter(self)
        while True:
            await slots.acquire()  # before reading: frames that arrive meanwhile join the batch
            try:
                first = await inp.get()
            except ChannelClosed:
                return
            if not isinstance(first, Frame):
                slots.release()
                calls.put_nowait(([], None, first))
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
            calls.put_nowait((batch, asyncio.ensure_future(self._render(ctx, meter, batch)), marker))

    async def _render(self, ctx: StageContext, meter: Any, batch: list[MotionFrame]) -> list[torch.Tensor]:
        t0 = ctx.clock.now()
        items = [{"params": torch.from_numpy(f.params)} for f in batch]
        if isinstance(self.worker, Batcher):
            # Shared with other sessions: the batcher runs the earliest deadline first, keeps
            # this session's frames in order, and may hold a batch open until the deadline less
            # the render time (its policy). A frame's deadline is its presentation; offline: none.
            due = min(f.deadline for f in batch)
            slack = None if math.isinf(due) else due - t0
            images = await self.worker.run(items, slack_s=slack, session=id(self))
        else:
            images = await self.worker.run(items)
        meter.work(ctx.clock.now() - t0, len(batch))
        return images

    async def _emit(self, ctx: StageContext, calls: asyncio.Queue[Any], slots: asyncio.Semaphore) -> None:
        out = ctx.output()
        meter = ctx.meter(self)
        last: Any = None  # the last image emitted, repeated when the engine dies under a batch
        while (item := await calls.get()) is not None:
            batch, task, marker = item
            if task is not None:
                try:
                    images = [img.numpy() for img in await task]
                except EngineDied as exc:  # (the series is made on the first loss: no empty child)
                    ctx.metrics.frames_dropped.labels(ctx.graph, f"{self.name}.engine", "engine_failed").inc(len(batch))
                    ctx.report(EngineFailed(stage=self.name, frames=len(batch), message=str(exc)))
                    images = [last] * len(batch)
                for f, img in zip(batch, images, strict=True):
                    if img is None:
                        continue  # nothing drawn yet to repeat
                    last = img
                    await out.put(VideoFrame(image=img, format=self.image_format, **f.timing()))
                    meter.frames_out()
                slots.release()
            if marker is not None:
                await out.put(marker)
