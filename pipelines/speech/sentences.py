"""Split text into sentences (with their offsets) so speech can stream one sentence at a time.

Latency is the point: the first sentence is spoken while the rest is still being synthesized,
so a sentence must be short enough to synthesize quickly, yet long enough to keep intonation.
Boundaries: . ! ? ; and line breaks. Abbreviations ("Dr.", "e.g."), initials ("J. Smith") and
decimals ("3.5") do not end a sentence. Sentences longer than MAX_WORDS are cut at commas and,
failing that, every MAX_WORDS words.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_WORDS = 30

# Lower-cased, without the final period. Titles and Latin shorthands that are nearly always
# followed by more of the same sentence.
ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st mt vs etc e.g i.e cf al approx dept est fig inc ltd co corp
    no vol ch sec p pp ca jan feb mar apr jun jul aug sep sept oct nov dec gen col lt sgt capt
    rev hon gov sen rep""".split()
)

# A terminator run (possibly "?!" or "...") plus closing quotes/brackets, then space or the end.
_END = re.compile(r"[.!?;]+[\"'”’)\]]*(?=\s|$)|\n+")
_COMMA = re.compile(r"[,:]\s|\s[-–—]\s")


@dataclass(frozen=True, slots=True)
class Sentence:
    text: str
    start: int  # offsets into the original text: original[start:end] == text
    end: int


def split_sentences(text: str, max_words: int = MAX_WORDS) -> list[Sentence]:
    out: list[Sentence] = []
    start = 0
    for m in _END.finditer(text):
        if m.group().startswith(".") and m.group().rstrip("\"'”’)]") == "." and _is_abbreviation(text, m.start()):
            continue
        out.extend(_split_long(text, start, m.end(), max_words))
        start = m.end()
    out.extend(_split_long(text, start, len(text), max_words))
    return out


def _is_abbreviation(text: str, dot: int) -> bool:
    word_start = dot
    while word_start > 0 and not text[word_start - 1].isspace():
        word_start -= 1
    token = text[word_start:dot].lstrip("\"'“‘([").lower()
    if token in ABBREVIATIONS:
        # "etc." often ends a sentence: trust a capital letter after it.
        return not (token == "etc" and text[dot + 1:].lstrip()[:1].isupper())
    if len(token) == 1 and token.isalpha():  # an initial: "J. R. R. Tolkien"
        return True
    return "." in token and all(part.isalpha() and len(part) <= 2 for part in token.split("."))  # "u.s"


def _split_long(text: str, start: int, end: int, max_words: int) -> list[Sentence]:
    """Trimmed [start, end) as one sentence, or cut at commas / every max_words words."""
    start, end = _trim(text, start, end)
    if start >= end:
        return []
    if len(text[start:end].split()) <= max_words:
        return [Sentence(text[start:end], start, end)]
    # Greedily pack comma clauses into pieces of at most max_words (when the clauses allow).
    cuts = [m.end() for m in _COMMA.finditer(text, start, end)] + [end]
    pieces: list[tuple[int, int]] = []
    piece_start, last_cut = start, start
    for cut in cuts:
        if len(text[piece_start:cut].split()) > max_words and last_cut > piece_start:
            pieces.append((piece_start, last_cut))
            piece_start = last_cut
        last_cut = cut
    pieces.append((piece_start, end))
    out = []
    for a, b in pieces:  # a clause that is still too long is cut by word count
        out.extend(_split_words(text, a, b, max_words))
    return out


def _split_words(text: str, start: int, end: int, max_words: int) -> list[Sentence]:
    out = []
    words = list(re.finditer(r"\S+", text[start:end]))
    for i in range(0, len(words), max_words):
        chunk = words[i:i + max_words]
        a, b = start + chunk[0].start(), start + chunk[-1].end()
        out.append(Sentence(text[a:b], a, b))
    return out


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
