"""espeak-ng through ctypes: formant speech for any language, with exact phoneme timings.

We talk to the libespeak-ng shipped by the `espeakng_loader` wheel (its own data dir; no system
install needed). The C library keeps all state in globals (current voice, parameters, synth
callback) and is not reentrant, so there is exactly one `_Espeak` object per process, created on
first use, and every call into the library happens under its lock.

(piper-tts links its own private copy of espeak-ng into its extension module; the two copies do
not share symbols or state, so using both in one process is fine.)
"""
from __future__ import annotations

import ctypes
import logging
import math
import os
import threading
from dataclasses import dataclass

import espeakng_loader
import numpy as np

from .espeak_phonemes import SIL, is_english, to_arpabet
from .timeline import normalize_phonemes, spans_to_phonemes
from .types import Phoneme, Word

log = logging.getLogger(__name__)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 1
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_PARAM_RATE, _PARAM_PITCH = 1, 3
_POS_CHARACTER = 1
_CHARS_UTF8, _ENDPAUSE = 0x1, 0x1000
_EE_OK = 0

DEFAULT_WPM = 175  # espeak's own default speaking rate; rate multipliers scale it
MIN_WPM, MAX_WPM = 80, 450  # what espeak-ng accepts without its "sonic" speed-up


class UnknownVoiceError(ValueError):
    pass


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character offset into the input
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms, truncated; we use `sample` instead
        ("sample", ctypes.c_int),  # sample index into the output audio
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # packed: (priority byte, "lang\0")*, then a 0 byte
        ("identifier", ctypes.c_char_p),  # file under espeak-ng-data/voices, e.g. "gmw/en-US"
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


@dataclass(frozen=True, slots=True)
class RawEvent:
    kind: int  # _EVENT_WORD or _EVENT_PHONEME
    char_pos: int  # 0-based character offset into the synthesized text
    sample: int
    mnemonic: str  # phoneme events only


class _Espeak:
    """The process-wide libespeak-ng handle. Use `_engine()`; never instantiate twice."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                              ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        data = espeakng_loader.get_data_path()
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(),
                                                 _INITIALIZE_PHONEME_EVENTS)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise with data at {data}")
        self._lib = lib
        self._chunks: list[np.ndarray] = []
        self._events: list[RawEvent] = []
        self._callback = _Callback(self._on_audio)  # keep a reference: C holds only the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None
        self.voices, self.variants = self._list_voices(os.path.join(data, "voices", "!v"))
        log.debug("espeak-ng ready: %d Hz, %d voices", self.sample_rate, len(self.voices))

    def _on_audio(self, wav, n: int, events) -> int:  # type: ignore[no-untyped-def]
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type in (_EVENT_WORD, _EVENT_PHONEME):
                mnemonic = bytes(e.id.string).split(b"\0")[0].decode("ascii", "replace") \
                    if e.type == _EVENT_PHONEME else ""
                self._events.append(RawEvent(e.type, e.text_position - 1, e.sample, mnemonic))
            i += 1
        return 0  # 0 = keep synthesizing

    def _list_voices(self, variants_dir: str) -> tuple[dict[str, str], frozenset[str]]:
        """Every name a voice answers to -> the name espeak_SetVoiceByName loads it by. A voice
        file is loaded by its own name; a language it lists ("en-gb", "zh") is not always a
        loadable name, so it maps to the file of the first voice that lists it."""
        names: dict[str, str] = {}
        table = self._lib.espeak_ListVoices(None)
        i = 0
        while table[i]:
            v = table[i].contents
            own = v.identifier.decode().rsplit("/", 1)[-1].lower()
            names[own] = own
            langs = ctypes.cast(v.languages, ctypes.POINTER(ctypes.c_char))
            j = 0
            while langs[j] != b"\0":  # priority byte, then a NUL-terminated language name
                name = ctypes.string_at(ctypes.addressof(langs.contents) + j + 1)
                names.setdefault(name.decode().lower(), own)
                j += len(name) + 2
            i += 1
        variants = frozenset(f.lower() for f in os.listdir(variants_dir)) \
            if os.path.isdir(variants_dir) else frozenset()
        return names, variants

    def _select(self, voice: str, rate_wpm: int | None = None, pitch: int | None = None) -> None:
        if voice != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise UnknownVoiceError(f"espeak-ng could not load voice {voice!r}")
            self._voice = voice
        # Parameters are global too: set them on every call, another caller may have changed them.
        self._lib.espeak_SetParameter(_PARAM_RATE, rate_wpm or DEFAULT_WPM, 0)
        self._lib.espeak_SetParameter(_PARAM_PITCH, 50 if pitch is None else pitch, 0)

    def synth(self, text: str, voice: str, rate_wpm: int, pitch: int) -> tuple[np.ndarray, list[RawEvent]]:
        data = text.encode("utf-8")
        with self.lock:
            self._select(voice, rate_wpm, pitch)
            self._chunks, self._events = [], []
            try:
                err = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0,
                                             _CHARS_UTF8 | _ENDPAUSE, None, None)
                if err != _EE_OK:
                    raise RuntimeError(f"espeak_Synth failed with code {err}")
                audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
                return audio, self._events
            finally:
                self._chunks, self._events = [], []

    def text_to_phonemes(self, text: str, voice: str) -> list[list[str]]:
        """Mnemonics per word, without synthesizing audio (espeak_TextToPhonemes)."""
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        words: list[list[str]] = []
        with self.lock:
            self._select(voice)
            while ptr.value:  # one call per clause; the library advances ptr, NULL at the end
                out = self._lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, ord("|") << 8)
                for word in (out or b"").decode("utf-8", "replace").split():
                    words.append([p for p in word.split("|") if p])
        return words


_ENGINE: _Espeak | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Espeak:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Espeak()
        return _ENGINE


def list_voices() -> list[str]:
    """Voice names accepted by espeak (language codes and voice files), e.g. "en-us", "de"."""
    return sorted(_engine().voices)


def sample_rate() -> int:
    return _engine().sample_rate


def list_variants() -> list[str]:
    """Variants that may follow a voice after "+", e.g. "f3" in "en-us+f3"."""
    return sorted(_engine().variants)


def resolve_voice(name: str) -> str:
    """Normalise and validate "lang[+variant]"; raises UnknownVoiceError with suggestions."""
    eng = _engine()
    base, _, variant = name.strip().lower().partition("+")
    if base not in eng.voices:
        close = sorted(v for v in eng.voices if v.startswith(base[:2]))[:8] or \
            ["en-us", "en", "de", "fr", "es"]
        raise UnknownVoiceError(f"unknown espeak voice {name!r}; try one of: {', '.join(close)}")
    if variant and variant not in eng.variants:
        some = ", ".join(sorted(eng.variants)[:10])
        raise UnknownVoiceError(f"unknown espeak voice variant {variant!r}; try one of: {some}")
    base = eng.voices[base]  # the name it loads by ("en-gb" is a language of the voice "en")
    return f"{base}+{variant}" if variant else base


# f0 relative to parameter 50, measured (autocorrelation, en-us, two sentences) for the
# parameter values 0, 10, ..., 100. Not symmetric: the curve is steeper above 50.
_PITCH_CURVE = (0.675, 0.723, 0.768, 0.838, 0.905, 1.0, 1.101, 1.221, 1.354, 1.514, 1.677)


def pitch_parameter(pitch: float) -> int:
    """Pitch multiplier -> espeak's 0..100 pitch parameter (50 = the voice's own pitch).

    espeak can only reach about 0.68x..1.68x of a voice's pitch; beyond that we clamp.
    """
    if not _PITCH_CURVE[0] <= pitch <= _PITCH_CURVE[-1]:
        log.debug("espeak pitch %.2f clamped to its reachable range", pitch)
    logs = np.log(np.asarray(_PITCH_CURVE))
    return int(round(float(np.interp(math.log(pitch), logs, np.arange(0, 101, 10)))))


def rate_wpm(rate: float) -> int:
    return int(round(min(MAX_WPM, max(MIN_WPM, DEFAULT_WPM * rate))))


@dataclass(frozen=True, slots=True)
class EspeakResult:
    audio: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    phonemes: list[Phoneme]  # contiguous, exact (from the synthesizer's own events)
    words: list[Word]  # char offsets into the synthesized text


def synthesize(text: str, voice: str = "en-us", rate: float = 1.0, pitch: float = 1.0) -> EspeakResult:
    """Speak `text` with an espeak voice; timings come straight from espeak's phoneme events."""
    eng = _engine()
    voice = resolve_voice(voice)
    pcm, events = eng.synth(text, voice, rate_wpm(rate), pitch_parameter(pitch))
    sr = eng.sample_rate
    audio = (pcm.astype(np.float32) / 32768.0)
    duration = 1000.0 * len(audio) / sr
    english = is_english(voice)

    phone_events = [e for e in events if e.kind == _EVENT_PHONEME]
    spans: list[tuple[tuple[str, ...], float, float]] = []
    owners: list[int] = []  # char position of the word each span belongs to (-1: none)
    # espeak emits several word events inside one written token ("1999" -> "nineteen ...");
    # group by the whitespace-delimited token so each written word appears once.
    word_starts = sorted({_run_start(text, e.char_pos) for e in events if e.kind == _EVENT_WORD})
    for i, e in enumerate(phone_events):
        start = 1000.0 * e.sample / sr
        end = 1000.0 * phone_events[i + 1].sample / sr if i + 1 < len(phone_events) else duration
        symbols = to_arpabet(e.mnemonic, english)
        spans.append((symbols, start, end))
        owners.append(_owner(word_starts, e.char_pos) if symbols != (SIL,) else -1)
    phonemes = normalize_phonemes(spans_to_phonemes(spans), duration)
    return EspeakResult(audio, sr, phonemes, _words(text, spans, owners))


def _owner(word_starts: list[int], pos: int) -> int:
    best = -1
    for s in word_starts:  # few words per sentence: a linear scan is fine
        if s <= pos:
            best = s
    return best


def _words(text: str, spans: list[tuple[tuple[str, ...], float, float]], owners: list[int]) -> list[Word]:
    # A word lasts from its first phoneme to its last. espeak's own word events are placed
    # early (inside the previous word's last phoneme) and their `length` is unreliable
    # ("Smith's" -> 5), so we read spans from the phonemes and extents from the text.
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for (symbols, start, end), owner in zip(spans, owners):
        if owner < 0 or not symbols:
            continue
        first.setdefault(owner, start)
        last[owner] = end
    words = []
    for pos in sorted(first):
        a, b = token_extent(text, pos)
        if b > a:
            words.append(Word(text[a:b], a, b, first[pos], last[pos]))
    return words


def _run_start(text: str, pos: int) -> int:
    pos = max(0, min(pos, len(text)))
    while pos > 0 and not text[pos - 1].isspace():
        pos -= 1
    return pos


def token_extent(text: str, pos: int) -> tuple[int, int]:
    """The word starting near `pos`: up to the next space, without surrounding punctuation."""
    pos = max(0, min(pos, len(text)))
    end = pos
    while end < len(text) and not text[end].isspace():
        end += 1
    start = pos
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return start, end


def word_phonemes(text: str, voice: str = "en-us") -> list[list[str]]:
    """ARPAbet pronunciation of each word espeak reads in `text` (numbers expand to words)."""
    voice = resolve_voice(voice)
    english = is_english(voice)
    out = []
    for mnemonics in _engine().text_to_phonemes(text, voice):
        arpa = [p for m in mnemonics for p in to_arpabet(m, english) if p != SIL]
        if arpa:
            out.append(arpa)
    return out
