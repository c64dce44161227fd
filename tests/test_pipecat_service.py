"""Claim: AvatarVideoService in a real Pipecat pipeline takes speech audio as any TTS sends it
(any rate, any channel count, empty or torn frames), gives it back with a face whose mouth
follows it, reports audio it cannot take once and carries on, drops unsaid speech on an
interruption, lets queued speech finish on EndFrame, leaves no task behind when cancelled
mid-utterance, and shares one batching renderer between the pipelines of a process."""
from __future__ import annotations

import asyncio
from functools import cache

import numpy as np
import pytest
from pipecat.frames.frames import (
    EndFrame,
    InterruptionFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)

from integrations.pipecat import AvatarVideoService
from integrations.speech_face import close_shared_engines
from pipecatharness import Run, start, tts_frames
from pipelines.evaluation.lipsync import MouthProbe, mouth_areas, pearson
from pipelines.render.avatar import default_avatar
from pipelines.speech.tts import SpeechSynthesizer
from timing import REALTIME_E2E

SIZE, FPS = 128, 30


@cache
def _speech() -> tuple[np.ndarray, int]:
    u = SpeechSynthesizer("en-us").synthesize("Pack my box with five dozen liquor jugs.")
    return (np.clip(u.audio, -1, 1) * 32767).astype(np.int16), u.sample_rate


def _at(rate: int, channels: int = 1) -> np.ndarray:
    """The test sentence at `rate` Hz, `channels` channels (the same speech in each)."""
    x, r = _speech()
    t = np.arange(int(len(x) * rate / r)) / rate
    y = np.interp(t, np.arange(len(x)) / r, x.astype(np.float64)).astype(np.int16)
    return y[:, None].repeat(channels, 1) if channels > 1 else y


@cache
def _probe() -> MouthProbe:
    return MouthProbe.for_landmarks(default_avatar(SIZE).landmarks)


def _lipsync(run: Run) -> float:
    """Pearson r of mouth opening and loudness over the frames that carried speech and the
    idle frames around them: each image against its own slice of the audio."""
    pairs = run.pairs()
    mouth = mouth_areas([img for img, _ in pairs], _probe())
    loud = np.array([-50.0 if a is None else 10 * np.log10(np.mean((a / 32768.0) ** 2) + 1e-10) for _, a in pairs])
    return pearson(mouth, np.maximum(loud - loud.max(), -50.0))


def _gaps(run: Run) -> float:
    times = [t for t, _ in run.out(OutputImageRawFrame)]
    return float(np.max(np.diff(times)))


async def _say(run: Run, frames: list[TTSAudioRawFrame], seconds: float) -> None:
    await run.worker.queue_frames([*frames, TTSStoppedFrame()])
    await asyncio.sleep(seconds + 0.8)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (22050, 1), (44100, 2), (48000, 6)])
def test_speech_at_any_rate_and_channel_count_comes_back_with_a_mouth_that_follows_it(rate: int, channels: int) -> None:
    async def scenario() -> Run:
        run = await start(AvatarVideoService(size=SIZE, fps=FPS))
        speech = _at(rate, channels)
        await _say(run, tts_frames(speech, rate), len(speech) / rate)
        await run.worker.cancel()
        await run.finish()
        await close_shared_engines()
        return run

    run = asyncio.run(scenario())
    sent = len(_at(rate)) / rate
    out, out_rate = run.speech()
    assert out_rate == rate  # the TTS's own rate back, in mono
    assert abs(len(out) / rate - sent) <= 2 / FPS, (len(out) / rate, sent)
    assert run.errors() == []
    assert _lipsync(run) >= 0.5, _lipsync(run)
    # the stop came out after the last of its speech
    kinds = [type(f) for _, f in run.down.frames if isinstance(f, TTSAudioRawFrame | TTSStoppedFrame)]
    assert TTSStoppedFrame in kinds and kinds.index(TTSStoppedFrame) == len(kinds) - 1
    assert _gaps(run) < 0.25  # frames all along


@pytest.mark.timeout(120)
def test_audio_it_cannot_take_is_reported_once_and_the_face_goes_on() -> None:
    async def scenario() -> Run:
        run = await start(AvatarVideoService(size=SIZE, fps=FPS))
        good = _at(16000)
        bad = [TTSAudioRawFrame(audio=good[:320].tobytes(), sample_rate=4000, num_channels=1),
               TTSAudioRawFrame(audio=good[:320].tobytes(), sample_rate=16000, num_channels=12),
               TTSAudioRawFrame(audio=b"", sample_rate=16000, num_channels=1),  # empty
               TTSAudioRawFrame(audio=good[:321].tobytes()[:-1], sample_rate=16000, num_channels=1)]  # torn
        await run.worker.queue_frames(bad + bad)
        await asyncio.sleep(0.5)
        await _say(run, tts_frames(good, 16000), len(good) / 16000)
        await run.worker.cancel()
        await run.finish()
        await close_shared_engines()
        return run

    run = asyncio.run(scenario())
    errors = run.errors()
    assert len(errors) == 2, errors  # each problem once (a frame of 0 channels Pipecat cannot make)
    assert any("4000 Hz" in e for e in errors) and any("12 channels" in e for e in errors), errors
    out, _ = run.speech()
    sent = len(_at(16000)) / 16000 + 320 / 16000 * 2  # the good sentence and the torn frame, twice
    assert abs(len(out) / 16000 - sent) <= 2 / FPS, (len(out) / 16000, sent)
    assert _lipsync(run) >= 0.5
    assert _gaps(run) < 0.25


@REALTIME_E2E
@pytest.mark.timeout(120)
def test_an_interruption_drops_the_unsaid_speech_at_once() -> None:
    async def scenario() -> tuple[Run, float]:
        run = await start(AvatarVideoService(size=SIZE, fps=FPS))
        speech = np.concatenate([_at(24000)] * 3)  # ~6 s, in a burst, as Piper gives a sentence
        await run.worker.queue_frames(tts_frames(speech, 24000))
        await asyncio.sleep(1.0)
        await run.worker.queue_frame(InterruptionFrame())
        async with asyncio.timeout(5):
            while not any(isinstance(f, InterruptionFrame) for _, f in run.down.frames):
                await asyncio.sleep(0.01)
        at = next(t for t, f in run.down.frames if isinstance(f, InterruptionFrame))
        await asyncio.sleep(1.0)
        await _say(run, tts_frames(_at(24000), 24000), len(_at(24000)) / 24000)  # and it speaks again
        await run.worker.cancel()
        await run.finish()
        await close_shared_engines()
        return run, at

    run, at = asyncio.run(scenario())
    audio = run.out(TTSAudioRawFrame)
    after = [t for t, _ in audio if t > at]
    resumed = [t for t in after if t > at + 0.9]
    cut = [t for t in after if t <= at + 0.9]
    # what was already made when the interruption came (the lead frames) is all that follows it
    assert len(cut) <= 3, [round(t - at, 3) for t in cut]
    assert resumed, "it did not speak again"
    total = sum(len(f.audio) // 2 for _, f in audio) / 24000
    assert total < 1.3 + len(_at(24000)) / 24000 + 0.2, total
    assert _gaps(run) < 0.25


@pytest.mark.timeout(120)
def test_end_lets_queued_speech_finish_and_cancel_mid_utterance_leaves_no_task() -> None:
    async def scenario() -> tuple[Run, Run, set[asyncio.Task[object]], set[asyncio.Task[object]]]:
        ending = await start(AvatarVideoService(size=SIZE, fps=FPS))
        speech = _at(22050)
        await ending.worker.queue_frames([*tts_frames(speech, 22050), TTSStoppedFrame(), EndFrame()])
        await ending.finish(timeout=20)

        before = set(asyncio.all_tasks())
        cancelled = await start(AvatarVideoService(size=SIZE, fps=FPS))
        await cancelled.worker.queue_frames(tts_frames(np.concatenate([speech] * 3), 22050))
        await asyncio.sleep(1.0)  # mid-utterance
        await cancelled.worker.cancel()
        await cancelled.finish(timeout=10)
        await asyncio.sleep(0.1)
        after = {t for t in asyncio.all_tasks() if not t.done()}
        await close_shared_engines()
        return ending, cancelled, before, after

    ending, cancelled, before, after = asyncio.run(scenario())
    out, _ = ending.speech()
    assert abs(len(out) / 22050 - len(_at(22050)) / 22050) <= 2 / FPS  # all of it, before the end
    kinds = [type(f) for _, f in ending.down.frames if isinstance(f, TTSAudioRawFrame | TTSStoppedFrame | EndFrame)]
    assert kinds[-2:] == [TTSStoppedFrame, EndFrame], kinds[-3:]
    leaked = [t.get_name() for t in after - before]
    assert leaked == [], leaked
    out, _ = cancelled.speech()
    assert 0.5 < len(out) / 22050 < 1.6  # it had been speaking, and stopped with the cancel


@pytest.mark.timeout(120)
def test_two_pipelines_in_one_process_share_one_batching_renderer() -> None:
    async def scenario() -> tuple[Run, Run, AvatarVideoService, AvatarVideoService, float]:
        a, b = AvatarVideoService(size=SIZE, fps=FPS), AvatarVideoService(size=SIZE, fps=FPS)
        ra, rb = await start(a), await start(b)
        assert a.engines is b.engines and a.engines is not None and a.engines.renderer is not None
        stats = a.engines.renderer.stats
        calls0, items0 = stats.calls, stats.items
        speech = _at(16000)
        await asyncio.gather(_say(ra, tts_frames(speech, 16000), len(speech) / 16000),
                             _say(rb, tts_frames(speech, 16000), len(speech) / 16000))
        mean_batch = (stats.items - items0) / max(1, stats.calls - calls0)
        for r in (ra, rb):
            await r.worker.cancel()
            await r.finish()
        await close_shared_engines()
        return ra, rb, a, b, mean_batch

    ra, rb, _, _, mean_batch = asyncio.run(scenario())
    assert mean_batch >= 1.6, mean_batch  # the two faces' frames drawn together
    for run in (ra, rb):
        assert _lipsync(run) >= 0.5
        assert _gaps(run) < 0.25
