"""The one interface every model backend implements, and the worker that runs it.

    engine.load()              build / read weights (blocking)
    engine.warmup()            run once on representative input (blocking)
    engine.run_batch(items)    a list of inputs in, a list of outputs out (blocking)

Stages never call these directly: they `await worker.run(items)`, and the worker executes
the blocking calls on its own thread, so the event loop never waits on compute. Compiled
backends and the cross-session batcher implement the same interface and slot in without
touching the stages.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class Engine(ABC, Generic[In, Out]):
    name: str = "engine"

    @abstractmethod
    def load(self) -> None: ...

    def warmup(self) -> None:  # noqa: B027 - optional
        """Run once on representative input so the first real call is not slow."""

    @abstractmethod
    def run_batch(self, items: Sequence[In]) -> list[Out]: ...

    def close(self) -> None:  # noqa: B027 - optional
        """Free what `load` took."""


class EngineWorker(Generic[In, Out]):
    """Runs an engine on one dedicated thread (torch releases the GIL while computing)."""

    def __init__(self, engine: Engine[In, Out]) -> None:
        self.engine = engine
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"engine-{self.engine.name}")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._load_and_warm)

    def _load_and_warm(self) -> None:
        self.engine.load()
        self.engine.warmup()

    async def run(self, items: Sequence[In]) -> list[Out]:
        if self._pool is None:
            raise RuntimeError(f"engine worker {self.engine.name!r} is not started")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.engine.run_batch, items)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(pool, self.engine.close)
            pool.shutdown(wait=True)

    async def __aenter__(self) -> EngineWorker[In, Out]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
