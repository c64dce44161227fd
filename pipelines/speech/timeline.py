"""Turning raw (symbol, start) marks into the contiguous phoneme timelines Utterance promises.

Every backend produces timings of a different shape (espeak: start events; pocketsphinx: frame
spans; DTW: warped spans). They all end here, so the invariants live in one place: starts at 0,
ends at the audio duration, contiguous, monotonic, no zero-length entries, silence as one "SIL".
"""
from __future__ import annotations

from collections.abc import Sequence

from .types import ARPABET, Phoneme, Word

SIL = "SIL"


def spans_to_phonemes(spans: Sequence[tuple[Sequence[str], float, float]]) -> list[Phoneme]:
    """(ARPAbet expansion, start, end) -> phonemes; an expansion of n symbols shares its span."""
    out: list[Phoneme] = []
    for symbols, start, end in spans:
        if not symbols:
            continue
        step = (end - start) / len(symbols)
        for i, sym in enumerate(symbols):
            out.append(Phoneme(sym, start + i * step, start + (i + 1) * step))
    return out


def normalize_phonemes(phonemes: Sequence[Phoneme], duration_ms: float) -> list[Phoneme]:
    """Make a timeline contiguous over [0, duration_ms], filling gaps and both ends with SIL."""
    out: list[Phoneme] = []
    cursor = 0.0
    for ph in phonemes:
        sym = ph.symbol if ph.symbol in ARPABET else SIL
        start = min(max(ph.start_ms, cursor), duration_ms)
        end = min(max(ph.end_ms, start), duration_ms)
        if start > cursor:  # a hole: nobody claimed this audio, so it is silence
            _append(out, SIL, cursor, start)
        # Overlaps were clipped by starting at the cursor; zero-length entries vanish in _append.
        _append(out, sym, start, end)
        cursor = max(cursor, end)
    _append(out, SIL, cursor, duration_ms)
    if not out:  # empty audio still gets a (zero-length) timeline
        return [Phoneme(SIL, 0.0, duration_ms)]
    last = out[-1]  # float drift must not leave the last end a hair off the audio's end
    out[-1] = Phoneme(last.symbol, last.start_ms, duration_ms)
    return out


def _append(out: list[Phoneme], sym: str, start: float, end: float) -> None:
    if end <= start:
        return
    if out and sym == SIL and out[-1].symbol == SIL:  # one pause, not a stutter of pauses
        out[-1] = Phoneme(SIL, out[-1].start_ms, end)
        return
    out.append(Phoneme(sym, start, end))


def clip_words(words: Sequence[Word], duration_ms: float) -> list[Word]:
    """Clamp word spans into the audio and keep them ordered and non-overlapping."""
    out: list[Word] = []
    cursor = 0.0
    for w in words:
        start = min(max(w.start_ms, cursor), duration_ms)
        end = min(max(w.end_ms, start), duration_ms)
        out.append(Word(w.text, w.char_start, w.char_end, start, end))
        cursor = end
    return out


def shift_words(words: Sequence[Word], char_offset: int) -> list[Word]:
    return [
        Word(w.text, w.char_start + char_offset, w.char_end + char_offset, w.start_ms, w.end_ms)
        for w in words
    ]
