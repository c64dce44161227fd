"""Liveness and readiness: `/healthz` (with maintenance parameters for operators) and
`/readyz` (what a load balancer asks before it sends a call)."""
from __future__ import annotations

import asyncio
import gc
import os
import time
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from engines.process_stats import process_stats

from .calls.routes import CALLS, CallRegistry
from .requests import query
from .stream.handler import STREAM


class Health(BaseModel):
    status: str = "ok"
    tasks: int = Field(description="asyncio tasks running")
    calls: int
    rss_mb: float | None = Field(description="resident memory of the server process (Linux)")
    task_names: dict[str, int] | None = Field(None, description="with ?tasks=1: tasks by coroutine")


class HealthQuery(BaseModel):
    model_config = ConfigDict(extra="allow")  # ?token= travels here too
    trim: Literal["0", "1"] = Field("0", description="maintenance: return freed heap to the OS first")
    tasks: Literal["0", "1"] = Field("0", description="maintenance: count asyncio tasks by coroutine")


class Ready(BaseModel):
    ready: bool = Field(description="engines loaded, room for a call, not stopping")
    engines_loaded: bool
    draining: bool
    calls: int
    max_calls: int


async def _healthz(request: web.Request) -> web.Response:
    """Liveness, with what an operator checks for leaks: tasks, calls, resident memory.
    Maintenance (token, or loopback without one; web/security.py): `?trim=1` first returns
    freed heap to the OS, so the figure is not a high-water mark; `?tasks=1` counts tasks."""
    q = query(request, HealthQuery)
    if q.trim == "1":
        await request.app[TRIMMER].trim()
    registry: CallRegistry = request.app[CALLS]["registry"]
    names = None
    if q.tasks == "1":  # what is running, by coroutine
        running = [getattr(t.get_coro(), "__qualname__", "?") for t in asyncio.all_tasks()]
        names = {n: running.count(n) for n in sorted(set(running))}
    body = Health(tasks=len(asyncio.all_tasks()), calls=len(registry.calls), rss_mb=resident_mb(), task_names=names)
    return web.json_response(body.model_dump(exclude_none=True))


class HeapTrimmer:
    """A full collection and malloc_trim hold the GIL for ~100 ms: one at a time, at most one
    per `min_interval_s`; requests that arrive meanwhile share the next one."""

    def __init__(self, min_interval_s: float = 1.0) -> None:
        self.min_interval_s = min_interval_s
        self._last = -float("inf")
        self._lock = asyncio.Lock()
        self.trims = 0

    async def trim(self) -> None:
        asked = time.monotonic()
        async with self._lock:
            if self._last >= asked:  # one that started after we asked has just run
                return
            wait = self._last + self.min_interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last = time.monotonic()
            await asyncio.to_thread(_trim_heap)
            self.trims += 1


TRIMMER = web.AppKey("trimmer", HeapTrimmer)


def _trim_heap() -> None:
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def resident_mb() -> float | None:
    """This process's resident memory in MB (Linux; None elsewhere)."""
    stats = process_stats(os.getpid())
    return None if stats is None else round(stats.resident_bytes / 2**20, 1)


def readiness(app: web.Application) -> Ready:
    """What /readyz answers (and the avatar_ready gauge shows)."""
    state = app[STREAM]
    registry: CallRegistry = app[CALLS]["registry"]
    loaded = state.engines.ready()
    return Ready(ready=loaded and not registry.full() and not registry.draining, engines_loaded=loaded,
                 draining=registry.draining, calls=len(registry.calls), max_calls=state.settings.max_calls)


async def _readyz(request: web.Request) -> web.Response:
    body = readiness(request.app)
    return web.json_response(body.model_dump(), status=200 if body.ready else 503)


def add_health_routes(app: web.Application) -> None:
    app[TRIMMER] = HeapTrimmer()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
