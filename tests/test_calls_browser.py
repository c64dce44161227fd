"""The call page in real browsers: headless Chromium and Firefox, with fake camera and
microphone, load `/`, start a call, make the avatar say a sentence, and report through
getStats() what they decoded. A screenshot of the page is kept in test-artifacts/."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from browserutil import Browser, FirefoxBrowser, chromium_path, firefox_path
from callutil import server_process

FAKE_MEDIA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("browser_name", ["chromium", "firefox"])
def test_call_page_starts_a_call_and_the_avatar_speaks(browser_name: str) -> None:
    chromium_path() if browser_name == "chromium" else firefox_path()

    async def scenario() -> tuple[dict[str, Any], str]:
        async with server_process(call_size=256, sizes=[256], size=256, voice="en-us") as http:
            browser: Browser | FirefoxBrowser = Browser(FAKE_MEDIA) if browser_name == "chromium" else FirefoxBrowser()
            try:
                await browser.start()
                await browser.open(f"{http}/")
                async with asyncio.timeout(20):
                    while not await browser.eval("!!document.getElementById('start')"):
                        await asyncio.sleep(0.2)
                await browser.eval("document.getElementById('start').click()")
                async with asyncio.timeout(30):
                    while await browser.eval("window.callStats.state") != "connected":
                        await asyncio.sleep(0.2)
                await browser.eval("""(() => { const i = document.getElementById('say-text');
                    i.value = 'Hello from the browser test. I can talk and you can watch me.';
                    document.getElementById('say-button').click(); })()""")
                stats: dict[str, Any] = {}
                async with asyncio.timeout(40):
                    while not (stats.get("framesDecoded", 0) >= 50 and stats.get("audioBytes", 0) > 2000):
                        await asyncio.sleep(0.5)
                        stats = await browser.eval("JSON.parse(JSON.stringify(window.callStats))") or {}
                await asyncio.sleep(1.5)  # stats table refreshes every second
                stats = await browser.eval("JSON.parse(JSON.stringify(window.callStats))")
                shot = await browser.screenshot(f"call-page-{browser_name}.png")
                log = await browser.eval("document.getElementById('log').textContent")
                await browser.eval("document.getElementById('end').click()")
                await asyncio.sleep(0.5)
                return stats, f"{shot}\n{log}"
            finally:
                await browser.close()

    stats, info = asyncio.run(scenario())
    assert stats["framesDecoded"] >= 50, info
    assert stats["audioBytes"] > 2000, info
    assert "utterance_started" in info  # the data channel carried the server's events
