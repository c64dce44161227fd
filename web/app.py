"""The server: one aiohttp application for HTTP, websockets and static pages.

    GET  /                   the call page: a WebRTC call with the avatar (web/static/call.html)
    GET  /player             the websocket stream player (web/static/index.html)
    POST /v1/calls           WHIP-shaped signaling and call control (docs/calls.md)
    GET  /v1/stream          websocket: text in, talking head out (docs/stream-protocol.md)
    GET  /v1/stream/schema   the protocol's JSON Schema
    GET  /v1/openapi.json    the HTTP API as an OpenAPI document (web/openapi.py)
    GET  /metrics            Prometheus
    GET  /healthz, /readyz   liveness; readiness (engines loaded, room for a call, not stopping)
    GET  /dashboard          the operators' live dashboard (web/static/dashboard.html; token)
    GET  /v1/dashboard/feed  Server-Sent Events: one snapshot of sessions and load a second (docs/dashboard.md)

Every request passes web/security.py first (Host, token, Origin); handlers refuse bad input by
raising web.requests.ApiError. `create_app(settings)` builds it (tests run it on a random
port); `serve(settings)` runs it until SIGTERM or SIGINT, then stops gracefully (`stop`).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import signal
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, ProcessCollector, generate_latest
from aiohttp.abc import AbstractAccessLogger

from engines import configure_torch_threads
from realtime import LoopLagMonitor, RuntimeMetrics

from .calls.routes import CALLS, CallRegistry, add_call_routes
from .dashboard import add_dashboard_routes
from .health import add_health_routes, readiness
from .openapi import openapi_document
from .requests import ApiError
from .resources import SharedEngines
from .security import install_log_scrubber, make_edge_middleware
from .settings import ServerSettings
from .stream.handler import STREAM, StreamState, close_all, stream_handler
from .stream.protocol import json_schema

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


LOOP_LAG = web.AppKey("loop_lag", LoopLagMonitor)


def create_app(settings: ServerSettings | None = None, *, metrics: RuntimeMetrics | None = None) -> web.Application:
    settings = settings or ServerSettings.from_env()
    # aiohttp's own body limit (request.read()) matches the largest body a route takes
    app = web.Application(middlewares=[_errors_middleware, make_edge_middleware(settings)],
                          client_max_size=max(settings.max_sdp_bytes, 1024 * 1024))
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
    add_health_routes(app)
    add_dashboard_routes(app)
    app.router.add_get("/v1/stream", stream_handler)
    app.router.add_get("/v1/stream/schema", _schema)
    app.router.add_get("/v1/openapi.json", _openapi)
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
    _update_call_gauges(state.metrics, registry, readiness(request.app).ready)
    body = generate_latest(state.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _update_call_gauges(metrics: RuntimeMetrics, registry: CallRegistry, ready: bool) -> None:
    g = _call_gauges(metrics)
    calls = list(registry.calls.values())
    g["calls"].set(len(calls))
    g["max"].set(registry.settings.max_calls)
    g["ready"].set(1 if ready else 0)
    g["draining"].set(1 if registry.draining else 0)
    g["offset"].set(max((abs(c.av_offset_s) for c in calls), default=0.0))


def _call_gauges(metrics: RuntimeMetrics) -> dict[str, Any]:
    """Call gauges live in the server's registry, created once per registry."""
    key = "_call_gauges"
    if not hasattr(metrics, key):
        setattr(metrics, key, {
            "calls": Gauge("calls_active", "WebRTC calls running", namespace="avatar", registry=metrics.registry),
            "max": Gauge("calls_max", "Calls this server takes at most (max_calls): saturation is "
                         "calls_active / calls_max", namespace="avatar", registry=metrics.registry),
            "ready": Gauge("ready", "1 when /readyz answers 200 (engines loaded, room for a call, not "
                           "draining)", namespace="avatar", registry=metrics.registry),
            "draining": Gauge("draining", "1 while the server drains or stops (new sessions refused)",
                              namespace="avatar", registry=metrics.registry),
            "offset": Gauge("call_av_offset_seconds", "Largest |A/V offset| over running calls: how much "
                            "later video frames reach the encoder than audio, relative to media time",
                            namespace="avatar", registry=metrics.registry),
        })
    return getattr(metrics, key)


@web.middleware
async def _errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refusals (ApiError, aiohttp's own 4xx) as JSON {"error", "message"}; anything else is a
    bug: logged with its traceback, answered 500 without one."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = exc.reason.lower().replace(" ", "_")
        return web.json_response({"error": code, "message": exc.reason}, status=exc.status,
                                 headers={k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")})


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(secured=bool(request.app[STREAM].settings.token)))


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
    if state.settings.call_perception:  # mediapipe loaded and warmed now, not on a call's time
        await state.engines.perception()
    # What is loaded now (models, codecs, libraries: ~275k tracked objects) lives as long as the
    # server: keep it out of the cyclic collector's full passes. One full pass over it takes
    # 100-140 ms (cpu2, seen at start-up); during calls it would hold up every call's frames.
    gc.freeze()


async def _shutdown(app: web.Application) -> None:
    await close_all(app[STREAM])  # streams still open (without `stop`, e.g. tests): 1001


async def _cleanup(app: web.Application) -> None:
    if LOOP_LAG in app:
        await app[LOOP_LAG].__aexit__(None, None, None)
    await app[STREAM].engines.close()


class AccessLogger(AbstractAccessLogger):
    """Method, path, status, time — without the query string, where a browser's `?token=` is."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %d %.3fs", request.remote, request.method, request.path, response.status, time)


async def stop(app: web.Application, grace_s: float) -> None:
    """The graceful stop: refuse newcomers (503, `/readyz` false), close every stream with
    1001 and every call with an `ended` event and a DTLS close, and wait up to `grace_s` for
    them to finish closing."""
    registry: CallRegistry = app[CALLS]["registry"]
    state = app[STREAM]
    registry.draining = state.draining = True
    n_streams, n_calls = len(state.connections), len(registry.calls)
    log.info("stopping: closing %d streams and %d calls (grace %.0f s)", n_streams, n_calls, grace_s)
    await close_all(state)
    closing = asyncio.ensure_future(registry.close_all())
    loop = asyncio.get_running_loop()
    end = loop.time() + grace_s
    while (state.connections or registry.calls or not closing.done()) and loop.time() < end:
        await asyncio.sleep(0.05)
    if state.connections or registry.calls:
        log.warning("stopping: %d streams and %d calls still open after %.0f s", len(state.connections),
                    len(registry.calls), grace_s)
    if not closing.done():
        closing.cancel()
    await asyncio.gather(closing, return_exceptions=True)


async def drain(app: web.Application, timeout_s: float) -> bool:
    """Draining, as on scale-in: `/readyz` false and newcomers refused (503 + Retry-After) at
    once, while running calls and streams go on until they end by themselves — at most
    `timeout_s`. True when all ended; the caller then stops (`stop`) either way."""
    registry: CallRegistry = app[CALLS]["registry"]
    state = app[STREAM]
    registry.draining = state.draining = True
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    log.info("draining: %d calls and %d streams running (at most %.0f s)", len(registry.calls),
             len(state.connections), timeout_s)
    while (registry.calls or state.connections) and loop.time() < end:
        await asyncio.sleep(0.1)
    left = len(registry.calls) + len(state.connections)
    log.info("drained" if not left else f"drain timed out with {left} sessions running")
    return not left


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def serve(settings: ServerSettings, *, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT (or cancelled), then stop gracefully and return. With
    `drain_timeout_s`, SIGTERM drains first (`drain`); SIGINT or a second SIGTERM does not wait.

    The signals are unblocked and handled whatever the process inherited: a service manager
    or `setsid` may start it with SIGINT ignored or signals blocked."""
    install_log_scrubber(settings.token)
    app = create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=5.0, access_log_class=AccessLogger, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()  # stop now (SIGINT, or SIGTERM without a drain, or a second one)
    terms = 0

    def on_term() -> None:
        nonlocal terms
        terms += 1
        if settings.drain_timeout_s <= 0 or terms > 1:
            stopping.set()
        elif terms == 1:
            draining.set()

    draining = asyncio.Event()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    for addr in runner.addresses:
        host, port = addr[0], addr[1]
        print(f"avatar: serving on http://{host}:{port}/  (websocket ws://{host}:{port}/v1/stream)", flush=True)
    if ready is not None:
        ready.set()
    try:
        waits = [asyncio.ensure_future(e.wait()) for e in (stopping, draining)]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if draining.is_set() and not stopping.is_set():
            log.info("SIGTERM: draining")
            drained = asyncio.ensure_future(drain(app, settings.drain_timeout_s))
            await asyncio.wait([drained, waits[0]], return_when=asyncio.FIRST_COMPLETED)
            drained.cancel()
        for w in waits:
            w.cancel()
        log.info("signal received: stopping")
        await stop(app, settings.shutdown_grace_s)
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    print("avatar: stopped", flush=True)
