"""Live text in: utterances that arrive while the session runs, whole (`say`) or in fragments
(`append`, e.g. an LLM's tokens), spoken sentence by sentence as soon as a sentence is complete.

    LiveText ──LiveSegment──► LiveSynthesize ──SpokenSegment, SpokenAudio──► (LiveArticulate)

An *utterance* is one `say`, or one run of `append`s closed by `flush`; it is split into
sentences (`LiveSegment`), each synthesized on its own so the first is heard while the next
is being written or synthesized. A sentence of the natural voice is handed on as soon as its
first words are decoded (SpokenSegment, with the whole timeline), its remaining audio follows in
pieces (SpokenAudio) while the first words play. Segments carry their utterance's id, their place in it and
the session epoch they were queued in: after an interrupt, older ones are dropped wherever
they are found.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines import EngineWorker
from realtime import Stage, StageContext

from .sentences import _is_abbreviation, split_sentences
from .stages import MoreSpeech, SpeechPiece, TextSegment
from .types import Utterance
from .events import SegmentAbandoned, SegmentFailed, Synthesized

log = logging.getLogger(__name__)
VoiceResolver = Callable[[str], Awaitable[EngineWorker[Any, Any]]]

# A sentence whose text ends like this is complete even when nothing follows it yet (a
# streaming client sends "world." and the space only with the next word: not waiting for it
# saves one token's delay).
_TERMINATED = re.compile(r"[.!?;]+[\"'”’)\]]*$")


@dataclass(frozen=True, slots=True)
class LiveSegment(TextSegment):
    """One sentence of an utterance; `offset` is where it starts in the utterance's text."""

    utterance_id: str = ""
    index: int = 0  # sentence number within the utterance
    last: bool = False  # the utterance ends with this segment (its text may be empty)
    voice: str = ""
    epoch: int = 0
    stream: bool = True  # live: hand on the first words before the sentence is synthesized


@dataclass(frozen=True, slots=True)
class SpokenSegment:
    """A segment and its speech (None when it had nothing to say or synthesis failed)."""

    segment: LiveSegment
    utterance: Utterance | None  # with `pending` > 0 its audio continues in SpokenAudio pieces
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SpokenAudio:
    """The next piece of a streamed sentence's audio (same segment as its SpokenSegment)."""

    segment: LiveSegment
    audio: np.ndarray
    done: bool


@dataclass(slots=True)
class _Open:
    """The utterance being written by `append`s."""

    utterance_id: str
    voice: str
    text: str = ""
    handed: int = 0  # text[:handed] has been cut into segments
    index: int = 0


def complete_prefix(text: str) -> int:
    """How much of `text` (from its start) consists of complete sentences: the offset just
    after the last sentence that is known to be finished."""
    sentences = split_sentences(text)
    if not sentences:
        return 0
    *done, last = sentences
    end = done[-1].end if done else 0
    rest = text[last.end:]
    if "\n" in rest or _ends_sentence(text, last.end):
        end = last.end
    return end


def _ends_sentence(text: str, end: int) -> bool:
    head = text[:end]
    if not _TERMINATED.search(head):
        return False
    stripped = head.rstrip("\"'”’)]")
    if stripped.endswith(".") and not stripped.endswith(".."):
        dot = len(stripped) - 1
        if dot > 0 and stripped[dot - 1].isdigit():
            return False  # "3." may become "3.5"
        if _is_abbreviation(text, dot):
            return False  # "Dr." is followed by a name
    return True


class LiveText(Stage):
    """The session's text input, fed by its owner (the websocket connection) while it runs.

    `say`, `append` and `flush` queue segments; the stage hands them on one at a time (the
    channel to synthesis is small, so the queue here is where utterances wait). The owner
    bounds how much may wait (utterance count, text length); `clear` empties it (interrupt).
    """

    inputs = ()

    def __init__(self, name: str, *, default_voice: str) -> None:
        super().__init__(name)
        self.default_voice = default_voice
        self._queue: deque[LiveSegment] = deque()
        self._wake = asyncio.Event()
        self._open: _Open | None = None
        self._ended = False

    # -- the owner's side ----------------------------------------------------------------
    def say(self, utterance_id: str, text: str, voice: str | None = None) -> None:
        self.flush()
        self._cut(_Open(utterance_id, voice or self.default_voice, text), len(text), last=True)

    def append(self, utterance_id: str, fragment: str, voice: str | None = None) -> None:
        """Adds to the open utterance (opening one if needed; a different id closes the open
        one first) and queues every sentence the text now completes."""
        if self._open is not None and self._open.utterance_id != utterance_id:
            self.flush()
        if self._open is None:
            self._open = _Open(utterance_id, voice or self.default_voice)
        u = self._open
        u.text += fragment
        cut = u.handed + complete_prefix(u.text[u.handed:])
        self._cut(u, cut, last=False)

    def flush(self) -> None:
        """The open utterance is complete: queue what is left of it, marked last."""
        u, self._open = self._open, None
        if u is not None:
            self._cut(u, len(u.text), last=True)

    @property
    def open_utterance(self) -> str | None:
        return self._open.utterance_id if self._open else None

    @property
    def open_chars(self) -> int:
        return len(self._open.text) if self._open else 0

    def clear(self) -> None:
        """Forget everything queued and the open utterance (after an interrupt)."""
        self._queue.clear()
        self._open = None

    def end(self) -> None:
        """No more text: the stage returns once the queue is handed on (end of stream)."""
        self.flush()
        self._ended = True
        self._wake.set()

    def _cut(self, u: _Open, upto: int, *, last: bool) -> None:
        piece = u.text[u.handed:upto]
        segments = [s for s in split_sentences(piece) if any(ch.isalnum() for ch in s.text)]
        for i, s in enumerate(segments):
            self._push(LiveSegment(s.text, u.handed + s.start, utterance_id=u.utterance_id, index=u.index,
                                   last=last and i == len(segments) - 1, voice=u.voice))
            u.index += 1
        if last and not segments:  # nothing (more) to say: still tell downstream it ended
            self._push(LiveSegment("", len(u.text), utterance_id=u.utterance_id, index=u.index,
                                   last=True, voice=u.voice))
        u.handed = upto

    def _push(self, seg: LiveSegment) -> None:
        self._queue.append(seg)
        self._wake.set()

    # -- the graph's side ----------------------------------------------------------------
    async def run(self, ctx: StageContext) -> None:
        out = ctx.output()
        while True:
            while not self._queue:
                if self._ended:
                    return
                self._wake.clear()
                await self._wake.wait()
            seg = self._queue.popleft()
            # Stamped when handed on: anything queued before an interrupt was cleared above.
            await out.put(dataclasses.replace(seg, epoch=ctx.epoch()))


class LiveSynthesize(Stage):
    """LiveSegments in, SpokenSegments out, through the TTS engine of each segment's voice.

    A sentence the voice cannot speak, or whose synthesis fails for any other reason (the
    engine raised), is reported (`segment_failed`) and skipped: the session goes on. Results of an epoch that ended while synthesizing are discarded."""

    def __init__(self, name: str, voices: VoiceResolver, *, budget_s: float = 1.0, margin_s: float = 0.1) -> None:
        super().__init__(name, budget_s=budget_s)
        self.voices = voices
        # Synthesis is asked for each piece `margin_s` before its audio is needed: the speech
        # engine is shared by every session and runs the earliest deadline first.
        self.margin_s = margin_s

    async def run(self, ctx: StageContext) -> None:
        meter = ctx.meter(self)
        # Where the sentences handed on sit on the clock (an estimate: the articulator starts a
        # sentence at its next frame, or when the one before it ends, and plays it to its end
        # on time whether its audio pieces came or not). `free_at`: when the last one handed on
        # ends; idle (-inf), the next sentence is needed now. A piece is due when the audio
        # handed on before it runs out; a piece that cannot arrive before its sentence ends
        # would never be heard: paced, it is not waited for (its synthesis is abandoned).
        free_at = -math.inf
        epoch = ctx.epoch()

        def due(played_out: float) -> float:
            return max(ctx.clock.now(), played_out - self.margin_s)

        async for seg in ctx.input():
            if not isinstance(seg, LiveSegment) or seg.epoch < ctx.epoch():
                continue
            if seg.epoch != epoch:  # interrupted: nothing queued plays any more
                epoch, free_at = seg.epoch, -math.inf
            meter.frames_in()
            utt, error, worker = None, None, None
            if any(ch.isalnum() for ch in seg.text):
                t0 = ctx.clock.now()
                try:
                    worker = await self.voices(seg.voice)
                    [utt] = await _run(worker, [seg], due(free_at))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - bad text or a failing voice: this sentence only
                    error = " ".join(str(exc).split())[:300] or type(exc).__name__
                    if not isinstance(exc, ValueError):  # not the text's fault: worth a look
                        log.warning("synthesis failed (%s): %s", seg.voice, error)
                    ctx.report(SegmentFailed(utterance_id=seg.utterance_id, index=seg.index,
                                             message=error, epoch=seg.epoch))
                meter.work(ctx.clock.now() - t0)
            if seg.epoch < ctx.epoch():
                continue  # interrupted while we were synthesizing
            if utt is not None:
                ctx.report(Synthesized(utterance_id=seg.utterance_id, index=seg.index, text=seg.text,
                                       timing=utt.timing, duration=utt.duration_ms / 1000))
            await ctx.output().put(SpokenSegment(seg, utt, error))
            meter.frames_out()
            if utt is None or len(utt.audio) == 0:
                continue
            rate = utt.sample_rate
            start = max(ctx.clock.now(), free_at)
            free_at = end = start + utt.total_samples / rate
            handed = len(utt.audio)
            rest = utt.rest
            while rest is not None and worker is not None and seg.epoch >= ctx.epoch():
                t0 = ctx.clock.now()
                job = _run(worker, [MoreSpeech(rest, first=handed == len(utt.audio))], due(start + handed / rate))
                try:
                    [piece] = await (_before(ctx, job, end) if ctx.paced else job)
                except asyncio.CancelledError:
                    raise
                except TimeoutError:  # its sentence has ended on screen: nobody would hear it
                    meter.work(ctx.clock.now() - t0)
                    ctx.report(SegmentAbandoned(utterance_id=seg.utterance_id, index=seg.index, epoch=seg.epoch,
                                                lost_s=max(0.0, utt.total_samples - handed) / rate))
                    break
                except Exception as exc:  # noqa: BLE001 - the rest of this sentence is lost, not the session
                    message = " ".join(str(exc).split())[:300] or type(exc).__name__
                    log.warning("synthesis failed mid-sentence (%s): %s", seg.voice, message)
                    ctx.report(SegmentFailed(utterance_id=seg.utterance_id, index=seg.index,
                                             message=message, epoch=seg.epoch))
                    piece = SpeechPiece(np.zeros(0, np.float32), done=True)  # end it where it is
                meter.work(ctx.clock.now() - t0)
                assert isinstance(piece, SpeechPiece)
                if seg.epoch < ctx.epoch():
                    break
                await ctx.output().put(SpokenAudio(seg, piece.audio, piece.done))
                handed += len(piece.audio)
                if piece.done:
                    break


async def _before(ctx: StageContext, job: Any, when: float) -> Any:
    """`job`'s result if it comes before `when` on the session's clock; else it is cancelled
    (a queued synthesis job is then skipped) and TimeoutError raised."""
    task = asyncio.ensure_future(job)
    timer = asyncio.ensure_future(ctx.clock.sleep_until(when))
    try:
        await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise TimeoutError
    return task.result()


async def _run(worker: Any, items: list[Any], deadline: float) -> list[Any]:
    """A shared speech engine takes a deadline (web/resources.py VoiceWorker); a plain engine
    worker does not need one."""
    if getattr(worker, "takes_deadline", False):
        return await worker.run(items, deadline=deadline)
    return await worker.run(items)


__all__ = ["LiveSegment", "LiveSynthesize", "LiveText", "SpokenAudio", "SpokenSegment", "VoiceResolver", "complete_prefix"]
