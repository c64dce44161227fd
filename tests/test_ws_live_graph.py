"""Claim: the live talking-head stages put speech on the timeline to the frame — streamed text
is cut at real sentence ends, idle frames flow, an utterance lands on the next frame and an
interrupt cuts it at the next frame — under a fake clock, so the figures are exact."""
from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from pipelines.motion.live import LiveArticulate, viseme_track
from pipelines.motion.params import MotionFrame
from pipelines.speech.live import LiveSegment, LiveSynthesize, LiveText, complete_prefix
from pipelines.speech.types import Phoneme, Utterance
from realtime import AudioFrame, Event, FakeClock, Graph, LatePolicy, Session, Stage, StageContext

RATE, FPS = 8000, 25


def test_complete_prefix_waits_for_a_real_sentence_end() -> None:
    assert complete_prefix("Hello world") == 0
    assert complete_prefix("Hello world.") == len("Hello world.")
    assert complete_prefix("Hello world. How are") == len("Hello world.")
    assert complete_prefix("Really?! Yes") == len("Really?!")
    assert complete_prefix("It costs 3.") == 0  # may become 3.5
    assert complete_prefix("Ask Dr.") == 0  # a name follows
    assert complete_prefix('He said "stop."') == len('He said "stop."')
    assert complete_prefix("a line\nand more") == len("a line")
    many = " ".join(["word"] * 45)  # over MAX_WORDS without a boundary: the first 30 go
    assert 0 < complete_prefix(many) < len(many)


def test_live_text_cuts_says_and_appends_into_segments() -> None:
    text = LiveText("text", default_voice="v")
    text.say("s", "One. Two three.", voice="w")
    text.append("a", "Four")
    text.append("a", " five. Six")
    assert text.open_utterance == "a" and text.open_chars == len("Four five. Six")
    text.flush()
    text.append("b", "...")
    text.flush()
    segs = list(text._queue)
    assert [(s.utterance_id, s.text, s.offset, s.index, s.last, s.voice) for s in segs] == [
        ("s", "One.", 0, 0, False, "w"), ("s", "Two three.", 5, 1, True, "w"),
        ("a", "Four five.", 0, 0, False, "v"), ("a", "Six", 11, 1, True, "v"),
        ("b", "", 3, 0, True, "v")]  # nothing to say, but downstream still learns it ended


class FakeTTS:
    """0.2 s of a tone per word, one phoneme per word; instant."""

    async def run(self, items: list[LiveSegment]) -> list[Utterance]:
        words = items[0].text.split()
        n = int(0.2 * RATE) * len(words)
        audio = (0.5 * np.sin(np.arange(n) * 0.3)).astype(np.float32)
        phonemes = [Phoneme("AA", i * 200.0, (i + 1) * 200.0) for i in range(len(words))]
        return [Utterance(items[0].text, audio, RATE, phonemes)]


class Collect(Stage):
    inputs = ("audio", "motion")
    outputs = ()

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.audio: list[tuple[float, AudioFrame]] = []
        self.motion: list[tuple[float, MotionFrame]] = []

    async def run(self, ctx: StageContext) -> None:
        async def drain(port: str, into: list[Any]) -> None:
            async for f in ctx.input(port):
                into.append((ctx.clock.now(), f))

        await asyncio.gather(drain("audio", self.audio), drain("motion", self.motion))


def build(tts: Any = None) -> tuple[Graph, LiveText, Collect]:
    g = Graph("live_test", latency_budget_s=0.1)
    text, sink = LiveText("text", default_voice="v"), Collect("sink")
    tts = tts or FakeTTS()

    async def voices(_: str) -> Any:
        return tts

    g.add(text, LiveSynthesize("tts", voices), LiveArticulate("visemes", fps=FPS, sample_rate=RATE), sink)
    g.link("text.out", "tts.in", capacity=1, policy=LatePolicy.BLOCK)
    g.link("tts.out", "visemes.in", capacity=2, policy=LatePolicy.BLOCK)
    g.link("visemes.audio", "sink.audio", capacity=1000, policy=LatePolicy.BLOCK)
    g.link("visemes.motion", "sink.motion", capacity=1000, policy=LatePolicy.BLOCK)
    return g, text, sink


def test_idle_frames_flow_and_speech_lands_on_the_next_frame() -> None:
    async def scenario() -> tuple[Collect, list[Event], float]:
        clock = FakeClock(100.0)
        g, text, sink = build()
        events: list[Event] = []
        session = Session(g, clock=clock, paced=True, on_event=events.append)
        task = asyncio.create_task(session.run())
        await clock.advance(1.0)
        text.say("u", "one two three")  # 0.6 s of speech
        await clock.advance(2.0)
        text.end()
        await clock.run_until(task, step=0.01, limit=5)
        await task
        return sink, events, session.media_clock.origin or 0.0

    sink, events, origin = asyncio.run(scenario())
    motion = [f for _, f in sink.motion]
    assert [f.pts for f in motion] == list(range(len(motion)))  # a frame every 1/fps, idle or not
    # paced: each frame released at most 2 frames (80 ms) ahead of its media time, never later
    ahead = [origin + f.time - t for t, f in sink.motion if f.pts >= 2]  # frames 0, 1: at once
    assert max(ahead) <= 0.080 + 1e-9 and min(ahead) >= 0.080 - 0.011
    audio = np.concatenate([f.samples for _, f in sink.audio])
    assert [f.pts for _, f in sink.audio][:3] == [0, RATE // FPS, 2 * RATE // FPS]
    started = next(e for e in events if e.kind == "utterance_started").data
    done = next(e for e in events if e.kind == "utterance_done").data
    # the say came at media time ~1.0 + lookahead: it starts at the first frame not yet made
    assert abs(started["media_time"] - 1.08) <= 0.041
    assert abs(done["media_time"] - started["media_time"] - 0.6) < 0.041
    speech = np.abs(audio) > 0.01
    first, last = np.argmax(speech) / RATE, (len(speech) - np.argmax(speech[::-1])) / RATE
    assert abs(first - started["media_time"]) < 0.01 and abs(last - done["media_time"]) < 0.041
    mouth = np.array([f.params[0] for f in motion])
    k0 = round(started["media_time"] * FPS)
    assert mouth[:k0].max() == 0 and mouth[k0:k0 + 15].max() > 0.3  # mouth moves with the speech only
    words = [e.data for e in events if e.kind == "word"]
    assert words == []  # the fake voice gives no words; visemes it does
    vis = next(e for e in events if e.kind == "visemes").data["items"]
    assert vis[0][0] == "aa" and abs(vis[0][2] - started["media_time"]) < 1e-9


def test_interrupt_cuts_the_sentence_at_the_next_frame() -> None:
    async def scenario() -> tuple[Collect, list[Event], float]:
        clock = FakeClock(0.0)
        g, text, sink = build()
        events: list[Event] = []
        session = Session(g, clock=clock, paced=True, on_event=events.append)
        task = asyncio.create_task(session.run())
        await clock.advance(0.5)
        text.say("long", "one two three four five six seven eight nine ten")  # 2 s
        await clock.advance(0.7)
        cut = clock.now() - (session.media_clock.origin or 0.0)
        session.interrupt()
        text.clear()
        await clock.advance(1.0)
        text.end()
        await clock.run_until(task, step=0.01, limit=5)
        await task
        return sink, events, cut

    sink, events, cut = asyncio.run(scenario())
    kinds = [e.kind for e in events]
    assert "utterance_done" not in kinds
    stopped = next(e for e in events if e.kind == "utterance_interrupted").data
    assert cut <= stopped["media_time"] <= cut + 0.08 + 0.041  # the frames already made, then no more
    audio = [(f.time, float(np.abs(f.samples).max())) for _, f in sink.audio if f.epoch == 1]
    assert audio and all(level == 0.0 for _, level in audio)  # after the interrupt: idle, silent
    motion = [f.pts for _, f in sink.motion]
    assert motion == sorted(motion)


def test_viseme_track_merges_repeats() -> None:
    ph = [Phoneme("SIL", 0, 50), Phoneme("M", 50, 100), Phoneme("B", 100, 150), Phoneme("AA", 150, 300)]
    assert viseme_track(ph) == [("sil", "SIL", 0, 50), ("PP", "M", 50, 150), ("aa", "AA", 150, 300)]


class StreamingTTS:
    """Like FakeTTS, but hands out a sentence as a live voice does: the first 0.12 s at once
    (with the whole timeline), then 0.2 s pieces on request, each after `delay` seconds."""

    def __init__(self, clock: FakeClock, delay: float, rate: int = RATE) -> None:
        self.clock, self.delay, self.rate = clock, delay, rate  # rate: the voice's own

    async def run(self, items: list[Any]) -> list[Any]:
        from pipelines.speech.stages import MoreSpeech, SpeechPiece

        item = items[0]
        if isinstance(item, MoreSpeech):
            await self.clock.sleep(self.delay)
            rest: list[np.ndarray] = item.rest  # type: ignore[assignment]
            piece = rest.pop(0)
            return [SpeechPiece(piece, done=not rest)]
        [utt] = await FakeTTS().run(items)
        audio = tone(len(utt.audio) * self.rate // RATE)
        head, step = int(0.12 * self.rate), int(0.2 * self.rate)
        pieces = [audio[i:i + step] for i in range(head, len(audio), step)]
        return [Utterance(utt.text, audio[:head], self.rate, utt.phonemes,
                          pending=len(audio) - head, rest=pieces)]


def tone(n: int) -> np.ndarray:
    return (0.5 * np.sin(np.arange(n) * 0.3)).astype(np.float32)


def run_streamed(delay: float, rate: int = RATE) -> tuple[np.ndarray, np.ndarray, list[Event], LiveArticulate]:
    async def scenario() -> tuple[Collect, list[Event], LiveArticulate]:
        clock = FakeClock(0.0)
        g, text, sink = build(StreamingTTS(clock, delay, rate))
        articulate = g.stages["visemes"]
        assert isinstance(articulate, LiveArticulate)
        events: list[Event] = []
        session = Session(g, clock=clock, paced=True, on_event=events.append)
        task = asyncio.create_task(session.run())
        await clock.advance(0.5)
        text.say("u", "one two three four five")  # 1 s of speech
        await clock.advance(2.0)
        text.end()
        await clock.run_until(task, step=0.01, limit=5)
        await task
        return sink, events, articulate

    sink, events, articulate = asyncio.run(scenario())
    audio = np.concatenate([f.samples for _, f in sink.audio])
    mouth = np.array([f.params[0] for _, f in sink.motion])
    return audio, mouth, events, articulate


def test_a_streamed_sentence_plays_seamlessly_when_its_pieces_keep_up() -> None:
    audio, mouth, events, articulate = run_streamed(delay=0.05)
    started = next(e for e in events if e.kind == "utterance_started").data["media_time"]
    done = next(e for e in events if e.kind == "utterance_done").data["media_time"]
    assert done - started == pytest.approx(1.0, abs=0.041)  # the whole timeline, scheduled at once
    s0 = round(started * RATE)
    n = int(0.2 * RATE) * 5
    np.testing.assert_array_equal(audio[s0:s0 + n], tone(n))  # every piece in place, no gap
    assert articulate.underrun_frames == 0
    assert mouth[round(started * FPS) + 20] > 0.3  # still talking in the last pieces


def test_a_streamed_voice_at_another_rate_is_resampled_across_its_pieces() -> None:
    voice_rate = 3 * RATE // 2
    audio, _, events, articulate = run_streamed(delay=0.05, rate=voice_rate)
    started = next(e for e in events if e.kind == "utterance_started").data["media_time"]
    s0, n = round(started * RATE), RATE  # one second of speech
    src = tone(voice_rate)
    expected = np.interp(np.arange(n) * voice_rate / RATE, np.arange(len(src)), src)
    # one interpolation over the whole sentence: the joins between pieces leave no trace
    np.testing.assert_allclose(audio[s0:s0 + n - 1], expected[:-1], atol=1e-6)
    assert articulate.underrun_frames == 0


def test_a_late_piece_leaves_a_gap_not_a_shift() -> None:
    audio, _, events, articulate = run_streamed(delay=0.3)  # slower than the audio it makes
    started = next(e for e in events if e.kind == "utterance_started").data["media_time"]
    done = next(e for e in events if e.kind == "utterance_done").data["media_time"]
    assert done - started == pytest.approx(1.0, abs=0.041)  # lips keep their schedule
    assert articulate.underrun_frames > 0
    s0 = round(started * RATE)
    spoken = audio[s0:s0 + RATE]
    assert np.abs(spoken[: int(0.12 * RATE)]).max() > 0.4  # the first words play
    assert (np.abs(spoken) < 1e-9).sum() > 0.1 * RATE  # then silence where pieces came late


def test_a_piece_too_late_to_be_heard_is_not_waited_for() -> None:
    """A sentence whose continuation never comes in time (an overloaded speech engine) ends on
    schedule, and the session's next utterance starts when it is said — not after synthesis
    nobody would hear any more (it used to wait for it, seconds under load)."""
    async def scenario() -> list[Event]:
        clock = FakeClock(0.0)
        g, text, sink = build(StreamingTTS(clock, delay=3.0))  # each piece 3 s late: never in time
        events: list[Event] = []
        session = Session(g, clock=clock, paced=True, on_event=events.append)
        task = asyncio.create_task(session.run())
        await clock.advance(0.5)
        text.say("u", "one two three four five")  # 1 s of speech, all but 0.12 s of it late
        await clock.advance(1.5)
        text.say("v", "six seven")  # said at 2.0 s: u ended at ~1.6 s
        await clock.advance(4.0)
        text.end()
        await clock.run_until(task, step=0.01, limit=5)
        await task
        return events

    events = asyncio.run(scenario())
    started = {e.data["utterance_id"]: e.data["media_time"] for e in events if e.kind == "utterance_started"}
    assert set(started) == {"u", "v"}, events
    # v starts as soon after it is said as u did (0.1 s here), not when u's piece comes (3.6 s)
    assert started["v"] - 2.0 == pytest.approx(started["u"] - 0.5, abs=0.05), started
    abandoned = [e for e in events if e.kind == "segment_abandoned"]
    assert abandoned and abandoned[0].data["utterance_id"] == "u", abandoned
