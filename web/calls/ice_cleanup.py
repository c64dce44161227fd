"""Ends ICE consent checks that aioice leaves running after a peer connection closes.

aioice 0.13 (with aiortc 1.16): when `Connection.close()` runs after the check list has
completed but before `connect()` has resumed to read that result, `connect()` then starts the
consent-freshness task (RFC 7675) on the closed connection. That task never ends: it loops
over the nominated pairs, which close() emptied, sleeping 4-6 s a turn. On a server that is
one task for good per call that ended at that instant (seen: CI's 100-cycle test found one
task over its baseline after 30 s; `tests/test_ice_cleanup.py` reproduces the interleaving).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


def ice_connections(pc: Any) -> list[Any]:
    """The aioice connections under a peer connection's transceivers and data channels
    (one with BUNDLE). Read through aiortc's transports; missing links (a call that failed
    before its transports existed) are skipped."""
    found: dict[int, Any] = {}
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        ice = getattr(dtls, "transport", None)
        conn = getattr(getattr(ice, "iceGatherer", None), "_connection", None)
        if conn is not None:
            found[id(conn)] = conn
    return list(found.values())


async def stop_orphan_consent_checks(connections: Iterable[Any]) -> int:
    """Call after the connections were closed. Cancels and awaits their consent task when it
    is still running; returns how many there were."""
    await asyncio.sleep(0)  # a connect() already woken runs first and shows its task
    stopped = 0
    for conn in connections:
        task = getattr(conn, "_query_consent_task", None)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            stopped += 1
    if stopped:
        log.info("stopped %d ICE consent check(s) left running after close", stopped)
    return stopped
