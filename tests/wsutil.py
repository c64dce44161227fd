"""A real `/v1/stream` server on a random localhost port, for the websocket tests."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from web.app import create_app
from web.settings import ServerSettings
from web.stream.handler import STREAM, StreamState

# espeak speaks in milliseconds, where the natural voice takes a few hundred: tests use it
# unless they are about the default voice.
TEST_DEFAULTS: dict[str, Any] = {"voice": "en-us", "size": 256, "sizes": [128, 256], "port": 0}


@dataclass
class Server:
    app: web.Application
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state(self) -> StreamState:
        return self.app[STREAM]


@contextlib.asynccontextmanager
async def running_server(**overrides: Any) -> AsyncIterator[Server]:
    settings = ServerSettings(**{**TEST_DEFAULTS, **overrides})
    app = create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Server(app, runner.addresses[0][1])
    finally:
        await runner.cleanup()
