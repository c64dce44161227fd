"""Claim: a call closed at the instant its ICE checks complete leaves no task behind (aioice 0.13
starts a consent-check task on the closed connection then; web/calls/ice_cleanup.py ends it)."""
from __future__ import annotations

import asyncio

import aioice
from aiortc import RTCPeerConnection

from web.calls.ice_cleanup import ice_connections, stop_orphan_consent_checks


async def _close_when_checks_complete(pc: RTCPeerConnection, conn: aioice.Connection) -> None:
    """Polls every loop turn; closes `pc` once the check list is done but before connect()
    resumed to start the consent checks — the interleaving that leaks."""
    for _ in range(200_000):
        if conn._check_list_done and conn._query_consent_task is None:
            await pc.close()
            return
        await asyncio.sleep(0)
    raise AssertionError("the ICE checks never completed")


def test_closing_as_ice_completes_leaves_no_task_running() -> None:
    async def scenario() -> tuple[int, int, int, int]:
        baseline = len(asyncio.all_tasks())
        caller, server = RTCPeerConnection(), RTCPeerConnection()
        caller.createDataChannel("control")
        await caller.setLocalDescription(await caller.createOffer())
        await server.setRemoteDescription(caller.localDescription)
        await server.setLocalDescription(await server.createAnswer())
        conns = ice_connections(server)
        assert len(conns) == 1 and isinstance(conns[0], aioice.Connection)  # BUNDLE: one
        await caller.setRemoteDescription(server.localDescription)
        await _close_when_checks_complete(server, conns[0])
        await caller.close()
        await asyncio.sleep(0.2)  # every task that is going to end has ended
        left_by_aiortc = len(asyncio.all_tasks()) - baseline
        stopped = 0
        for pc in (server, caller):  # the caller closed right after: it may have been caught too
            stopped += await stop_orphan_consent_checks(ice_connections(pc))
        await asyncio.sleep(0.2)
        return left_by_aiortc, stopped, len(asyncio.all_tasks()), baseline

    left_by_aiortc, stopped, tasks, baseline = asyncio.run(scenario())
    assert tasks == baseline, (left_by_aiortc, stopped)
    # What was left was the consent task, and only that: (0, 0) once aioice fixes the race.
    assert left_by_aiortc == stopped, (left_by_aiortc, stopped)
