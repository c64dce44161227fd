"""Claim: the player page works in real browsers — headless Chromium and Firefox open it, it
connects, says a sentence, decodes H.264 and Opus with WebCodecs and draws frames against
the audio clock.

Driven over a websocket (`websockets` package; tests/browserutil.py): no browser download,
Debian's chromium and firefox-esr. Without them the test fails, with how to install them.
"""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from browserutil import Browser, FirefoxBrowser, chromium_path, firefox_path
from wsutil import running_server


@pytest.mark.timeout(180)
@pytest.mark.parametrize("browser_name", ["chromium", "firefox"])
def test_player_page_plays_a_say_and_reports_decoded_frames(browser_name: str) -> None:
    chromium_path() if browser_name == "chromium" else firefox_path()  # fail early and clearly

    async def scenario() -> dict[str, Any]:
        async with running_server() as server:
            browser: Browser | FirefoxBrowser = Browser() if browser_name == "chromium" else FirefoxBrowser()
            try:
                await browser.start()
                await browser.open(f"http://127.0.0.1:{server.port}/player?autosay=Hello%20there%2C%20browser.&size=256")
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
