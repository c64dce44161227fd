"""The operators' dashboard (docs/dashboard.md).

    GET /dashboard            the page (web/static/dashboard.html): sessions, load, live plots
    GET /v1/dashboard/feed    Server-Sent Events: one `snapshot` event (a `Snapshot`, JSON) a
                              second; with ?history=N, first one `history` event holding the
                              last N seconds of snapshots (a JSON list), so the plots start full

Both need the server's bearer token when it has one — `Authorization: Bearer …` or
`?token=…` (an EventSource cannot set headers: the page passes its own `?token=` on), checked
as web/security.py checks the API — and answer 401 without it.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ..calls.routes import CALLS
from ..requests import query
from ..security import authorized, error
from ..stream.handler import STREAM
from .snapshot import Sampler

STATIC = Path(__file__).resolve().parent.parent / "static"
SAMPLER = web.AppKey("dashboard_sampler", Sampler)
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}  # the URL may carry ?token=


class FeedQuery(BaseModel):
    model_config = ConfigDict(extra="allow")  # ?token= travels here too
    history: int = Field(0, ge=0, le=600, description="seconds of past snapshots to send first (one event)")


def _refused(request: web.Request) -> web.Response | None:
    token = request.app[STREAM].settings.token
    if token and not authorized(request, token):
        return error(401, "unauthorized", "missing or wrong bearer token (open /dashboard?token=…)",
                     **{"WWW-Authenticate": 'Bearer realm="avatar"'})
    return None


async def dashboard_page(request: web.Request) -> web.StreamResponse:
    refused = _refused(request)
    if refused is not None:
        return refused
    return web.FileResponse(STATIC / "dashboard.html", headers=NO_STORE)


async def dashboard_feed(request: web.Request) -> web.StreamResponse:
    refused = _refused(request)
    if refused is not None:
        return refused
    q = query(request, FeedQuery)
    sampler = request.app[SAMPLER]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no", **NO_STORE})
    subscription = sampler.subscribe()
    try:
        await resp.prepare(request)
        await resp.write(b"retry: 2000\n\n")
        if q.history:
            past = list(sampler.history)[-q.history:]
            body = "[" + ",".join(s.model_dump_json() for s in past) + "]"
            await resp.write(f"event: history\ndata: {body}\n\n".encode())
        elif sampler.history:  # the latest at once, not a second later
            last = sampler.history[-1]
            await resp.write(f"event: snapshot\nid: {last.seq}\ndata: {last.model_dump_json()}\n\n".encode())
        while True:
            snap = await subscription.get()
            if snap is None:  # the server stops
                break
            await resp.write(f"event: snapshot\nid: {snap.seq}\ndata: {snap.model_dump_json()}\n\n".encode())
    except ConnectionResetError:
        pass  # the page went away
    finally:
        sampler.unsubscribe(subscription)
    with contextlib.suppress(Exception):
        await resp.write_eof()
    return resp


def add_dashboard_routes(app: web.Application) -> None:
    """After add_call_routes and the stream state: it reads both."""
    app[SAMPLER] = Sampler(app[CALLS]["registry"], app[STREAM])
    app.router.add_get("/dashboard", dashboard_page)
    app.router.add_get("/v1/dashboard/feed", dashboard_feed)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)


async def _startup(app: web.Application) -> None:
    app[SAMPLER].start()


async def _shutdown(app: web.Application) -> None:
    if SAMPLER in app:
        await app[SAMPLER].stop()  # open feeds end, so the server's stop does not wait on them
