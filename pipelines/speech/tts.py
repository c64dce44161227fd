"""Text -> speech audio + phoneme/word timeline: the front door of pipelines.speech.

Voices: "joe" (piper, natural, English; the default) and every espeak-ng voice ("en-us", "de",
"fr", "en-us+f3", ...; robotic, but any language and exact timings). `stream()` speaks one
sentence at a time so the first audio is ready after one sentence, not after the whole text.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

from . import espeak
from .align import ForcedAligner
from .piper_voice import PiperBackend
from .sentences import Sentence, split_sentences
from .timeline import shift_words
from .types import Utterance

DEFAULT_VOICE = "joe"
PIPER_VOICES = ("joe",)
RATE_RANGE = (0.5, 2.0)
PITCH_RANGE = (0.5, 2.0)


class SpeechError(ValueError):
    """A request we cannot speak; the message is one human-readable line."""


def available_voices() -> list[str]:
    """"joe" first (the default), then espeak's voices; espeak names also take "+variant"."""
    return list(PIPER_VOICES) + espeak.list_voices()


def _check_range(name: str, value: float, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SpeechError(f"{name} must be a number between {lo} and {hi}, got {value!r}") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise SpeechError(f"{name} must be between {lo} and {hi}, got {value:g}")
    return value


def _check_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise SpeechError("text is empty: give at least one word to speak")
    if not any(ch.isalnum() for ch in text):
        raise SpeechError("text has nothing to pronounce (only punctuation or symbols)")
    return text


class SpeechSynthesizer:
    """Speaks text with one voice at one rate and pitch (both multipliers, 1.0 = normal)."""

    def __init__(self, voice: str = DEFAULT_VOICE, rate: float = 1.0, pitch: float = 1.0) -> None:
        self.rate = _check_range("rate", rate, RATE_RANGE)
        self.pitch = _check_range("pitch", pitch, PITCH_RANGE)
        name = (voice or "").strip().lower()
        if name in PIPER_VOICES:
            self.voice = name
        else:
            try:
                self.voice = espeak.resolve_voice(name)
            except espeak.UnknownVoiceError:
                some = ", ".join(list(PIPER_VOICES) + ["en-us", "en", "de", "fr", "es", "en-us+f3"])
                raise SpeechError(
                    f"unknown voice {voice!r}; try one of: {some} (all: available_voices())"
                ) from None
        # Created on first use: the piper model takes ~0.3-0.5 s to load, the aligner ~0.15 s.
        self._piper: PiperBackend | None = None
        self._aligner: ForcedAligner | None = None

    @property
    def is_piper(self) -> bool:
        return self.voice in PIPER_VOICES

    @property
    def sample_rate(self) -> int:
        return self._piper_backend().sample_rate if self.is_piper else espeak.sample_rate()

    def _piper_backend(self) -> PiperBackend:
        if self._piper is None:
            self._piper = PiperBackend()
        return self._piper

    def synthesize(self, text: str) -> Utterance:
        """One sentence (or any short text) -> audio and its timeline; offsets into `text`."""
        text = _check_text(text)
        if not self.is_piper:
            res = espeak.synthesize(text, self.voice, self.rate, self.pitch)
            return Utterance(text, res.audio, res.sample_rate, res.phonemes, res.words,
                             timing="espeak")
        piper = self._piper_backend()
        audio = piper.synthesize(text, self.rate, self.pitch)
        if self._aligner is None:
            self._aligner = ForcedAligner()
        alignment = self._aligner.align(audio, piper.sample_rate, text)
        return Utterance(text, audio, piper.sample_rate, alignment.phonemes, alignment.words,
                         timing=alignment.method)

    def stream(self, text: str) -> Iterator[Utterance]:
        """One Utterance per sentence, each synthesized only when the consumer asks for it.

        Word offsets refer to `text` itself; Utterance.char_offset says where the sentence
        starts. Errors about the text are raised here, not at the first next().
        """
        text = _check_text(text)
        sentences = [s for s in split_sentences(text) if any(ch.isalnum() for ch in s.text)]
        return self._stream(sentences)

    def _stream(self, sentences: list[Sentence]) -> Iterator[Utterance]:
        for sentence in sentences:
            utt = self.synthesize(sentence.text)
            utt.words = shift_words(utt.words, sentence.start)
            utt.char_offset = sentence.start
            yield utt
