"""Text -> speech audio + phoneme/word timeline: the front door of pipelines.speech.

Voices: "joe" (piper, natural, English; the default) and every espeak-ng voice ("en-us", "de",
"fr", "en-us+f3", ...; robotic, but any language). Both give exact timings: espeak reports its
phoneme events, piper its durations (piper_timeline). `stream()` speaks one sentence at a time
so the first audio is ready after one sentence, not after the whole text; `start()` goes
further for piper and hands out a sentence's first words while the rest is still synthesized.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Iterator

import numpy as np

from . import espeak
from .piper_timeline import piper_timeline
from .piper_voice import HOP, PiperBackend, PiperSpeech
from .sentences import Sentence, split_sentences
from .timeline import shift_words
from .types import Utterance

DEFAULT_VOICE = "joe"
PIPER_VOICES = ("joe",)
RATE_RANGE = (0.5, 2.0)
# A streamed piper sentence: the first piece is this many latent frames (~0.37 s of audio),
# the second SECOND_PIECE_FRAMES (~1.1 s, decoded while the first plays), then pieces of
# MAX_PIECE_FRAMES (~4.5 s). Every decoded window carries 32 frames of context on each side
# that are thrown away (piper_voice.CONTEXT): pieces doubling from 16 spent 75 % more
# decoding than the sentence's own frames, 32/96/192 ~45 %, 32/96/384 ~30 %. A long piece
# holds its engine (~0.2 s on an idle cpu2) but delays only other continuation pieces, which
# have seconds of slack: sentence starts have their own engine (web/resources.py).
FIRST_PIECE_FRAMES = 32
SECOND_PIECE_FRAMES = 96
MAX_PIECE_FRAMES = 384
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

    def __init__(self, voice: str = DEFAULT_VOICE, rate: float = 1.0, pitch: float = 1.0,
                 seed: int | None = None, *, threads: int = 0) -> None:
        # seed: piper draws random noise for every sentence (its delivery varies); seeded, a
        # sentence comes out the same each time (training and evaluation data). espeak is
        # deterministic either way.
        self.seed = seed
        self.threads = threads  # piper's inference threads (piper_voice.PiperBackend)
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
        # Created on first use: the piper model takes ~1 s to load.
        self._piper: PiperBackend | None = None

    @property
    def is_piper(self) -> bool:
        return self.voice in PIPER_VOICES

    @property
    def sample_rate(self) -> int:
        return self._piper_backend().sample_rate if self.is_piper else espeak.sample_rate()

    def _piper_backend(self) -> PiperBackend:
        if self._piper is None:
            self._piper = PiperBackend(threads=self.threads)
        return self._piper

    def synthesize(self, text: str) -> Utterance:
        """One sentence (or any short text) -> audio and its timeline; offsets into `text`."""
        text = _check_text(text)
        if not self.is_piper:
            res = espeak.synthesize(text, self.voice, self.rate, self.pitch)
            return Utterance(text, res.audio, res.sample_rate, res.phonemes, res.words,
                             timing="espeak")
        piper = self._piper_backend()
        speech = piper.start(text, self.rate, self.pitch, self._rng(text))
        return self._piper_utterance(text, speech, piper.decode(speech))

    def start(self, text: str) -> Utterance:
        """Like synthesize(), but a piper sentence comes back with only its first piece of audio
        (`pending` > 0, `rest` set): the rest comes from more(), piece by piece. The timeline
        covers the whole sentence already. espeak sentences come back whole."""
        text = _check_text(text)
        if not self.is_piper or self.pitch != 1.0:  # pitch resamples: whole sentences only
            return self.synthesize(text)
        piper = self._piper_backend()
        speech = piper.start(text, self.rate, self.pitch, self._rng(text))
        head = piper.decode(speech, FIRST_PIECE_FRAMES)
        utt = self._piper_utterance(text, speech, head)
        if not speech.done:
            utt.pending = speech.total_frames * HOP - len(head)
            utt.rest = _Rest(speech, FIRST_PIECE_FRAMES)
        return utt

    def _rng(self, text: str) -> np.random.Generator | None:
        if self.seed is None:
            return None
        key = f"{text}|{self.rate:.6f}|{self.pitch:.6f}".encode()
        return np.random.default_rng([self.seed, zlib.crc32(key)])

    def more(self, rest: object) -> np.ndarray:
        """The next piece of a sentence begun with start(); empty once it is all out."""
        assert isinstance(rest, _Rest)
        if rest.speech.done:
            return np.zeros(0, np.float32)
        rest.piece = SECOND_PIECE_FRAMES if rest.piece < SECOND_PIECE_FRAMES else MAX_PIECE_FRAMES
        return self._piper_backend().decode(rest.speech, rest.piece)

    def _piper_utterance(self, text: str, speech: PiperSpeech, audio: np.ndarray) -> Utterance:
        piper = self._piper_backend()
        # With pitch the audio was resampled (whole sentences only): times shrink with it.
        scale = len(audio) / (speech.total_frames * HOP) if self.pitch != 1.0 and speech.done else 1.0
        phonemes, words = piper_timeline(
            text, [(s.phonemes, s.samples, s.lead_samples) for s in speech.sentences], piper.sample_rate,
            piper.phonemize_word, time_scale=scale)
        return Utterance(text, audio, piper.sample_rate, phonemes, words, timing="piper")

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


class _Rest:
    """A piper sentence still being decoded, and the size of the piece handed out last."""

    __slots__ = ("speech", "piece")

    def __init__(self, speech: PiperSpeech, piece: int) -> None:
        self.speech, self.piece = speech, piece

    @property
    def done(self) -> bool:
        return self.speech.done
