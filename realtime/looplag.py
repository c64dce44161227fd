"""Event-loop lag: how late the loop wakes a periodic timer. Blocking calls show up here."""
from __future__ import annotations

import asyncio
import contextlib

from .metrics import RuntimeMetrics


class LoopLagMonitor:
    def __init__(self, metrics: RuntimeMetrics, interval_s: float = 0.05) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.max_lag_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLagMonitor:
        self._task = asyncio.create_task(self._watch(), name="loop-lag")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, loop.time() - t0 - self.interval_s)
            self.max_lag_s = max(self.max_lag_s, lag)
            self.metrics.loop_lag.observe(lag)
