"""Claim: when the shared speech engine cannot keep up, a new utterance is told so — accepted
with the expected wait (`queued.expected_wait_s`) or refused with `busy` beyond
`speech_max_wait_s` — never silently late; utterances already speaking are not cut; and once
the load goes away, utterances are accepted with no wait again (web/stream/session.py,
engines/scheduler.py)."""
from __future__ import annotations

import asyncio
from typing import Any

from web.stream.client import StreamClient
from web.stream.protocol import Config, Done, Error, Queued

from wsutil import running_server

TEXTS = ["The quick brown fox jumps over the lazy dog, and then it runs back into the woods.",
         "A talking head has to keep up with the voice, or nobody believes it is listening."]


async def talker(url: str, k: int, stop: asyncio.Event, dones: list[Done], refused: list[Error]) -> None:
    async with await StreamClient.connect(url, config=Config(size=256)) as c:
        i = 0
        await c.say(TEXTS[k % 2], id=f"b{k}-0")
        async for item in c:
            if isinstance(item, Done):
                dones.append(item)
                if stop.is_set():
                    return
                i += 1
                await c.say(TEXTS[(k + i) % 2], id=f"b{k}-{i}")
            elif isinstance(item, Error) and item.code.value == "busy":
                refused.append(item)
                if stop.is_set():
                    return
                await asyncio.sleep(0.5)
                i += 1
                await c.say(TEXTS[(k + i) % 2], id=f"b{k}-{i}")


async def probe_once(c: StreamClient, ident: str) -> Any:
    """The answer to a say: its Queued (with or without an expected wait) or a busy error."""
    await c.say("Can you answer me now?", id=ident)
    async with asyncio.timeout(60):
        async for item in c:
            if isinstance(item, Queued) and item.id == ident:
                return item
            if isinstance(item, Error) and item.id == ident:
                return item


def test_an_overloaded_voice_says_how_long_it_will_take_and_recovers() -> None:
    async def scenario() -> tuple[list[Any], Any, list[Done], list[Error]]:
        async with running_server(voice="joe", sizes=[256], size=256, max_connections=32,
                                  speech_wait_notice_s=0.05, speech_max_wait_s=0.5) as server:
            stop = asyncio.Event()
            dones: list[Done] = []
            refused: list[Error] = []
            talkers = [asyncio.ensure_future(talker(server.url, k, stop, dones, refused)) for k in range(6)]
            answers = []
            async with await StreamClient.connect(server.url, config=Config(size=256)) as c:
                await asyncio.sleep(4.0)
                for t in range(8):
                    answers.append(await probe_once(c, f"p{t}"))
                    await c.interrupt()  # the probe's own queue stays empty: each answer is the engine's
                    await asyncio.sleep(0.7)
                stop.set()
                await asyncio.wait_for(asyncio.gather(*talkers), 90)
                await asyncio.sleep(3.0)  # the queue drains
                calm = await probe_once(c, "calm")
                async with asyncio.timeout(30):  # and it is spoken
                    async for item in c:
                        if isinstance(item, Done) and item.id == "calm":
                            break
            return answers, calm, dones, refused

    answers, calm, dones, refused = asyncio.run(scenario())
    told = [a for a in answers if (isinstance(a, Queued) and a.expected_wait_s) or
            (isinstance(a, Error) and a.code.value == "busy")]
    assert told, answers  # under load the probe was told, by a wait figure or a refusal
    for a in answers:
        if isinstance(a, Queued) and a.expected_wait_s is not None:
            assert 0.05 < a.expected_wait_s <= 0.5, a
    assert dones and not any(d.interrupted for d in dones), dones  # nobody was cut off
    assert isinstance(calm, Queued) and calm.expected_wait_s is None, calm  # recovered
