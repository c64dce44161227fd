"""A face for someone else's speech: speech audio in (any rate, any channels, in bursts, as a
voice agent's TTS gives it), video frames with that audio out, on a media clock.

    push_audio ─► timeline (speech placed on the frame grid; the output's own audio, mono)
               └► 16 kHz ─► lip model (engine thread, a stream per stretch of speech) ─► mouth track
    frames():  every 1/fps ─► that frame's audio + the mouth at its middle ─► idle life
               ─► renderer (shared, batched across faces) ─► FaceFrame(image, audio)

It is framework-free: the Pipecat service (integrations/pipecat) is a thin adapter around
it, and a LiveKit avatar runner would be another (docs/pipecat.md).

Timing. Frame k is due at `origin + k / fps` and is made `lead_frames` before that (the
transport downstream plays out in real time and needs a little queued). Speech that arrives
while the face is idle starts at the first frame not yet made, or, when its first chunk is
shorter than the lip model's look-ahead plus a frame (a TTS that streams in real time), one
look-ahead later: the model must hear 40 ms past an instant before it can say how the mouth
looks then. Speech that arrives while earlier speech is still queued follows it, sample for
sample. A stretch of speech ends when the frames reach its last sample; what comes after
starts a new stretch (a fresh model stream).

Every face of one `FaceEngines` uses the same frame grid (one origin), so frames of several
pipelines reach the shared renderer together and are drawn in one batch.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines import EngineDied, EngineWorker
from engines.batcher import Batcher, BatchPolicy
from pipelines.audio.resample import MAX_RATE, MIN_RATE, StreamingResampler
from pipelines.motion.audio_model import StreamingAudioToMotion
from pipelines.motion.idle import Liveliness
from pipelines.motion.params import MOUTH, N_PARAMS

log = logging.getLogger(__name__)

MODEL_RATE = 16000
MAX_CHANNELS = 8
LOOKAHEADS_MS = (0, 20, 40, 60, 80, 100, 120)  # the shipped lip model's heads
MODEL_CALL_MAX_S = 0.2  # the most speech the lip model hears in one call
INPUT_QUIET_S = 0.1  # no audio for this long, at the end of what was said: the speaker is done


class FaceEngines:
    """The lip model and the renderer of one portrait at one size, loaded once and shared by
    every face (pipeline) that uses them in this process. `start()` loads them (seconds, in
    threads); `close()` stops their threads."""

    def __init__(self, *, portrait: str | Path | None = None, size: int = 256, device: str = "cpu",
                 max_batch: int = 8) -> None:
        if size < 64 or size > 1024 or size % 2:
            raise ValueError(f"size must be an even number of pixels from 64 to 1024, got {size}")
        self.portrait, self.size, self.device, self.max_batch = portrait, size, device, max_batch
        self.motion: EngineWorker[Any, Any] | None = None
        self.renderer: Batcher[Any, Any] | None = None
        self.landmarks: np.ndarray | None = None  # the portrait's face mesh at `size` (for probes)
        self.origin = time.monotonic()  # the frame grid every face of these engines is on
        self._started: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._started is None:
            self._started = asyncio.ensure_future(self._load())
        await asyncio.shield(self._started)

    async def _load(self) -> None:
        from pipelines.motion.audio_stage import AudioMotionEngine
        from pipelines.render.avatar import avatar_from_file, default_avatar
        from pipelines.render.engine import renderer_engine

        if self.portrait is None:
            avatar = await asyncio.to_thread(default_avatar, self.size)
        else:
            avatar = await asyncio.to_thread(avatar_from_file, str(self.portrait), self.size)
        self.landmarks = avatar.landmarks
        motion: EngineWorker[Any, Any] = EngineWorker(AudioMotionEngine())
        render: EngineWorker[Any, Any] = EngineWorker(
            renderer_engine(avatar, f"face-renderer-{self.size}", self.device, output="rgb24"))
        try:
            await asyncio.gather(motion.start(), render.start())
        except BaseException:
            await asyncio.gather(motion.close(), render.close(), return_exceptions=True)
            raise
        self.motion, self.renderer = motion, Batcher(render, BatchPolicy(max_batch=self.max_batch))
        log.info("face engines loaded: %s at %d px on %s", self.portrait or "the default avatar",
                 self.size, self.device)

    async def close(self) -> None:
        task, self._started = self._started, None
        if task is not None and not task.done():
            task.cancel()
        motion, renderer, self.motion, self.renderer = self.motion, self.renderer, None, None
        await asyncio.gather(*(w.close() for w in (motion, renderer) if w is not None), return_exceptions=True)


_SHARED: dict[tuple[int, str, int, str], FaceEngines] = {}


def shared_engines(portrait: str | Path | None = None, size: int = 256, device: str = "cpu") -> FaceEngines:
    """The process's FaceEngines for (portrait, size, device) on the running event loop:
    pipelines that ask for the same face share one lip model and one (batching) renderer."""
    loop = asyncio.get_running_loop()
    key = (id(loop), str(Path(portrait).resolve()) if portrait is not None else "", size, device)
    engines = _SHARED.get(key)
    if engines is None:
        engines = _SHARED[key] = FaceEngines(portrait=portrait, size=size, device=device)
    return engines


async def close_shared_engines() -> None:
    """Stops the engines `shared_engines` made on this loop (at process or test end)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _SHARED if k[0] == loop_id]:
        await _SHARED.pop(key).close()


@dataclass(frozen=True, slots=True)
class FaceFrame:
    index: int  # frame number on the engines' grid
    media_time: float  # when it is due, time.monotonic() seconds
    image: np.ndarray  # (size, size, 3) uint8 RGB
    audio: np.ndarray | None  # int16 mono at `sample_rate` for the frame's 1/fps; None: not speaking
    sample_rate: int
    done: tuple[Any, ...] = ()  # end_of_speech markers whose speech ended with this frame


@dataclass(slots=True)
class _Stretch:
    """A stretch of speech: audio placed from frame `start` on, and the lip model's mouth."""

    entered: float  # when its first chunk was pushed (time.monotonic)
    after: int  # the first frame it may start at (the one after the speech before it)
    start: int | None = None  # its first frame, fixed when the next frame is made
    audio: list[np.ndarray] = field(default_factory=list)  # int16 chunks at the output rate
    samples: int = 0
    model: StreamingAudioToMotion | None = None
    heard_s: float = 0.0  # seconds of audio given to the model (flush silence excluded)
    flushed: bool = False
    markers: list[Any] = field(default_factory=list)  # given back when its last frame is made
    times: list[np.ndarray] = field(default_factory=list)  # model instants, s from `start`
    mouth: list[np.ndarray] = field(default_factory=list)
    arrivals: deque[tuple[int, float]] = field(default_factory=deque)  # (first sample, entered)
    last_push: float = 0.0  # when audio last came (time.monotonic)


@dataclass(slots=True)
class FaceStats:
    frames: int = 0
    speaking_frames: int = 0
    stale_frames: int = 0  # speaking frames whose mouth the model had not described in time
    late_frames: int = 0  # frames made after they were due
    dropped_audio_s: float = 0.0  # speech cut by interruptions
    rejected_chunks: int = 0  # audio that could not be used (bad rate or channel count)
    # seconds from a chunk entering (push_audio) to the frame that shows its first sample
    # leaving, less the time it waited behind speech already queued (a pass-through's wait)
    added_latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=10000))


class SpeechFace:
    """One face: `push_audio` from the speech side, `async for frame in face.frames()` on the
    video side. `interrupt()` drops the speech not yet shown. Not thread-safe: one loop."""

    def __init__(self, engines: FaceEngines, *, fps: int = 25, lookahead_ms: int = 40, lead_frames: int = 2,
                 seed: int = 0, sample_rate: int | None = None) -> None:
        self.check(fps=fps, lookahead_ms=lookahead_ms, lead_frames=lead_frames, sample_rate=sample_rate)
        self.engines, self.fps, self.lookahead_s = engines, fps, lookahead_ms / 1000
        self.lookahead_ms, self.lead_frames = lookahead_ms, lead_frames
        self.sample_rate = sample_rate  # the output's; None: that of the first speech pushed
        self.stats = FaceStats()
        self.life = Liveliness(seed)
        self._next = self._frame_at(time.monotonic())  # the next frame to make
        self._stretches: deque[_Stretch] = deque()
        self._resamplers: dict[tuple[int, int], tuple[StreamingResampler, StreamingResampler | None]] = {}
        self._model_jobs: deque[tuple[_Stretch, np.ndarray | None]] = deque()  # (None: a new stream)
        self._model_idle = asyncio.Event()
        self._model_idle.set()
        self._progress = asyncio.Event()  # set when the model has described more
        self._model_task: asyncio.Task[None] | None = None
        self._last_mouth = np.zeros(MOUTH.stop - MOUTH.start, np.float32)
        self._last_image: np.ndarray | None = None
        self._loose_markers: list[Any] = []

    @staticmethod
    def check(*, fps: int = 25, lookahead_ms: int = 40, lead_frames: int = 2, seed: int = 0,
              sample_rate: int | None = None) -> None:
        """Raises ValueError for settings a face cannot have (before anything is loaded)."""
        if not 1 <= fps <= 60:
            raise ValueError(f"fps must be 1-60, got {fps}")
        if lookahead_ms not in LOOKAHEADS_MS:
            raise ValueError(f"lookahead_ms must be one of {LOOKAHEADS_MS} (the lip model's heads), got {lookahead_ms}")
        if not 0 <= lead_frames <= 10:
            raise ValueError(f"lead_frames must be 0-10, got {lead_frames}")
        if sample_rate is not None and not MIN_RATE <= sample_rate <= MAX_RATE:
            raise ValueError(f"sample_rate must be {MIN_RATE}-{MAX_RATE} Hz, got {sample_rate}")

    def queued_s(self) -> float:
        """Seconds of speech pushed and not yet shown."""
        rate = self.sample_rate
        if not rate:
            return 0.0
        now = self._boundary(self._next, rate)
        return sum(s.samples if s.start is None else max(0, self._end(s) - now) for s in self._stretches) / rate

    # ---- the speech side -------------------------------------------------------------

    def _frame_at(self, t: float) -> int:
        """The first frame made at or after monotonic time t."""
        return max(0, int(np.ceil((t - self.engines.origin) * self.fps + self.lead_frames - 1e-9)))

    def _boundary(self, frame: int, rate: int) -> int:
        return frame * rate // self.fps

    def push_audio(self, pcm: bytes | np.ndarray, sample_rate: int, channels: int = 1) -> float:
        """Speech to say: int16 PCM (bytes or array), interleaved if `channels` > 1, at any rate
        from 8 to 192 kHz. Returns its duration in seconds (0 if empty). Raises ValueError for a
        rate or channel count it cannot take (the face carries on)."""
        if not MIN_RATE <= int(sample_rate) <= MAX_RATE:
            self.stats.rejected_chunks += 1
            raise ValueError(f"speech audio at {sample_rate} Hz: the face takes {MIN_RATE}-{MAX_RATE} Hz")
        if not 1 <= int(channels) <= MAX_CHANNELS:
            self.stats.rejected_chunks += 1
            raise ValueError(f"speech audio with {channels} channels: the face takes 1-{MAX_CHANNELS}")
        if isinstance(pcm, bytes | bytearray | memoryview):
            raw = memoryview(pcm).cast("B")
            x = np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype=np.int16)  # a torn last byte is dropped
        else:
            x = np.asarray(pcm)
        x = x[: len(x) - len(x) % channels].reshape(-1, channels)  # a torn last frame is dropped
        if len(x) == 0:
            return 0.0
        now = time.monotonic()
        if self.sample_rate is None:
            self.sample_rate = int(sample_rate)
        key = (int(sample_rate), int(channels))
        if key not in self._resamplers:  # (a TTS keeps to one or two formats)
            out = (None if key == (self.sample_rate, 1) else
                   StreamingResampler(key[0], key[1], highpass_hz=None, out_rate=self.sample_rate))
            self._resamplers[key] = (StreamingResampler(key[0], key[1]), out)
        to_model, to_out = self._resamplers[key]
        speech = x[:, 0].copy() if to_out is None else (to_out.push(x) * 32767).astype(np.int16)
        heard = to_model.push(x)
        seconds = len(x) / sample_rate
        cur = self._stretches[-1] if self._stretches else None
        if cur is None or cur.flushed or (cur.start is not None and self._end(cur) < self._boundary(self._next, self.sample_rate)):
            # Idle, or the frames have passed the end of what was said, or its speaker said it
            # was done: a new stretch, after the one before it.
            after = 0 if cur is None or cur.start is None else -(-self._end(cur) * self.fps // self.sample_rate)
            cur = _Stretch(entered=now, after=after)
            self._stretches.append(cur)
            self._model_jobs.append((cur, None))  # a fresh model stream
        cur.arrivals.append((cur.samples, now))
        cur.audio.append(speech)
        cur.samples += len(speech)
        cur.last_push = now
        self._model_jobs.append((cur, heard))
        self._model_idle.clear()
        self._ensure_model_task()
        return seconds

    def _end(self, s: _Stretch) -> int:
        """The output sample (on the frame grid's timeline) after s's last."""
        assert s.start is not None and self.sample_rate
        return self._boundary(s.start, self.sample_rate) + s.samples

    def _anchor(self, k: int) -> None:
        """Fix where new speech starts, as frame k is made: at k if enough of it is here for
        the lip model to describe k's middle (a TTS gives a sentence in a burst), otherwise as
        much later as the rest takes to arrive in real time (a TTS that streams)."""
        for s in self._stretches:
            if s.start is None and self.sample_rate:
                need = 0.5 / self.fps + self.lookahead_s + 0.01
                short = max(0.0, need - s.samples / self.sample_rate)
                # as many frames later as the rest takes to come in at the pace it is coming
                ready = k + int(np.ceil(short * self.fps - 1e-9))
                s.start = max(k, s.after, ready)

    def end_of_speech(self, marker: Any = None) -> None:
        """The speaker has finished (a TTS's stop): the mouth's last instants need no more audio.
        `marker` comes back in `FaceFrame.done` of the frame that shows the end of this speech
        (right away, in the next frame, if there is none queued)."""
        if marker is not None:
            if self._stretches:
                self._stretches[-1].markers.append(marker)
            else:
                self._loose_markers.append(marker)
        if self._stretches and not self._stretches[-1].flushed:
            self._stretches[-1].flushed = True
            self._model_jobs.append((self._stretches[-1], np.zeros(0, np.float32)))  # flush
            self._model_idle.clear()
            self._ensure_model_task()

    def markers_pending(self) -> int:
        """end_of_speech markers not yet handed out with a frame."""
        return len(self._loose_markers) + sum(len(s.markers) for s in self._stretches)

    def interrupt(self) -> float:
        """Drop all speech not yet shown (barge-in). Returns the seconds dropped."""
        dropped = 0.0
        rate = self.sample_rate or 1
        keep: deque[_Stretch] = deque()
        for s in self._stretches:
            shown = 0 if s.start is None else max(0, self._boundary(self._next, rate) - self._boundary(s.start, rate))
            if shown <= 0:
                dropped += s.samples / rate
                continue
            if shown < s.samples:
                dropped += (s.samples - shown) / rate
                audio = np.concatenate(s.audio)[:shown]
                s.audio, s.samples = [audio], len(audio)
            s.flushed = True
            keep.append(s)
        self._stretches = keep
        self._loose_markers.clear()
        self.stats.dropped_audio_s += dropped
        # the model's queued work is for speech nobody will see
        self._model_jobs.clear()
        return dropped

    # ---- the lip model -------------------------------------------------------------

    def _ensure_model_task(self) -> None:
        if self._model_task is None or self._model_task.done():
            self._model_task = asyncio.get_running_loop().create_task(self._run_model(), name="face-lip-model")

    async def _run_model(self) -> None:
        worker = self.engines.motion
        assert worker is not None, "FaceEngines not started"
        while self._model_jobs:
            stretch, heard = self._model_jobs.popleft()
            if heard is None:
                stretch.model = worker.engine.stream(self.lookahead_ms)  # type: ignore[attr-defined]
                continue
            assert stretch.model is not None
            if len(heard) == 0:  # flush: silence past the end, so the last instants are described
                heard = np.zeros(int(MODEL_RATE * (self.lookahead_s + 0.05)), np.float32)
            else:
                # Speech is heard in calls of MODEL_CALL_MAX_S: a burst of 20 ms frames not one
                # per frame (a thread hop each keeps the loop and the other faces waiting), a
                # sentence in one frame not all at once (the first frames would wait for it all).
                step = int(MODEL_CALL_MAX_S * MODEL_RATE)
                while len(heard) < step and self._model_jobs:
                    nxt, more = self._model_jobs[0]
                    if nxt is not stretch or more is None or len(more) == 0:
                        break
                    self._model_jobs.popleft()
                    heard = np.concatenate([heard, more])
                if len(heard) > step:
                    heard, rest = heard[:step], heard[step:]
                    self._model_jobs.appendleft((stretch, rest))
                stretch.heard_s += len(heard) / MODEL_RATE
            [(times, mouth)] = await worker.run([(stretch.model, heard)])
            if len(times):
                stretch.times.append(np.asarray(times))
                stretch.mouth.append(np.asarray(mouth, np.float32))
                self._progress.set()
        self._model_idle.set()
        self._progress.set()

    def _mouth(self, s: _Stretch, t: float) -> np.ndarray | None:
        """The mouth at t seconds into stretch s, if the model has described it."""
        if not s.times or t > s.times[-1][-1]:
            return None
        if len(s.times) > 1:
            s.times, s.mouth = [np.concatenate(s.times)], [np.concatenate(s.mouth)]
        ts, ms = s.times[0], s.mouth[0]
        return np.array([np.interp(t, ts, ms[:, i]) for i in range(ms.shape[1])], np.float32)

    # ---- the video side -------------------------------------------------------------

    async def frames(self) -> AsyncIterator[FaceFrame]:
        """One frame per 1/fps, for ever (until the consumer stops), made `lead_frames` ahead of
        when it is due."""
        renderer = self.engines.renderer
        assert renderer is not None, "FaceEngines not started"
        try:
            while True:
                k = self._next
                made_at = self.engines.origin + (k - self.lead_frames) / self.fps
                delay = made_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                frame = await self._make(k, renderer)
                self._next = k + 1
                yield frame
        finally:
            if self._model_task is not None:
                self._model_task.cancel()
                await asyncio.gather(self._model_task, return_exceptions=True)

    async def _make(self, k: int, renderer: Batcher[Any, Any]) -> FaceFrame:
        due = self.engines.origin + k / self.fps
        self._anchor(k)
        audio, stretch, arrivals, done = self._take_audio(k)
        params = np.zeros(N_PARAMS, np.float32)
        if stretch is not None:
            assert stretch.start is not None
            t = (k - stretch.start + 0.5) / self.fps  # the middle of the frame's display interval
            mouth = self._mouth(stretch, t)
            # The model is still on this speech, or more of it is coming (a TTS that streams in
            # real time): wait for it while the frame has time (until the next frame is due to
            # be made; it still leaves `lead_frames - 1` ahead of its time).
            deadline = self.engines.origin + (k - self.lead_frames + 1) / self.fps
            while mouth is None and (not self._model_idle.is_set() or not stretch.flushed):
                budget = deadline - time.monotonic()
                if budget <= 0:
                    break
                self._progress.clear()
                try:
                    await asyncio.wait_for(self._progress.wait(), budget)
                except TimeoutError:
                    break
                mouth = self._mouth(stretch, t)
            now = time.monotonic()
            if (self._model_idle.is_set() and not stretch.flushed and stretch is self._stretches[-1]
                    and t + 1.0 / self.fps + self.lookahead_s > stretch.heard_s
                    and now - stretch.last_push > INPUT_QUIET_S):
                # at the end of what was said, and nothing more came for a while (a TTS that
                # sends no stop): the model needs silence past the end for the last instants
                self.end_of_speech()
            if mouth is None:
                self.stats.stale_frames += 1
                mouth = self._last_mouth
            params[MOUTH] = self._last_mouth = mouth
            self.stats.speaking_frames += 1
        else:
            self._last_mouth = np.zeros_like(self._last_mouth)
        params = self.life.apply(params, k / self.fps)
        try:
            [image] = await renderer.run([{"params": torch.from_numpy(params)}])
            self._last_image = image.numpy()
        except EngineDied:
            log.warning("the renderer died under frame %d; repeating the last image", k)
            if self._last_image is None:
                raise
        now = time.monotonic()
        self.stats.frames += 1
        self.stats.late_frames += now > due
        for entered, passthrough in arrivals:
            self.stats.added_latency_s.append(now - max(entered, passthrough))
        assert self._last_image is not None
        return FaceFrame(k, due, self._last_image, audio, self.sample_rate or 0, done)

    def _take_audio(self, k: int) -> tuple[np.ndarray | None, _Stretch | None, list[tuple[float, float]], tuple[Any, ...]]:
        """Frame k's speech (None if none), its stretch, for each chunk whose first sample it
        shows (when it entered, when a pass-through would have started playing it), and the
        markers of speech that ends with it."""
        rate = self.sample_rate
        done = tuple(self._loose_markers)
        self._loose_markers.clear()
        while self._stretches and rate:
            s = self._stretches[0]
            assert s.start is not None
            a0, a1 = self._boundary(k, rate) - self._boundary(s.start, rate), \
                self._boundary(k + 1, rate) - self._boundary(s.start, rate)
            if a0 >= s.samples:
                self._stretches.popleft()  # over: speech pushed from now on starts a new stretch
                done += tuple(s.markers)
                continue
            if a1 <= 0:
                return None, None, [], done  # it starts later
            if len(s.audio) > 1:
                s.audio = [np.concatenate(s.audio)]
            whole = s.audio[0]
            out = np.zeros(a1 - a0, np.int16)
            lo = max(a0, 0)
            out[lo - a0:min(a1, s.samples) - a0] = whole[lo:min(a1, s.samples)]
            arrivals = []
            while s.arrivals and s.arrivals[0][0] < a1:
                first, entered = s.arrivals.popleft()
                # a pass-through plays the stretch from its first chunk's arrival on
                arrivals.append((entered, s.entered + first / rate))
            if a1 >= s.samples and s.flushed:  # its last frame
                self._stretches.popleft()
                done += tuple(s.markers)
            return out, s, arrivals, done
        return None, None, [], done
