"""Every voice of one synthesis backend behind one engine, so one thread serves them all.

A server offers thousands of voice names (espeak-ng's languages times its variants). A
thread and a synthesizer kept per name would grow with every name a client asks for; here a
backend ("piper" or "espeak") is one engine on one worker thread, whatever voices are asked
for, and the synthesizers it builds are kept in a small LRU (an espeak one is a few names;
evicting it costs nothing, espeak-ng itself is one process-wide library). Items carry their
voice: `(voice, TextSegment | MoreSpeech)`.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

from engines import Engine

from . import espeak
from .stages import MoreSpeech, SpeechEngine, SpeechPiece, TextSegment
from .tts import PIPER_VOICES, SpeechError, SpeechSynthesizer
from .types import Utterance

log = logging.getLogger(__name__)

BACKENDS = ("piper", "espeak")
WARMUP_VOICE = {"piper": "joe", "espeak": "en-us"}


def resolve(name: str) -> tuple[str, str]:
    """(backend, canonical voice name) for a voice name; SpeechError if there is no such voice.
    Blocking the first time (espeak-ng loads its voice list)."""
    key = name.strip().lower()
    if key in PIPER_VOICES:
        return "piper", key
    try:
        return "espeak", espeak.resolve_voice(key)
    except espeak.UnknownVoiceError as exc:
        raise SpeechError(str(exc)) from None


class VoicePool(Engine[tuple[str, TextSegment | MoreSpeech], Utterance | SpeechPiece]):
    """The voices of one backend. `nice`: the worker thread's priority is lowered by this much
    when it loads (video frames are due every 40 ms, speech only when its sentence is ready);
    the inference library's threads, created from it, inherit it."""

    def __init__(self, backend: str, *, capacity: int = 16, nice: int = 0, threads: int = 0,
                 name_suffix: str = "") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown speech backend {backend!r}")
        self.name = f"tts-{backend}{name_suffix}"
        self.backend, self.capacity, self.nice, self.threads = backend, capacity, nice, threads
        self._engines: OrderedDict[str, SpeechEngine] = OrderedDict()
        self.sample_rate = 0

    def load(self) -> None:
        if self.nice:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except (AttributeError, OSError):  # not Linux, or not allowed: normal priority
                log.debug("could not lower the %s thread's priority", self.name)
        self.sample_rate = self._engine(WARMUP_VOICE[self.backend]).synth.sample_rate

    def warmup(self) -> None:
        self._engine(WARMUP_VOICE[self.backend]).warmup()

    def _engine(self, voice: str) -> SpeechEngine:
        engine = self._engines.get(voice)
        if engine is None:
            engine = self._engines[voice] = SpeechEngine(SpeechSynthesizer(voice, threads=self.threads))
            while len(self._engines) > self.capacity:
                self._engines.popitem(last=False)
        self._engines.move_to_end(voice)
        return engine

    def run_batch(self, items: Sequence[tuple[str, TextSegment | MoreSpeech]]) -> list[Utterance | SpeechPiece]:
        return [self._engine(voice).run_batch([item])[0] for voice, item in items]

    @property
    def voices_loaded(self) -> int:
        return len(self._engines)
