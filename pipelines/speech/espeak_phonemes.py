"""espeak-ng phoneme mnemonics -> the engine's ARPAbet (see types.ARPABET).

espeak names phonemes with its own ASCII mnemonics (Kirshenbaum-like: "@" schwa, "3:" nurse,
"aI" price, "T" thin, "tS" church ...), prefixed with stress marks ("'" primary, "," secondary).
English gets an exact table; other languages share a table by articulation (what the lips and
tongue do matters to the viseme function, not phonemic identity). Anything unknown degrades to
the nearest ARPAbet by its first character: a lookup must never fail, voices ship new symbols.
"""
from __future__ import annotations

from .types import ARPABET

SIL = "SIL"
Expansion = tuple[str, ...]

# Stress / length / syllable marks that espeak glues onto a phoneme name.
_STRESS = "',%=!"

# English (en, en-us, en-gb...). Diphthongs with r-colouring become two phonemes, as in cmudict
# ("fire" = AY ER, "square" = EH R), so the aligner's and espeak's sequences look alike.
_ENGLISH: dict[str, Expansion] = {
    "@": ("AH",), "@2": ("AH",), "@5": ("AH",), "@-": ("AH",), "@L": ("AH", "L"),
    "3": ("ER",), "3:": ("ER",), "3:r": ("ER",), "@r": ("ER",),
    "a": ("AE",), "aa": ("AE",), "a#": ("AH",), "a2": ("AH",),
    "A:": ("AA",), "A@": ("AA", "R"), "A": ("AA",), "0": ("AA",), "O2": ("AO",),
    "O": ("AO",), "O:": ("AO",), "O@": ("AO", "R"), "o@": ("AO", "R"),
    "E": ("EH",), "e@": ("EH", "R"), "eI": ("EY",),
    "I": ("IH",), "I2": ("IH",), "I#": ("IH",), "i": ("IY",), "i:": ("IY",),
    "i@": ("IY", "AH"), "i@3": ("IH", "R"),
    "U": ("UH",), "U@": ("UH", "R"), "u:": ("UW",), "u": ("UW",), "V": ("AH",),
    "aI": ("AY",), "aI@": ("AY", "ER"), "aI3": ("AY", "ER"), "aU": ("AW",), "aU@": ("AW", "ER"),
    "OI": ("OY",), "oU": ("OW",), "@U": ("OW",), "o": ("OW",),
    "t#": ("T",), "t2": ("T",), "d#": ("D",), "n-": ("N",), "l-": ("L",), "m-": ("M",),
    "r-": ("R",), "?": ("T",), "x": ("K",), "l/": ("L",), "w#": ("W",),
}

# Shared by all languages (and English's fallback): consonants and the cardinal vowels.
_COMMON: dict[str, Expansion] = {
    "p": ("P",), "b": ("B",), "t": ("T",), "d": ("D",), "k": ("K",), "g": ("G",),
    "f": ("F",), "v": ("V",), "s": ("S",), "z": ("Z",), "h": ("HH",), "m": ("M",),
    "n": ("N",), "l": ("L",), "r": ("R",), "w": ("W",), "j": ("Y",),
    "T": ("TH",), "D": ("DH",), "S": ("SH",), "Z": ("ZH",), "N": ("NG",),
    "tS": ("CH",), "dZ": ("JH",), "ts": ("T", "S"), "dz": ("D", "Z"), "pF": ("P", "F"),
    "c": ("K",), "J": ("N", "Y"), "n^": ("N", "Y"), "l^": ("L", "Y"), "L": ("L",),
    "C": ("HH",), "x": ("HH",), "X": ("HH",), "Q": ("G",), "B": ("B",), "G": ("G",),
    "R": ("R",), "R2": ("R",), "*": ("R",), "**": ("R",), "z2": ("Z",), "?": ("T",),
    "a": ("AA",), "a:": ("AA",), "A": ("AA",), "A:": ("AA",), "e": ("EY",), "e:": ("EY",),
    "E": ("EH",), "E:": ("EH",), "i": ("IY",), "i:": ("IY",), "I": ("IH",),
    "o": ("OW",), "o:": ("OW",), "O": ("AO",), "O:": ("AO",), "u": ("UW",), "u:": ("UW",),
    "U": ("UH",), "@": ("AH",), "3": ("ER",), "V": ("AH",),
    # Front rounded vowels (German ü/ö, French u/eu): the lips round, so pick rounded ARPAbet.
    "y": ("UW",), "y:": ("UW",), "Y": ("UH",), "Y:": ("ER",), "W": ("ER",),
    # Nasal vowels keep their oral vowel; the velum is invisible.
    "A~": ("AA",), "E~": ("EH",), "O~": ("OW",), "W~": ("ER",), "a~": ("AA",),
    "aI": ("AY",), "aU": ("AW",), "OY": ("OY",), "OI": ("OY",), "eI": ("EY",), "oU": ("OW",),
}

# Last resort: first character of the symbol, by place/manner of articulation.
_FIRST_CHAR: dict[str, str] = {
    "a": "AA", "e": "EH", "i": "IY", "o": "OW", "u": "UW", "y": "UW", "@": "AH", "3": "ER",
    "A": "AA", "E": "EH", "I": "IH", "O": "AO", "U": "UH", "V": "AH", "Y": "UH", "W": "ER",
    "0": "AA", "8": "UH", "6": "AH", "9": "ER", "&": "AE",
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "q": "K", "c": "K",
    "f": "F", "v": "V", "s": "S", "z": "Z", "h": "HH", "m": "M", "n": "N", "l": "L",
    "r": "R", "w": "W", "j": "Y", "x": "HH", "T": "TH", "D": "DH", "S": "SH", "Z": "ZH",
    "N": "NG", "C": "HH", "X": "HH", "Q": "G", "B": "B", "G": "G", "R": "R", "J": "N",
    "L": "L", "M": "M", "H": "HH", "K": "K", "P": "P", "F": "F", "*": "R", "?": "T",
}

# espeak modifiers that carry no articulation of their own (e.g. ";" palatalisation).
_IGNORED = {"", ";", "#", ":", "-", "^", "~", "/", "|", "||"}


def strip_stress(mnemonic: str) -> str:
    return mnemonic.lstrip(_STRESS)


def to_arpabet(mnemonic: str, english: bool = True) -> Expansion:
    """ARPAbet phonemes for one espeak mnemonic; () for symbols that are pure modifiers."""
    sym = strip_stress(mnemonic.strip())
    if sym.startswith("_"):  # "_", "_:", "_!", "_|": pauses of various lengths
        return (SIL,)
    if sym in _IGNORED:
        return ()
    tables = (_ENGLISH, _COMMON) if english else (_COMMON,)
    # Try the full name, then drop trailing variant marks ("r#" -> "r", "I2" -> "I").
    candidate = sym
    while candidate:
        for table in tables:
            if candidate in table:
                return table[candidate]
        candidate = candidate[:-1]
    first = _FIRST_CHAR.get(sym[0], "AH")
    return (first,)


def is_english(voice: str) -> bool:
    return voice.lower().split("+")[0].startswith("en")


def _check_tables() -> None:
    # Cheap import-time guard against typos in the tables above.
    for table in (_ENGLISH, _COMMON):
        for expansion in table.values():
            assert all(p in ARPABET for p in expansion), expansion
    assert all(p in ARPABET for p in _FIRST_CHAR.values())


_check_tables()
