"""The server-wide perception feed: every call's perception records, to whoever listens.

    GET /v1/perception   (websocket)  -> one JSON text message per record, with its "call" id

An operator's dashboard subscribes; each subscriber has a bounded queue, and one that does
not keep up loses its oldest records (counted in its "dropped" notice), never the calls'.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import WSMsgType, web

QUEUE = 256
MAX_SUBSCRIBERS = 16


class PerceptionFeed:
    def __init__(self) -> None:
        self._subs: set[asyncio.Queue[dict[str, Any]]] = set()
        self.published = 0

    def publish(self, record: dict[str, Any]) -> None:
        self.published += 1
        for q in self._subs:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(record)

    async def handler(self, request: web.Request) -> web.StreamResponse:
        if len(self._subs) >= MAX_SUBSCRIBERS:
            raise web.HTTPServiceUnavailable(text=json.dumps({"error": "busy", "message": (
                f"at most {MAX_SUBSCRIBERS} perception feed subscribers")}), content_type="application/json")
        ws = web.WebSocketResponse(heartbeat=20.0)
        await ws.prepare(request)
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
        self._subs.add(q)

        async def drain_incoming() -> None:  # the feed is one-way; a close from the client ends it
            async for msg in ws:
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break

        reader = asyncio.ensure_future(drain_incoming())
        try:
            while not ws.closed and not reader.done():
                get = asyncio.ensure_future(q.get())
                done, _ = await asyncio.wait({get, reader}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    break
                await ws.send_str(json.dumps(get.result(), default=float))
        finally:
            self._subs.discard(q)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await ws.close()
        return ws
