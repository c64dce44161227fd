"""A dedicated thread for blocking work, awaited from the event loop.

Models (through `EngineWorker`) and codecs run here, never on the loop. One thread per
worker keeps a model's or a codec's state single-threaded; torch and libav release the GIL
while they compute, so the loop stays responsive.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class ThreadWorker:
    def __init__(self, name: str) -> None:
        self.name = name
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def start(self) -> None:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=self.name)

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        if self._pool is None:
            raise RuntimeError(f"worker {self.name!r} is not started")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            # wait for the thread to finish its current job without blocking the loop
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown, True)

    async def __aenter__(self) -> ThreadWorker:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
