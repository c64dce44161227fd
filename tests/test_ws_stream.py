"""Claim: `/v1/stream` end to end gives a client decodable H.264 and Opus/PCM of the avatar
saying what it was sent, word and viseme timings, interrupts that cut, and nothing left
running after a close (a real server on a random port, the client library, PyAV decoding).

The stream is paced (real time): each test lasts about as long as what it makes the avatar say;
its timing bounds are generous (wall clock on 2 cores), the exact ones are fake-clock tests
(tests/test_ws_live_graph.py).
"""
from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from web.stream.client import MediaDecoder, MediaPacket, StreamClient
from web.stream.protocol import Config, Done, Error, Queued, Started, Viseme, Word

from mediafile import decode
from wsutil import running_server

TEXT = "Hello there. The quick brown fox jumps over the lazy dog."


async def collect_until_done(client: StreamClient, ident: str, timeout: float = 30.0) -> list[Any]:
    items: list[Any] = []
    async with asyncio.timeout(timeout):
        async for item in client:
            items.append(item)
            if isinstance(item, Done) and item.id == ident:
                return items
            if isinstance(item, Error) and item.fatal:
                raise AssertionError(item)
    raise AssertionError(f"closed ({client.close_code}) before done")


def decode_all(client: StreamClient, packets: list[MediaPacket]) -> tuple[list[av.VideoFrame], list[av.AudioFrame]]:
    decoder = MediaDecoder(client.ready)
    video, audio = [], []
    for p in packets:
        for f in decoder.decode(p):
            (video if isinstance(f, av.VideoFrame) else audio).append(f)
    return video, audio


# joe: the natural voice hands out each sentence in pieces (first words, then the rest while
# they play); the words must still hold speech and the audio be contiguous.
@pytest.mark.parametrize("codec,voice", [("opus", "en-us"), ("pcm", "en-us"), ("pcm", "joe")])
def test_say_stream_decodes_with_pyav(codec: str, voice: str) -> None:
    async def scenario() -> tuple[StreamClient, list[Any]]:
        async with running_server() as server:
            async with await StreamClient.connect(server.url, config=Config(audio=codec)) as client:
                await client.say(TEXT, id="fox", voice=voice)
                return client, await collect_until_done(client, "fox")

    client, items = asyncio.run(scenario())
    ready = client.ready
    events = [i for i in items if not isinstance(i, MediaPacket)]
    packets = [i for i in items if isinstance(i, MediaPacket)]
    [queued] = [e for e in events if isinstance(e, Queued)]
    [started] = [e for e in events if isinstance(e, Started)]
    done = events[-1]
    assert queued.id == started.id == done.id == "fox" and not done.interrupted
    assert started.text == "Hello there."
    assert ready.audio.codec == ("opus" if codec == "opus" else "pcm_s16le")

    video_packets = [p for p in packets if p.stream == "video"]
    audio_packets = [p for p in packets if p.stream == "audio"]
    # timestamps: video one tick per frame from 0, audio contiguous, both monotonic
    v_pts = [p.pts for p in video_packets]
    assert v_pts[0] == 0 and np.all(np.diff(v_pts) >= 1)
    assert v_pts == list(range(len(v_pts)))  # nothing dropped on a healthy connection
    a_pts = np.array([p.pts for p in audio_packets])
    a_end = np.array([p.pts + p.duration for p in audio_packets])
    assert np.all(a_pts[1:] == a_end[:-1])
    assert video_packets[0].keyframe
    first_speech = [p for p in video_packets if p.pts == round(started.media_time * ready.video.fps)]
    assert first_speech and first_speech[0].keyframe and first_speech[0].start  # keyframe at utterance start

    video, audio = decode_all(client, packets)
    assert len(video) == len(video_packets)  # every frame decodes
    assert (video[0].width, video[0].height) == (ready.video.width, ready.video.height)
    assert [f.pts for f in video] == v_pts
    fps = ready.video.fps
    assert (v_pts[-1] + 1) / fps >= done.media_time  # video covers the utterance...
    samples = np.concatenate([f.to_ndarray().reshape(-1).astype(np.float32) for f in audio]) / 32768.0 \
        if audio[0].format.name.startswith("s16") else np.concatenate([f.to_ndarray().reshape(-1) for f in audio])
    rate = ready.audio.sample_rate
    t0 = float(audio[0].pts) / rate  # opus starts pre-skip samples before 0
    assert t0 <= 0.0 and t0 + len(samples) / rate >= done.media_time  # ... and so does audio

    def rms(a: float, b: float) -> float:
        seg = samples[int((a - t0) * rate):int((b - t0) * rate)]
        return float(np.sqrt(np.mean(seg ** 2))) if len(seg) else 0.0

    assert rms(0.0, started.media_time) < 0.005  # idle before: silence
    words = [e for e in events if isinstance(e, Word)]
    assert [w.text.lower().strip(".,") for w in words][:4] == ["hello", "there", "the", "quick"]
    for w in words:
        assert started.media_time <= w.start < w.end <= done.media_time + 1e-6  # inside the utterance
        assert TEXT[w.char_start:w.char_end].lower().strip(".") == w.text.lower().strip(".")
    loud = [rms(w.start, w.end) > 0.02 for w in words]
    assert sum(loud) >= len(words) - 1, loud  # and each word's interval holds speech
    assert np.all(np.diff([w.start for w in words]) > 0)
    visemes = [e for e in events if isinstance(e, Viseme)]
    assert {"PP", "aa", "sil"} <= {v.viseme for v in visemes}  # brown, jumps; silence around


def test_append_word_by_word_speaks_at_the_first_sentence_boundary() -> None:
    words = "So this arrives one word at a time. And the rest follows later on".split()

    async def scenario() -> tuple[float, float, float, Started, list[Any]]:
        async with running_server() as server:
            async with await StreamClient.connect(server.url) as client:
                items: list[Any] = []

                async def reader() -> None:
                    async for item in client:
                        items.append(item)
                        if isinstance(item, Done):
                            return

                task = asyncio.create_task(reader())
                t_boundary = None
                for i, w in enumerate(words):
                    await client.append(("" if i == 0 else " ") + w, id="llm")
                    if w.endswith("."):
                        t_boundary = time.monotonic()
                    await asyncio.sleep(0.05)
                await client.flush()
                await asyncio.wait_for(task, 30)
                started = next(i for i in items if isinstance(i, Started))
                first = {s: next(p.received for p in items if isinstance(p, MediaPacket) and p.stream == s
                                 and p.end > started.media_time) for s in ("video", "audio")}
                assert t_boundary is not None
                return first["video"] - t_boundary, first["audio"] - t_boundary, t_boundary, started, items

    video_s, audio_s, _, started, items = asyncio.run(scenario())
    assert started.text == "So this arrives one word at a time."
    assert video_s <= 0.300 and audio_s <= 0.300, (video_s, audio_s)
    said = " ".join(w.text for w in items if isinstance(w, Word))
    assert "rest" in said and "later" in said  # the flushed remainder was spoken too
    [done] = [i for i in items if isinstance(i, Done)]
    assert done.id == "llm" and not done.interrupted


def test_interrupt_cuts_speech_and_the_avatar_goes_on() -> None:
    async def scenario() -> tuple[list[Any], float]:
        async with running_server() as server:
            async with await StreamClient.connect(server.url, config=Config(audio="pcm")) as client:
                await client.say("This is a long sentence that will never be finished, because I interrupt "
                                 "it half way through, and then say something else instead.", id="long")
                items: list[Any] = []
                t_cut, interrupted = None, False
                async with asyncio.timeout(30):
                    async for item in client:
                        items.append(item)
                        if isinstance(item, Started) and item.id == "long":
                            t_cut = item.media_time + 0.8
                        if isinstance(item, MediaPacket) and t_cut is not None and item.time >= t_cut \
                                and not interrupted:
                            interrupted = True  # once: the done for "long" comes a little later
                            await client.interrupt()
                            await client.say("Short.", id="short")
                        if isinstance(item, Done) and item.id == "short":
                            break
                return items, t_cut or 0.0

    items, t_cut = asyncio.run(scenario())
    dones = {d.id: d for d in items if isinstance(d, Done)}
    assert dones["long"].interrupted and not dones["short"].interrupted
    assert abs(dones["long"].media_time - t_cut) < 0.3  # reported where it was cut
    starts = {s.id: s.media_time for s in items if isinstance(s, Started)}
    assert starts["short"] < dones["long"].media_time + 0.5  # the next one starts at once
    audio = sorted((p for p in items if isinstance(p, MediaPacket) and p.stream == "audio"), key=lambda p: p.pts)
    assert all(b.pts == a.pts + a.duration for a, b in zip(audio, audio[1:]))  # still continuous
    pcm = np.concatenate([np.frombuffer(p.data, "<i2") for p in audio]).astype(np.float32) / 32768
    rate = 48000
    gap = pcm[int((dones["long"].media_time + 0.15) * rate):int((starts["short"]) * rate)]
    assert len(gap) == 0 or float(np.abs(gap).max()) < 0.01  # the long sentence did stop


def test_closing_the_websocket_leaves_nothing_running() -> None:
    async def scenario() -> tuple[int, int, int, int]:
        async with running_server() as server:
            tasks0, threads0 = len(asyncio.all_tasks()), threading.active_count()
            for _ in range(2):
                client = await StreamClient.connect(server.url)
                await client.say("Closing in the middle of this sentence, on purpose.")
                async for item in client:
                    if isinstance(item, Started):
                        break
                await asyncio.sleep(0.3)
                await client.close()
            async with asyncio.timeout(10):
                while server.state.connections or len(asyncio.all_tasks()) > tasks0:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            return tasks0, len(asyncio.all_tasks()), threads0, threading.active_count()

    tasks0, tasks1, threads0, threads1 = asyncio.run(scenario())
    assert tasks1 == tasks0
    assert threads1 == threads0  # the per-session encoder threads are gone too


def test_a_failing_stage_ends_that_session_only() -> None:
    """A stage that raises (here the renderer, with an error that is not a dead engine) ends
    its session with a fatal error event and 1011; other sessions go on. (A failing
    synthesizer only skips its sentence: tests/test_faults.py.)"""
    async def scenario() -> tuple[list[Any], int | None, list[Any]]:
        async with running_server() as server:
            engines = server.state.engines
            real_renderer = engines.renderer
            handed: list[Any] = []

            class Exploding:
                async def run(self, items: list[Any]) -> list[Any]:
                    raise RuntimeError("the renderer exploded")

            async def renderer(avatar: str, size: int) -> Any:
                real = await real_renderer(avatar, size)
                handed.append(real)
                return Exploding() if len(handed) == 1 else real  # the first stream's only

            engines.renderer = renderer  # type: ignore[method-assign]
            async with await StreamClient.connect(server.url) as victim:
                victim_items = [i async for i in victim]  # until the server closes it
                code = victim.close_code
            async with await StreamClient.connect(server.url) as bystander:
                await bystander.say("I am fine, thank you.", id="fine")
                bystander_items = await collect_until_done(bystander, "fine")
            return victim_items, code, bystander_items

    victim_items, code, bystander_items = asyncio.run(scenario())
    errors = [i for i in victim_items if isinstance(i, Error)]
    assert errors and errors[-1].fatal and errors[-1].code.value == "session_failed"
    assert "exploded" in errors[-1].message
    assert code == 1011
    assert any(isinstance(i, Done) and i.id == "fine" for i in bystander_items)


def test_avatar_client_say_records_a_playable_mp4(tmp_path: Path) -> None:
    out = tmp_path / "said.mp4"

    async def scenario() -> tuple[int, str]:
        async with running_server() as server:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "avatar", "client", "say", "Recorded over a websocket.", "--url", server.url,
                "-o", str(out), "--audio", "opus", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            stdout, _ = await asyncio.wait_for(proc.communicate(), 120)
            return proc.returncode or 0, stdout.decode()

    rc, output = asyncio.run(scenario())
    assert rc == 0, output
    media = decode(str(out))
    assert media.video_codec == "h264" and media.audio_codec == "aac"
    assert (media.width, media.height) == (256, 256)
    assert media.video_seconds > 1.5
    assert abs(media.video_seconds - media.audio_seconds) <= 1 / 25 + 0.035  # AAC frames are 32 ms
    assert np.allclose(np.diff(media.video_pts_s), 1 / 25)
    assert float(np.sqrt(np.mean(media.audio ** 2))) > 0.01  # speech, not silence
