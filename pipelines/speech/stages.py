"""Stages of the speech concern: text in, synthesized utterances out, sentence by sentence."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from engines import Engine, EngineWorker
from realtime import Stage, StageContext

from .sentences import split_sentences
from .tts import SpeechSynthesizer
from .types import Utterance, Word


@dataclass(frozen=True, slots=True)
class TextSegment:
    """A piece of text to speak (in-stream, never late); `offset` locates it in the request."""

    text: str
    offset: int = 0
    # Live sessions want a sentence's first words as soon as they exist (SpeechSynthesizer.start):
    # the Utterance may then come back with only its beginning, the rest through MoreSpeech.
    stream: bool = False


@dataclass(frozen=True, slots=True)
class MoreSpeech:
    """Asks the engine for the next piece of a streamed sentence (an Utterance's `rest`).
    `first`: the piece right after the sentence's first words, due as soon as they are."""

    rest: object
    first: bool = False


@dataclass(frozen=True, slots=True)
class SpeechPiece:
    audio: np.ndarray  # continues the sentence's audio where the last piece ended
    done: bool  # the sentence is complete with this piece


class SpeechEngine(Engine[TextSegment | MoreSpeech, Utterance | SpeechPiece]):
    """The synthesizer behind the engine interface, so TTS runs on its own thread."""

    name = "tts"

    def __init__(self, synthesizer: SpeechSynthesizer) -> None:
        self.synth = synthesizer

    def load(self) -> None:
        pass  # the synthesizer loads its voice lazily on first use

    def warmup(self) -> None:
        self.synth.synthesize("Hello.")

    def run_batch(self, items: Sequence[TextSegment | MoreSpeech]) -> list[Utterance | SpeechPiece]:
        out: list[Utterance | SpeechPiece] = []
        for seg in items:
            if isinstance(seg, MoreSpeech):
                audio = self.synth.more(seg.rest)
                out.append(SpeechPiece(audio, done=bool(getattr(seg.rest, "done", True))))
                continue
            utt = self.synth.start(seg.text) if seg.stream else self.synth.synthesize(seg.text)
            utt.words = [dataclasses.replace(w, char_start=w.char_start + seg.offset,
                                             char_end=w.char_end + seg.offset) for w in utt.words]
            out.append(utt)
        return out


class TextSource(Stage):
    """Splits a text into sentences and hands them on one at a time, so synthesis streams
    (the first sentence is heard while the next is synthesized)."""

    inputs = ()

    def __init__(self, name: str, texts: Iterable[str]) -> None:
        super().__init__(name)
        self.texts = texts

    async def run(self, ctx: StageContext) -> None:
        for text in self.texts:
            for s in split_sentences(text):
                await ctx.output().put(TextSegment(s.text, s.start))


class Synthesize(Stage):
    def __init__(self, name: str, worker: EngineWorker[TextSegment, Utterance], *,
                 budget_s: float = 1.0) -> None:
        super().__init__(name, budget_s=budget_s)
        self.worker = worker

    async def run(self, ctx: StageContext) -> None:
        meter = ctx.meter(self)
        async for seg in ctx.input():
            if not isinstance(seg, TextSegment):
                continue
            meter.frames_in()
            t0 = ctx.clock.now()
            [utt] = await self.worker.run([seg])
            meter.work(ctx.clock.now() - t0)
            ctx.event("synthesized", text=seg.text, offset=seg.offset, timing=utt.timing,
                      duration=utt.duration_ms / 1000)
            await ctx.output().put(utt)
            meter.frames_out()


__all__ = ["MoreSpeech", "SpeechEngine", "SpeechPiece", "Synthesize", "TextSegment", "TextSource", "Utterance", "Word"]
