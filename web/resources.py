"""Engines shared by every session of the server: one TTS engine per voice, one renderer per
(avatar, size), each on its own worker thread, loaded on first use (or at start) and kept
warm until the server stops. Sessions come and go; they only borrow these."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import torch

from engines import Engine, EngineWorker
from engines.batcher import BatchingWorker
from engines.process_stats import EngineProcessCollector
from engines.subprocess_engine import SubprocessEngine
from pipelines.media.live import CodecInfo, probe_codecs
from pipelines.render.avatar import DEFAULT_AVATAR, Avatar, avatar_from_file, default_avatar
from pipelines.render.engine import renderer_engine
from pipelines.speech.stages import SpeechEngine, TextSegment
from pipelines.speech.tts import SpeechSynthesizer
from pipelines.speech.types import Utterance
from realtime import RuntimeMetrics

from .settings import ServerSettings

log = logging.getLogger(__name__)


TTS_NICE = 5  # see _BackgroundSpeech


class _BackgroundSpeech(SpeechEngine):
    """The TTS engine on a lower-priority thread. Frames are due every 40 ms and speech only
    when its sentence is ready: when the CPU is short (many streams talking at once), video keeps
    its frame rate and speech starts later, instead of every stream stuttering. `load` runs on
    the worker thread before the voice is loaded, so the inference library's own threads,
    created from it, inherit the priority."""

    def load(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), TTS_NICE)
        except (AttributeError, OSError):  # not Linux, or not allowed: run at normal priority
            log.debug("could not lower the TTS thread's priority")
        super().load()


class Unavailable(ValueError):
    """A voice, avatar or size this server cannot offer (one line, for the client)."""


@dataclass(frozen=True, slots=True)
class Voice:
    worker: EngineWorker[TextSegment, Utterance]
    sample_rate: int


class SharedEngines:
    def __init__(self, settings: ServerSettings, metrics: RuntimeMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.device = "cuda" if settings.device == "auto" and torch.cuda.is_available() else (
            "cpu" if settings.device == "auto" else settings.device)
        self._voices: dict[str, asyncio.Task[Voice]] = {}
        self._renderers: dict[tuple[str, int], asyncio.Task[BatchingWorker[Any, Any]]] = {}
        self._codecs: CodecInfo | None = None
        self._motion: asyncio.Future[EngineWorker[Any, Any]] | None = None
        # CPU and memory of the engines' own processes: the server's process_* figures miss them
        self._processes = EngineProcessCollector()
        if metrics is not None:
            metrics.registry.register(self._processes)

    async def codecs(self) -> CodecInfo:
        if self._codecs is None:
            self._codecs = await asyncio.to_thread(probe_codecs)
        return self._codecs

    async def voice(self, name: str) -> Voice:
        """The started TTS engine of `name` (raises Unavailable for an unknown voice)."""
        key = name.strip().lower()
        task = self._voices.get(key)
        if task is None or (task.done() and task.exception() is not None):
            task = self._voices[key] = asyncio.ensure_future(self._load_voice(key))
        return await asyncio.shield(task)

    async def tts(self, name: str) -> EngineWorker[TextSegment, Utterance]:
        return (await self.voice(name)).worker

    async def _load_voice(self, name: str) -> Voice:
        try:
            synth = await asyncio.to_thread(SpeechSynthesizer, name)
        except ValueError as exc:
            raise Unavailable(str(exc)) from None
        worker: EngineWorker[TextSegment, Utterance] = EngineWorker(_BackgroundSpeech(synth))
        await worker.start()
        rate = await asyncio.to_thread(lambda: synth.sample_rate)
        log.info("voice %s loaded (%d Hz)", name, rate)
        return Voice(worker, rate)

    async def renderer(self, avatar: str, size: int) -> BatchingWorker[Any, Any]:
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

    async def _load_renderer(self, name: str, size: int) -> BatchingWorker[Any, Any]:
        if name == DEFAULT_AVATAR:
            avatar: Avatar = await asyncio.to_thread(default_avatar, size)
        else:
            avatar = await asyncio.to_thread(avatar_from_file, self.settings.avatars[name], size,
                                             max_pixels=40_000_000)
        workers: list[EngineWorker[Any, Any]] = []
        make = functools.partial(renderer_engine, avatar, f"renderer-{name}-{size}", self.device)
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
        log.info("renderer %s at %d loaded (%d workers%s)", name, size, len(workers),
                 ", each in its own process" if processes else "")
        max_batch = self.settings.render_max_batch or (64 if self.device == "cuda" else 8)
        on_batch = (self.metrics.engine_batch.labels(engine="renderer").observe
                    if self.metrics is not None else None)
        return BatchingWorker(workers[0], max_batch=max_batch, replicas=workers[1:], on_batch=on_batch)

    def ready(self) -> bool:
        """The default voice and renderer are loaded (the first call or stream starts at once)."""
        s = self.settings
        loaded = [self._voices.get(s.voice.strip().lower()), self._renderers.get((s.avatar, s.size))]
        return all(t is not None and t.done() and t.exception() is None for t in loaded)

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

    async def preload(self) -> None:
        s = self.settings
        # every call builds its graph with the lip model (mirror mode can be switched on later):
        # loading it (and exporting its onnxruntime step, ~1 s) at start keeps the first call quick
        await asyncio.gather(self.codecs(), self.voice(s.voice), self.renderer(s.avatar, s.size), self.motion())

    async def close(self) -> None:
        if self.metrics is not None:
            with contextlib.suppress(KeyError):  # closed before
                self.metrics.registry.unregister(self._processes)
        tasks = [*self._voices.values(), *self._renderers.values(), *([self._motion] if self._motion else [])]
        self._motion = None
        self._voices.clear()
        self._renderers.clear()
        for t in tasks:
            if not t.done():
                t.cancel()
        for t in tasks:
            try:
                engine = await t
            except BaseException:  # noqa: BLE001 - never loaded: nothing to close
                continue
            await (engine.worker if isinstance(engine, Voice) else engine).close()
