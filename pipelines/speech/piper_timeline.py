"""Piper's exact durations -> the engine's timeline (ARPAbet phonemes and words with offsets).

Piper speaks espeak-ng's IPA, one code point per symbol ("aɪ" is "a" + "ɪ"), with " " between
words, stress marks and punctuation as symbols of their own, and gives every symbol a number of
samples (piper_voice.PiperSentence). Here the code points are merged into ARPAbet phonemes
(diphthongs and affricates become one) and the IPA words are matched to the words of the text.

Words: espeak does not keep the text's words one to one ("in the" -> "ɪnðə", "1990" -> two
words), so each token of the text is phonemized alone and the concatenation is matched to the
sentence's IPA by longest common blocks (difflib): every IPA symbol gets the token whose
pronunciation it matched, and a word spans its symbols. Tokens that matched nothing sit between
their neighbours.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

from .align import tokenize
from .timeline import clip_words, normalize_phonemes, spans_to_phonemes
from .types import Phoneme, Word

SIL = "SIL"
# Two-symbol units first: they are one phoneme in ARPAbet (and one mouth gesture).
_PAIRS: dict[str, tuple[str, ...]] = {
    "aɪ": ("AY",), "aʊ": ("AW",), "eɪ": ("EY",), "oʊ": ("OW",), "ɔɪ": ("OY",), "əʊ": ("OW",),
    "tʃ": ("CH",), "dʒ": ("JH",), "ɪə": ("IH", "AH"), "eə": ("EH", "R"), "ʊə": ("UH", "R"),
}
_SINGLE: dict[str, tuple[str, ...]] = {
    "ə": ("AH",), "ɐ": ("AH",), "ʌ": ("AH",), "æ": ("AE",), "a": ("AE",), "ɑ": ("AA",),
    "ɒ": ("AA",), "ɔ": ("AO",), "ɛ": ("EH",), "e": ("EH",), "ɪ": ("IH",), "ᵻ": ("IH",),
    "i": ("IY",), "ʊ": ("UH",), "u": ("UW",), "o": ("OW",), "ɜ": ("ER",), "ɚ": ("ER",),
    "ɝ": ("ER",), "ɨ": ("IH",), "y": ("UW",), "ø": ("UH",),
    "p": ("P",), "b": ("B",), "t": ("T",), "d": ("D",), "k": ("K",), "ɡ": ("G",), "g": ("G",),
    "f": ("F",), "v": ("V",), "θ": ("TH",), "ð": ("DH",), "s": ("S",), "z": ("Z",),
    "ʃ": ("SH",), "ʒ": ("ZH",), "h": ("HH",), "x": ("K",), "ç": ("HH",), "m": ("M",),
    "n": ("N",), "ŋ": ("NG",), "l": ("L",), "ɫ": ("L",), "ɬ": ("L",), "ɹ": ("R",), "r": ("R",),
    "ɾ": ("T",), "ʔ": ("T",), "w": ("W",), "j": ("Y",), "ʲ": ("Y",),
}
# Marks that belong to the symbol before them (length) or after them (stress): no time of their
# own in speech, so their samples go to a neighbour.
_LENGTH = "ːˑ̩̃"
_STRESS = "ˈˌ"
_WORD_BREAK = set(" ,.;:!?—–-…\"()")
_PAUSE_MS = 100.0  # a gap between words at least this long is a pause (closed mouth)


def piper_timeline(text: str, sentences: Sequence[tuple[list[str], Sequence[int], int]],
                   sample_rate: int, phonemize: Callable[[str], str],
                   time_scale: float = 1.0) -> tuple[list[Phoneme], list[Word]]:
    """(phonemes, words) of `text` spoken as `sentences` of (symbols, samples per symbol, lead
    samples), times in ms of the audio (multiplied by `time_scale`: 1/pitch for the tape trick).
    `phonemize(word)` gives espeak's IPA of one word (for matching words)."""
    ms = 1000.0 * time_scale / sample_rate
    spans: list[tuple[tuple[str, ...], float, float]] = []
    symbols: list[tuple[str, float, float]] = []  # every symbol with its time, for the words
    t = 0
    for syms, samples, lead in sentences:
        t += lead
        starts = [t]
        for n in samples:
            starts.append(starts[-1] + int(n))
        t = starts[-1]
        # A stress mark's time belongs to the syllable it marks (so to that word).
        own = [starts[i - 1] if i > 0 and syms[i - 1] in _STRESS else starts[i] for i in range(len(syms))]
        symbols += [(s, own[i] * ms, starts[i + 1] * ms) for i, s in enumerate(syms)]
        spans += _arpabet_spans(syms, [x * ms for x in starts])
    duration = t * ms
    phonemes = normalize_phonemes(spans_to_phonemes(spans), duration)
    return phonemes, clip_words(_words(text, symbols, phonemize), duration)


def _arpabet_spans(syms: list[str], starts: list[float]) -> list[tuple[tuple[str, ...], float, float]]:
    out: list[tuple[tuple[str, ...], float, float]] = []
    i = 0
    while i < len(syms):
        s = syms[i]
        pair = s + syms[i + 1] if i + 1 < len(syms) else ""
        if pair in _PAIRS:
            out.append((_PAIRS[pair], starts[i], starts[i + 2]))
            i += 2
            continue
        if s in _SINGLE:
            out.append((_SINGLE[s], starts[i], starts[i + 1]))
        elif s in _LENGTH and out and out[-1][0] != (SIL,):
            out[-1] = (out[-1][0], out[-1][1], starts[i + 1])  # a long vowel: the vowel lasts
        elif s in _WORD_BREAK and (s != " " or starts[i + 1] - starts[i] >= _PAUSE_MS):
            out.append(((SIL,), starts[i], starts[i + 1]))
        # Stress marks, the short gap between words and symbols of other languages: their time
        # goes to the next phoneme (a mouth does not close between the words of a phrase).
        i += 1
    # Holes left by stress marks and unknown symbols go to the phoneme after them; the short
    # gap between two words goes to the phoneme before it (phonemes keep their own starts).
    for k in range(1, len(out)):
        sym, a, b = out[k]
        prev_sym, prev_a, prev_end = out[k - 1]
        if a > prev_end and sym != (SIL,):
            gap = next((j for j in range(len(starts) - 1) if starts[j] >= prev_end and syms[j] == " "
                        and starts[j + 1] <= a), None)
            if gap is not None and prev_sym != (SIL,):
                out[k - 1] = (prev_sym, prev_a, starts[gap + 1])
                prev_end = starts[gap + 1]
            out[k] = (sym, min(a, prev_end), b)
    return out


def _words(text: str, symbols: list[tuple[str, float, float]],
           phonemize: Callable[[str], str]) -> list[Word]:
    tokens = tokenize(text)
    if not tokens:
        return []
    spoken = [(i, s) for i, (s, _, _) in enumerate(symbols) if s not in _WORD_BREAK and s not in _STRESS]
    sentence = "".join(s for _, s in spoken)
    reference, owner = "", []
    for k, tok in enumerate(tokens):
        ipa = "".join(ch for ch in phonemize(tok.text) if ch not in _WORD_BREAK and ch not in _STRESS)
        reference += ipa
        owner += [k] * len(ipa)
    spans: list[list[float]] = [[] for _ in tokens]
    matcher = difflib.SequenceMatcher(None, reference, sentence, autojunk=False)
    for block in matcher.get_matching_blocks():
        for d in range(block.size):
            _, a, b = symbols[spoken[block.b + d][0]]
            spans[owner[block.a + d]] += [a, b]
    words, cursor = [], 0.0
    for k, tok in enumerate(tokens):
        if spans[k]:
            start, end = min(spans[k]), max(spans[k])
        else:  # matched nothing: a zero-length word where the next matched word begins
            nxt = next((min(s) for s in spans[k + 1:] if s), cursor)
            start = end = max(cursor, nxt)
        start = max(start, cursor)
        words.append(Word(tok.text, tok.char_start, tok.char_end, start, max(end, start)))
        cursor = max(end, start)
    return words
