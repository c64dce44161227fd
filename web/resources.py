"""Engines shared by every session of the server: one TTS engine per speech backend (all its
voices on one thread), one renderer per (avatar, size), each on its own worker thread, loaded
on first use (or at start) and kept warm until the server stops. Sessions come and go; they
only borrow these, and nothing here grows with what clients ask for."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engines import Engine, EngineWorker
from engines.batcher import Batcher, BatchPolicy
from engines.devices import pick_device
from engines.scheduler import DeadlineScheduler
from engines.devices import GpuMemoryCollector
from engines.process_stats import EngineProcessCollector
from engines.subprocess_engine import SubprocessEngine
from pipelines.media.live import CodecInfo, probe_codecs
from pipelines.render.avatar import DEFAULT_AVATAR, Avatar, avatar_from_file, default_avatar
from pipelines.render.engine import renderer_engine
from pipelines.speech import pool as speech_pool
from pipelines.speech.pool import VoicePool
from pipelines.speech.stages import MoreSpeech, SpeechPiece, TextSegment
from pipelines.speech.tts import PIPER_VOICES, SpeechError
from pipelines.speech.types import Utterance
from realtime import RuntimeMetrics

from .limits import VOICE_PATTERN
from .settings import ServerSettings

log = logging.getLogger(__name__)


TTS_NICE = 5  # the TTS threads' priority offset (pipelines/speech/pool.py): video first


def _speech_job_kind(items: Sequence[Any]) -> str:
    """A sentence's start (front pass + first words, and the piece right after them, due 0.27 s
    later) or a continuation piece (seconds of slack): they go to different engines."""
    return "more" if all(isinstance(item, MoreSpeech) and not item.first for _, item in items) else "start"


def _describe(engine: Engine[Any, Any]) -> str:
    d = engine.describe()
    out = f"backend {d.get('backend', '?')} on {d.get('device', '?')}, loaded in {d.get('load_s', '?')} s"
    if d.get("autotune_ms_per_item"):
        out += f"; autotune, ms per frame: {d['autotune_ms_per_item']}"
    return out


class Unavailable(ValueError):
    """A voice, avatar or size this server cannot offer (one line, for the client)."""


class VoiceWorker:
    """One voice of a pooled backend, with the interface stages use (`await run(items)`):
    its items go to the backend's one worker, tagged with the voice."""

    takes_deadline = True

    def __init__(self, voice: str, pool: DeadlineScheduler[Any, Any]) -> None:
        self.voice, self.pool = voice, pool

    async def run(self, items: Sequence[TextSegment | MoreSpeech], *,
                  deadline: float | None = None) -> list[Utterance | SpeechPiece]:
        """`deadline`: when (time.monotonic) the audio is needed; the backend runs the
        earliest first, across sessions (engines/scheduler.py). None: now."""
        return await self.pool.run([(self.voice, item) for item in items], deadline=deadline)


@dataclass(frozen=True, slots=True)
class Admission:
    wait_s: float  # estimated wait of a new utterance's first words
    lag_s: float  # how far behind the continuation work is (due, not yet synthesized)
    refusal: str | None = None  # why it is refused (error `busy`, HTTP 503), or None
    notice_s: float | None = None  # the wait to report (over speech_wait_notice_s), or None


@dataclass(frozen=True, slots=True)
class Voice:
    name: str  # canonical ("en-us+f3")
    worker: VoiceWorker
    sample_rate: int


class SharedEngines:
    def __init__(self, settings: ServerSettings, metrics: RuntimeMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.device = "cpu" if settings.device == "cpu" else pick_device(settings.device)
        # One engine and one thread per speech backend (piper, espeak), whatever voices are
        # asked for: a voice name costs nothing to keep (pipelines/speech/pool.py).
        self._speech: dict[str, asyncio.Task[DeadlineScheduler[Any, Any]]] = {}
        self._renderers: dict[tuple[str, int], asyncio.Task[Batcher[Any, Any]]] = {}
        self._codecs: CodecInfo | None = None
        self._motion: asyncio.Future[EngineWorker[Any, Any]] | None = None
        self._perception: asyncio.Future[EngineWorker[Any, Any]] | None = None
        # CPU and memory of the engines' own processes: the server's process_* figures miss them
        self._processes = EngineProcessCollector()
        self._gpu = GpuMemoryCollector()  # CUDA only: nothing on a CPU machine
        if metrics is not None:
            metrics.registry.register(self._processes)
            metrics.registry.register(self._gpu)

    async def codecs(self) -> CodecInfo:
        if self._codecs is None:
            self._codecs = await asyncio.to_thread(probe_codecs)
        return self._codecs

    async def resolve_voice(self, name: str) -> tuple[str, str]:
        """(backend, canonical name) of a voice this server offers; Unavailable otherwise.
        Nothing is kept for a name that fails."""
        if not re.fullmatch(VOICE_PATTERN, name):
            raise Unavailable("a voice name is a language of 1-40 letters, digits, '-' or '_', and "
                              "optionally '+' and a variant (e.g. joe, en-us, en-us+f3)")
        try:
            return await asyncio.to_thread(speech_pool.resolve, name)
        except SpeechError as exc:
            raise Unavailable(str(exc)) from None

    async def voice(self, name: str) -> Voice:
        """A voice ready to speak (raises Unavailable for an unknown voice)."""
        backend, canonical = await self.resolve_voice(name)
        pool = await self._speech_backend(backend)
        return Voice(canonical, VoiceWorker(canonical, pool), pool.engine.sample_rate)

    async def tts(self, name: str) -> VoiceWorker:
        return (await self.voice(name)).worker

    async def _speech_backend(self, backend: str) -> DeadlineScheduler[Any, Any]:
        task = self._speech.get(backend)
        if task is None or (task.done() and task.exception() is not None):
            task = self._speech[backend] = asyncio.ensure_future(self._load_speech(backend))
        return await asyncio.shield(task)

    async def _load_speech(self, backend: str) -> DeadlineScheduler[Any, Any]:
        # continuation pieces are throughput work (one inference thread: the least CPU a frame)
        worker: EngineWorker[Any, Any] = EngineWorker(VoicePool(backend, nice=TTS_NICE, threads=1))
        lanes: list[tuple[EngineWorker[Any, Any], set[str]]] = []
        if backend == "piper":
            # A second piper engine, at normal priority, that only starts sentences: a reply's
            # first words never wait behind other sessions' continuation pieces, however many
            # talk (espeak-ng is one process-wide library, and fast: one lane).
            lanes.append((EngineWorker(VoicePool(backend, nice=0, name_suffix="-start")), {"start"}))
        try:
            await asyncio.gather(worker.start(), *(w.start() for w, _ in lanes))
        except BaseException:
            await asyncio.gather(worker.close(), *(w.close() for w, _ in lanes), return_exceptions=True)
            raise
        log.info("speech backend %s loaded (%d Hz, %d lanes)", backend, worker.engine.sample_rate, 1 + len(lanes))
        m = self.metrics
        return DeadlineScheduler(
            worker, lanes=lanes, kind_of=_speech_job_kind,
            on_late=m.speech_lateness.labels(backend=backend).observe if m is not None else None,
            on_depth=m.speech_queue.labels(backend=backend).set if m is not None else None)

    async def speech_admission(self, voice: str) -> Admission:
        """May a new utterance of `voice` be queued now, and how long will its first words wait?
        Refused when they would wait over `speech_max_wait_s`, or when the continuation work
        every session shares is over `speech_max_lag_s` behind (pieces already due and not yet
        synthesized): demand is over capacity, and one more talker would only add gaps to
        everybody's speech. Raises Unavailable for an unknown voice."""
        backend, _ = await self.resolve_voice(voice)
        task = self._speech.get(backend)
        if task is None or not task.done() or task.exception() is not None:
            return Admission(0.0, 0.0)
        scheduler = task.result()
        s = self.settings
        wait, lag = scheduler.backlog(kind="start"), scheduler.backlog(kind="more")
        refusal = None
        if wait > s.speech_max_wait_s:
            refusal = f"the speech engine is overloaded (first words would wait {wait:.1f} s); try again shortly"
        elif lag > s.speech_max_lag_s:
            refusal = (f"the speech engine is {lag:.1f} s behind on the speech it is already giving; "
                       "try again shortly")
        return Admission(wait, lag, refusal, round(wait, 3) if wait > s.speech_wait_notice_s else None)

    async def renderer(self, avatar: str, size: int) -> Batcher[Any, Any]:
        """The renderer of (avatar, size), shared by every session: frames that queue up from
        several sessions while it is busy are rendered in one batch."""
        if size not in self.settings.sizes:
            raise Unavailable(f"size {size} is not offered; choose one of {self.settings.sizes}")
        if avatar != DEFAULT_AVATAR and avatar not in self.settings.avatars:
            names = [DEFAULT_AVATAR, *self.settings.avatars]
            raise Unavailable(f"unknown avatar {avatar!r}; choose one of {names}")
        key = (avatar, size)
        task = self._renderers.get(key)
        if task is None or (task.done() and task.exception() is not None):
            task = self._renderers[key] = asyncio.ensure_future(self._load_renderer(avatar, size))
        return await asyncio.shield(task)

    async def _load_renderer(self, name: str, size: int) -> Batcher[Any, Any]:
        if name == DEFAULT_AVATAR:
            avatar: Avatar = await asyncio.to_thread(default_avatar, size)
        else:
            try:
                avatar = await asyncio.to_thread(avatar_from_file, self.settings.avatars[name], size,
                                                 max_pixels=40_000_000)
            except ValueError as exc:  # no face, or a face that cannot be animated: say which
                raise Unavailable(f"avatar {name!r}: {exc}") from None
        workers: list[EngineWorker[Any, Any]] = []
        s = self.settings
        make = functools.partial(renderer_engine, avatar, f"renderer-{name}-{size}", self.device,
                                 backend=s.render_backend, cache_dir=s.engine_cache_dir)
        processes = self.settings.render_processes
        if processes is None:
            processes = self.device == "cpu"
        for i in range(self.settings.render_workers):
            engine: Engine[Any, Any] = (SubprocessEngine(f"renderer-{name}-{size}", make,
                                                         torch_threads=self.settings.torch_threads)
                                        if processes else make())
            if isinstance(engine, SubprocessEngine):
                self._processes.add(str(i), engine)
            workers.append(EngineWorker(engine))
            await workers[-1].start()
        log.info("renderer %s at %d loaded (%d workers%s): %s", name, size, len(workers),
                 ", each in its own process" if processes else "", _describe(workers[0].engine))
        buckets = tuple(workers[0].engine.describe().get("buckets") or ())
        policy = BatchPolicy(max_batch=self.settings.render_max_batch or (64 if self.device == "cuda" else 8),
                             max_delay_s=self.settings.render_max_delay_ms / 1000, buckets=buckets)
        m = self.metrics
        if m is None:
            return Batcher(workers[0], policy, replicas=workers[1:])
        return Batcher(workers[0], policy, replicas=workers[1:],
                       on_batch=m.engine_batch.labels(engine="renderer").observe,
                       on_queue=m.engine_queue.labels(engine="renderer").observe,
                       on_compute=m.engine_compute.labels(engine="renderer").observe,
                       on_late=m.engine_lateness.labels(engine="renderer").observe,
                       # the series exists from the start (at 0), so rate() and alerts see the first restart
                       on_restart=m.engine_restarts.labels(engine="renderer").inc)

    def ready(self) -> bool:
        """Everything `preload` loads is loaded and warmed — the default voice, the renderers of
        the default stream and call sizes, the lip model, the codecs — so the first call or
        stream starts as quickly as later ones."""
        s = self.settings
        backend = "piper" if s.voice.strip().lower() in PIPER_VOICES else "espeak"
        loaded = [self._speech.get(backend), self._motion, *([self._perception] if s.call_perception else []),
                  *(self._renderers.get((s.avatar, size)) for size in self._preloaded_sizes())]
        return self._codecs is not None and all(
            t is not None and t.done() and not t.cancelled() and t.exception() is None for t in loaded)

    async def motion(self) -> EngineWorker[Any, Any]:
        """The audio-to-motion model (mirror mode), shared; each call keeps its own stream state."""
        if self._motion is None or (self._motion.done() and self._motion.exception() is not None):
            self._motion = asyncio.ensure_future(self._load_motion())
        return await asyncio.shield(self._motion)

    async def _load_motion(self) -> EngineWorker[Any, Any]:
        from pipelines.motion.audio_stage import AudioMotionEngine

        worker: EngineWorker[Any, Any] = EngineWorker(AudioMotionEngine())
        await worker.start()
        return worker

    async def perception(self) -> EngineWorker[Any, Any]:
        """The caller-perception engine (call_perception), shared by every call, in a child
        process of its own unless `perception_process` is off; loaded again if its process died."""
        p = self._perception
        if p is None or (p.done() and (p.exception() is not None or not p.result().engine.alive())):
            self._perception = asyncio.ensure_future(self._load_perception())
        return await asyncio.shield(self._perception)

    async def _load_perception(self) -> EngineWorker[Any, Any]:
        from pipelines.perception.engine import perception_engine

        make = functools.partial(perception_engine, self.settings.call_perception_fps)
        if self.settings.perception_process:
            engine: Engine[Any, Any] = SubprocessEngine("perception", make, torch_threads=1)
            self._processes.add("0", engine)
        else:
            engine = make()
        worker: EngineWorker[Any, Any] = EngineWorker(engine)
        await worker.start()
        log.info("perception loaded%s: %s", " in its own process" if self.settings.perception_process else "",
                 _describe(engine))
        return worker

    def _preloaded_sizes(self) -> list[int]:
        s = self.settings
        return sorted({s.size, s.call_size} & set(s.sizes)) or [s.size]

    async def preload(self) -> None:
        s = self.settings
        # every call builds its graph with the lip model (mirror mode can be switched on later):
        # loading it (and exporting its onnxruntime step, ~1 s) at start keeps the first call quick
        # and the call size's renderer too (512² by default, the stream's is 256²): the first
        # call would otherwise load and warm it on its caller's time
        await asyncio.gather(self.codecs(), self.voice(s.voice), self.motion(),
                             *(self.renderer(s.avatar, size) for size in self._preloaded_sizes()))

    async def close(self) -> None:
        if self.metrics is not None:
            with contextlib.suppress(KeyError):  # closed before
                self.metrics.registry.unregister(self._processes)
            with contextlib.suppress(KeyError):
                self.metrics.registry.unregister(self._gpu)
        tasks = [*self._speech.values(), *self._renderers.values(),
                 *(t for t in (self._motion, self._perception) if t is not None)]
        self._motion = self._perception = None
        self._speech.clear()
        self._renderers.clear()
        for t in tasks:
            if not t.done():
                t.cancel()
        for t in tasks:
            try:
                engine = await t
            except BaseException:  # noqa: BLE001 - never loaded: nothing to close
                continue
            await engine.close()
