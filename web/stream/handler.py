"""The `/v1/stream` route: who may connect (the connection limit; token and origin are checked
for every route by web/security.py), then one `StreamConnection` per websocket."""
from __future__ import annotations

import itertools
import logging
import socket
from dataclasses import dataclass, field

from aiohttp import web

from realtime import RuntimeMetrics

from ..requests import ApiError
from ..resources import SharedEngines
from ..settings import ServerSettings
from .session import StreamConnection
from .protocol import CloseCode

log = logging.getLogger(__name__)


@dataclass
class StreamState:
    """Per-application state of the stream endpoint (in the app, never module-level)."""

    settings: ServerSettings
    engines: SharedEngines
    metrics: RuntimeMetrics
    connections: set[StreamConnection] = field(default_factory=set)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    draining: bool = False  # stopping: new connections are refused (503)


STREAM = web.AppKey("stream", StreamState)


async def stream_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[STREAM]
    s = state.settings
    # token and Origin: checked for every route by web/security.py before this runs
    if state.draining:
        raise ApiError(503, "draining", "the server is stopping; connect to another one",
                       **{"Retry-After": str(s.retry_after_s)})
    # No heartbeat: media flows all the time, and a dead or stalled peer shows up in the send
    # queue (4008), where a heartbeat would close a merely slow one with 1006 first.
    ws = web.WebSocketResponse(max_msg_size=s.max_message_bytes, compress=False, heartbeat=None, autoping=True,
                               timeout=s.slow_client_timeout_s, writer_limit=max(16384, s.socket_send_buffer))
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "not_websocket", "this endpoint speaks websocket only (see /v1/stream/schema)")
    await ws.prepare(request)
    if len(state.connections) >= s.max_connections:
        await ws.close(code=CloseCode.TRY_AGAIN_LATER,
                       message=f"server at its limit of {s.max_connections} connections".encode())
        return ws
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and s.socket_send_buffer:
        # A fixed send buffer (instead of autotuned megabytes) makes a stalled reader show up
        # in our own queue within seconds, where the policy can act on it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, s.socket_send_buffer)
    conn = StreamConnection(ws, transport, settings=s, engines=state.engines, metrics=state.metrics,
                            conn_id=f"c{next(state.ids)}")
    state.connections.add(conn)
    log.info("%s: connected from %s", conn.id, request.remote)
    try:
        await conn.serve()
    finally:
        state.connections.discard(conn)
        log.info("%s: closed (%s)", conn.id, conn.close_code or ws.close_code)
    return ws


async def close_all(state: StreamState) -> None:
    """Server shutdown: every stream gets 1001."""
    for conn in list(state.connections):
        conn.close(CloseCode.GOING_AWAY, "server shutting down")
