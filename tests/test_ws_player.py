"""The player page in a real browser: headless Chromium opens it, it connects, says a sentence,
decodes H.264 and Opus with WebCodecs and draws frames against the audio clock.

Chromium is driven over the DevTools protocol (a websocket, `websockets` package): no browser
download, Debian's /usr/bin/chromium. Without it the test fails, with how to install it.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
from typing import Any

import pytest
from websockets.asyncio.client import connect

from wsutil import running_server

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--autoplay-policy=no-user-gesture-required", "--remote-debugging-port=0"]


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("headless Chromium is needed for the player test: apt-get install -y chromium "
                    "(or set CHROMIUM=/path/to/chrome)", pytrace=False)
    return path


class Browser:
    """Just enough of the DevTools protocol: open a page, evaluate JavaScript in it."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self._ids = itertools.count(1)
        self.ws: Any = None
        self.session: str | None = None

    async def start(self) -> None:
        self.proc = subprocess.Popen([chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        url = None
        async with asyncio.timeout(30):
            while url is None:
                line = (await asyncio.to_thread(self.proc.stderr.readline)).decode(errors="replace")
                if not line and self.proc.poll() is not None:
                    raise RuntimeError(f"chromium exited with {self.proc.returncode}")
                m = re.search(r"DevTools listening on (ws://\S+)", line)
                url = m.group(1) if m else None
        self.ws = await connect(url, max_size=None, ping_interval=None)

    async def call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> Any:
        ident = next(self._ids)
        msg: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        await self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    async def open(self, url: str) -> None:
        target = await self.call("Target.createTarget", {"url": url}, session=False)
        attached = await self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                   session=False)
        self.session = attached["sessionId"]

    async def eval(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 10)
            except TimeoutError:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.mark.timeout(180)
def test_player_page_plays_a_say_and_reports_decoded_frames() -> None:
    chromium_path()  # fail early and clearly when the browser is missing

    async def scenario() -> dict[str, Any]:
        async with running_server() as server:
            browser = Browser()
            try:
                await browser.start()
                await browser.open(f"http://127.0.0.1:{server.port}/?autosay=Hello%20there%2C%20browser.&size=256")
                stats: dict[str, Any] = {}
                async with asyncio.timeout(60):
                    while not (stats and stats.get("done")):
                        await asyncio.sleep(0.25)
                        stats = await browser.eval("JSON.parse(JSON.stringify(window.playerStats || {}))") or {}
                await asyncio.sleep(0.5)  # let the last frames reach their time and be drawn
                return await browser.eval("JSON.parse(JSON.stringify(window.playerStats))")
            finally:
                await browser.close()

    stats = asyncio.run(scenario())
    assert stats["errors"] == []
    assert stats["ready"]["video"]["codec"] == "h264" and stats["ready"]["audio"]["codec"] == "opus"
    [started], [done] = stats["started"], stats["done"]
    assert not done["interrupted"]
    speech_s = done["media_time"] - started["media_time"]
    assert speech_s > 0.5
    fps = stats["ready"]["video"]["fps"]
    # everything up to the end of the utterance was decoded (idle frames before it too)
    assert stats["decodedFrames"] >= done["media_time"] * fps - 2
    assert stats["drawnFrames"] >= speech_s * fps * 0.8  # drawn against the audio clock
    assert stats["audioSeconds"] >= done["media_time"] - 0.05
    assert stats["keyframes"] >= 2  # stream start and utterance start
    assert stats["events"]["word"] >= 3
