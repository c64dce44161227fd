"""The server: one aiohttp application for HTTP, websockets and static pages.

    GET  /                   the call page: a WebRTC call with the avatar (web/static/call.html)
    GET  /player             the websocket stream player (web/static/index.html)
    POST /v1/calls           WHIP-shaped signaling and call control (docs/calls.md)
    GET  /v1/stream          websocket: text in, talking head out (docs/stream-protocol.md)
    GET  /v1/stream/schema   the protocol's JSON Schema
    GET  /metrics            Prometheus
    GET  /healthz, /readyz   liveness; readiness (engines loaded, room for a call)

`create_app(settings)` builds it (tests run it on a random port); `serve(settings)` runs it
until interrupted (`avatar serve`). Later endpoints (WebRTC signaling, /metrics, health)
attach to the same application.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
from pathlib import Path

import hmac
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, ProcessCollector, generate_latest
from aiohttp.abc import AbstractAccessLogger

from engines import configure_torch_threads
from engines.process_stats import process_stats
from realtime import LoopLagMonitor, RuntimeMetrics

from .calls.routes import CALLS, CallRegistry, add_call_routes
from .resources import SharedEngines
from .settings import ServerSettings
from .stream.handler import STREAM, StreamState, close_all, stream_handler
from .stream.protocol import json_schema

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


LOOP_LAG = web.AppKey("loop_lag", LoopLagMonitor)


def create_app(settings: ServerSettings | None = None, *, metrics: RuntimeMetrics | None = None) -> web.Application:
    settings = settings or ServerSettings.from_env()
    app = web.Application(middlewares=[_auth_middleware])
    if metrics is None:
        metrics = RuntimeMetrics()
        # CPU seconds, resident memory, open files of the server process, as operators expect.
        ProcessCollector(registry=metrics.registry)
    engines = SharedEngines(settings, metrics)
    app[STREAM] = StreamState(settings, engines, metrics)
    add_call_routes(app, CallRegistry(settings, engines, metrics))
    app.router.add_get("/", _call_page)
    app.router.add_get("/player", _index)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/v1/stream", stream_handler)
    app.router.add_get("/v1/stream/schema", _schema)
    app.router.add_static("/static/", STATIC)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    return app


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html")


async def _call_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "call.html")


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[STREAM]
    registry = request.app[CALLS]["registry"]
    _update_call_gauges(state.metrics, registry)
    body = generate_latest(state.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _update_call_gauges(metrics: RuntimeMetrics, registry: CallRegistry) -> None:
    g = _call_gauges(metrics)
    calls = list(registry.calls.values())
    g["calls"].set(len(calls))
    g["offset"].set(max((abs(c.av_offset_s) for c in calls), default=0.0))


def _call_gauges(metrics: RuntimeMetrics) -> dict[str, Any]:
    """Call gauges live in the server's registry, created once per registry."""
    key = "_call_gauges"
    if not hasattr(metrics, key):
        setattr(metrics, key, {
            "calls": Gauge("calls_active", "WebRTC calls running", namespace="avatar", registry=metrics.registry),
            "offset": Gauge("call_av_offset_seconds", "Largest |A/V offset| over running calls: how much "
                            "later video frames reach the encoder than audio, relative to media time",
                            namespace="avatar", registry=metrics.registry),
        })
    return getattr(metrics, key)


async def _healthz(request: web.Request) -> web.Response:
    """Liveness, with what an operator checks for leaks: tasks, calls, resident memory
    (`?trim=1` first returns freed heap to the OS, so the figure is not a high-water mark)."""
    if request.query.get("trim") == "1":
        await asyncio.to_thread(_trim_heap)
    registry: CallRegistry = request.app[CALLS]["registry"]
    body = {"status": "ok", "tasks": len(asyncio.all_tasks()), "calls": len(registry.calls), "rss_mb": resident_mb()}
    if request.query.get("tasks") == "1":  # what is running, by coroutine
        names = [getattr(t.get_coro(), "__qualname__", "?") for t in asyncio.all_tasks()]
        body["task_names"] = {n: names.count(n) for n in sorted(set(names))}
    return web.json_response(body)


def _trim_heap() -> None:
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def resident_mb() -> float | None:
    """This process's resident memory in MB (Linux; None elsewhere)."""
    stats = process_stats(os.getpid())
    return None if stats is None else round(stats.resident_bytes / 2**20, 1)


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[STREAM]
    registry: CallRegistry = request.app[CALLS]["registry"]
    ready = state.engines.ready()
    body = {"ready": ready and not registry.full(), "engines_loaded": ready, "calls": len(registry.calls),
            "max_calls": state.settings.max_calls}
    return web.json_response(body, status=200 if body["ready"] else 503)


@web.middleware
async def _auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Bearer token on the call API when a token is set (the websocket checks its own,
    accepting ?token= for browsers; pages, health and metrics stay open)."""
    token = request.app[STREAM].settings.token
    if token and request.path.startswith("/v1/calls"):
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()) and not hmac.compare_digest(
                request.query.get("token", "").encode(), token.encode()):
            return web.json_response({"error": "unauthorized", "message": "missing or wrong bearer token"},
                                     status=401, headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)


async def _schema(request: web.Request) -> web.Response:
    return web.json_response(json_schema())


async def _startup(app: web.Application) -> None:
    state = app[STREAM]
    configure_torch_threads(state.settings.torch_threads)  # process-wide, once (engines/threads.py)
    # How late the loop wakes timers: every frame's pacing depends on it (avatar_event_loop_lag_seconds).
    app[LOOP_LAG] = LoopLagMonitor(state.metrics)
    await app[LOOP_LAG].__aenter__()
    if state.settings.preload:
        await state.engines.preload()
    # What is loaded now (models, codecs, libraries: ~275k tracked objects) lives as long as the
    # server: keep it out of the cyclic collector's full passes. One full pass over it takes
    # 100-140 ms (cpu2, seen at start-up); during calls it would hold up every call's frames.
    gc.freeze()


async def _shutdown(app: web.Application) -> None:
    await close_all(app[STREAM])


async def _cleanup(app: web.Application) -> None:
    if LOOP_LAG in app:
        await app[LOOP_LAG].__aexit__(None, None, None)
    await app[STREAM].engines.close()


class AccessLogger(AbstractAccessLogger):
    """Method, path, status, time — without the query string, where a browser's `?token=` is."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %d %.3fs", request.remote, request.method, request.path, response.status, time)


async def serve(settings: ServerSettings, *, ready: asyncio.Event | None = None) -> None:
    """Run until cancelled (Ctrl-C)."""
    runner = web.AppRunner(create_app(settings), shutdown_timeout=5.0, access_log_class=AccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    for addr in runner.addresses:
        host, port = addr[0], addr[1]
        print(f"avatar: serving on http://{host}:{port}/  (websocket ws://{host}:{port}/v1/stream)", flush=True)
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
