"""The example Pipecat agent (examples/pipecat_agent/agent.py) in its own process, and an
aiortc peer that joins it the way its page does (POST /api/offer, a data channel for
{"type": "say" | "interrupt"} messages) and records what arrives (tests/callutil.py)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCSessionDescription

from callutil import CallClient, free_port, read_until, stop_process

AGENT = Path(__file__).resolve().parents[1] / "examples" / "pipecat_agent" / "agent.py"


@contextlib.asynccontextmanager
async def agent_process(*args: str, log: list[str] | None = None) -> AsyncIterator[str]:
    """Runs the example agent on a free port with `args`; yields its base URL once it says
    "agent ready" (its face loaded)."""
    port = free_port()
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(AGENT), "--port", str(port), *args], env=env,
                            cwd=AGENT.parents[2], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = [] if log is None else log
    try:
        await read_until(proc, lines, r"^agent ready$", 120, "the agent")
        yield f"http://127.0.0.1:{port}"
    finally:
        await stop_process(proc)


class AgentPeer(CallClient):
    """Joins the example agent as its page does; `send` puts a message on the data channel."""

    def __init__(self, http: str, **kwargs: Any) -> None:
        super().__init__(http, **kwargs)
        self.answered: float | None = None

    async def start(self) -> int:
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        self.channel = self.pc.createDataChannel("chat")

        @self.pc.on("track")
        def _on_track(track: Any) -> None:
            self._tasks.append(asyncio.ensure_future(self._read(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with aiohttp.ClientSession() as s, s.post(
                f"{self.http}/api/offer", json={"sdp": self.pc.localDescription.sdp, "type": "offer"}) as r:
            if r.status != 200:
                return r.status
            answer = await r.json()
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        for t in self.pc.getTransceivers():
            self._spy_sender_reports(t.receiver, t.kind)
        self.answered = self.mic_started = time.monotonic()
        return 200

    async def send(self, message: dict[str, Any]) -> float:
        """Sends once the channel is open; returns when it went (time.monotonic)."""
        async with asyncio.timeout(10):
            while self.channel.readyState != "open":
                await asyncio.sleep(0.01)
        self.channel.send(json.dumps(message))
        return time.monotonic()
