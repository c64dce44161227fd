"""The server: one aiohttp application for HTTP, websockets and static pages.

    GET /                   the player page (web/static/)
    GET /v1/stream          websocket: text in, talking head out (docs/stream-protocol.md)
    GET /v1/stream/schema   the protocol's JSON Schema

`create_app(settings)` builds it (tests run it on a random port); `serve(settings)` runs it
until interrupted (`avatar serve`). Later endpoints (WebRTC signaling, /metrics, health)
attach to the same application.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from engines import configure_torch_threads
from realtime import RuntimeMetrics

from .resources import SharedEngines
from .settings import ServerSettings
from .stream.handler import STREAM, StreamState, close_all, stream_handler
from .stream.protocol import json_schema

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def create_app(settings: ServerSettings | None = None, *, metrics: RuntimeMetrics | None = None) -> web.Application:
    settings = settings or ServerSettings.from_env()
    app = web.Application()
    app[STREAM] = StreamState(settings, SharedEngines(settings), metrics or RuntimeMetrics())
    app.router.add_get("/", _index)
    app.router.add_get("/v1/stream", stream_handler)
    app.router.add_get("/v1/stream/schema", _schema)
    app.router.add_static("/static/", STATIC)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    return app


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html")


async def _schema(request: web.Request) -> web.Response:
    return web.json_response(json_schema())


async def _startup(app: web.Application) -> None:
    state = app[STREAM]
    configure_torch_threads(state.settings.torch_threads)  # process-wide, once (engines/threads.py)
    if state.settings.preload:
        await state.engines.preload()


async def _shutdown(app: web.Application) -> None:
    await close_all(app[STREAM])


async def _cleanup(app: web.Application) -> None:
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
