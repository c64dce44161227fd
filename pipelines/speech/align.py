"""Forced alignment: where, in audio of known text, each word and phoneme lies.

Piper's "joe" voice gives audio only, so its timeline is recovered here with pocketsphinx 5
(CMU en-us acoustic model + cmudict, both shipped in the wheel): a two-pass decode constrained
to the known word sequence, then a sub-word (phone) alignment pass. Frames are 10 ms.

Words missing from cmudict (names, "café", numbers) get their pronunciation from espeak, which
is also what piper itself used to pronounce them (piper phonemizes with espeak), so the
dictionary entry matches the audio. If the decode still fails (odd text, audio that does not
match), we fall back to DTW between MFCCs of the audio and an espeak rendition of the same text,
whose timings are exact; the result's `method` says which one produced the timeline.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass

import numpy as np
from scipy.fft import dct
from scipy.signal import resample_poly

from . import espeak
from .timeline import clip_words, normalize_phonemes, spans_to_phonemes
from .types import ARPABET, Phoneme, Word

log = logging.getLogger(__name__)

ALIGN_RATE = 16000  # the acoustic model's sample rate
FRAME_MS = 10.0
_PADS_MS = (100, 250)  # silence around the audio (the <s>/</s> models need room); 2nd = retry
# Numbers (with decimals/thousands and ordinal or plural suffixes: "3.5", "1,000", "5th",
# "1990s") are one token each; words keep inner apostrophes ("didn't").
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*(?:(?:st|nd|rd|th|s)(?![^\W\d_]))?|[^\W\d_]+(?:['’][^\W\d_]+)*")
_ALT = re.compile(r"\(\d+\)$")  # cmudict alternate pronunciation suffix: "the(2)"


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    char_start: int
    char_end: int


@dataclass(slots=True)
class Alignment:
    phonemes: list[Phoneme]
    words: list[Word]
    method: str  # "pocketsphinx", "pocketsphinx-words", "dtw" or "proportional"


def tokenize(text: str) -> list[Token]:
    """Words and numbers of `text` with their character offsets (punctuation is not spoken)."""
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


class ForcedAligner:
    """Aligns English speech to its text. Not shared between threads without its lock (held)."""

    def __init__(self) -> None:
        self._decoder = None
        self._known: dict[str, str] = {}  # token -> dictionary word, incl. the ones we added
        self._lock = threading.Lock()

    def _load(self):  # type: ignore[no-untyped-def]
        if self._decoder is None:
            from pocketsphinx import Decoder

            # lm=None: no language model, we only ever search the known word sequence.
            self._decoder = Decoder(lm=None, samprate=ALIGN_RATE, loglevel="FATAL")
        return self._decoder

    def align(self, audio: np.ndarray, sample_rate: int, text: str) -> Alignment:
        duration = 1000.0 * len(audio) / sample_rate
        with self._lock:
            try:
                result = self._align_pocketsphinx(audio, sample_rate, text, duration)
                if result is not None:
                    return result
            except RuntimeError as exc:  # pocketsphinx reports grammar/search failures this way
                log.info("pocketsphinx alignment failed (%s) for %r", exc, text)
        try:
            return align_dtw(audio, sample_rate, text)
        except Exception:  # noqa: BLE001 - any failure here still must not lose the utterance
            log.exception("DTW alignment failed for %r; spreading espeak's timeline", text)
            return align_proportional(duration, text)

    # -- pocketsphinx -------------------------------------------------------------------------

    def _dictionary_word(self, token: Token, spoken: str) -> str | None:
        """The decoder's dictionary word for a token, adding an espeak pronunciation if needed.

        `spoken` is what espeak should read for it: the token, or for numbers the whole
        "$5" / "50%" run around it, since piper says "five dollars" there.
        """
        key = token.text.lower().replace("’", "'")
        if spoken != token.text:
            key = spoken.lower()
        if key in self._known:
            return self._known[key]
        decoder = self._load()
        word: str | None = key
        if not (key.isascii() and key.replace("'", "").isalpha() and decoder.lookup_word(key)):
            # Numbers ("1999" -> "nineteen ninety nine") and unknown words: one dictionary entry
            # holding espeak's whole reading, so the token stays one unit in the timeline.
            phones = [p for w in espeak.word_phonemes(spoken, "en-us") for p in w]
            if phones:
                word = "x_" + key.encode().hex()  # plain ASCII, cannot clash with cmudict
                decoder.add_word(word, " ".join(phones), True)
            else:
                word = None  # nothing is pronounced (e.g. a lone symbol)
        self._known[key] = word  # type: ignore[assignment]
        return word

    def _align_pocketsphinx(self, audio: np.ndarray, sample_rate: int, text: str,
                            duration: float) -> Alignment | None:
        tokens: list[Token] = []
        words: list[str] = []
        all_tokens = tokenize(text)
        for tok in all_tokens:
            word = self._dictionary_word(tok, _spoken_form(text, tok, all_tokens))
            if word is not None:
                tokens.append(tok)
                words.append(word)
        if not words:
            return None
        decoder = self._load()
        word_level: list[tuple[str, float, float]] | None = None
        # The phone pass (state alignment) occasionally loses every path on piper audio
        # (~1 in 20-40 sentences). Its failures depend on the exact frames, so one retry with a
        # different amount of padding usually succeeds; if not, the word pass still stands.
        for pad_ms in _PADS_MS:
            pcm = _to_pcm16k(audio, sample_rate, pad_ms)
            decoder.set_align_text(" ".join(words))
            _decode(decoder, pcm)  # pass 1: word segmentation
            if decoder.hyp() is None:
                continue
            word_level = [(seg.word, _ms(seg.start_frame, pad_ms), _ms(seg.end_frame + 1, pad_ms))
                          for seg in decoder.seg()]
            try:
                decoder.set_alignment()
                _decode(decoder, pcm)  # pass 2: phone and state segmentation inside the words
                entries = [(e.name, _ms(e.start, pad_ms), _ms(e.start + e.duration, pad_ms),
                            [(ph.name, _ms(ph.start, pad_ms), _ms(ph.start + ph.duration, pad_ms))
                             for ph in e]) for e in decoder.get_alignment()]
                return _alignment(tokens, entries, duration, "pocketsphinx")
            except RuntimeError as exc:
                log.info("pocketsphinx phone pass failed (%s, pad %d ms) for %r", exc, pad_ms, text)
        if word_level is None:
            raise RuntimeError("no word-level alignment")
        # Word boundaries from pass 1; inside each word its dictionary phones share the span.
        entries = []
        for name, start, end in word_level:
            phones = (decoder.lookup_word(name) or "SIL").split()
            step = (end - start) / len(phones)
            entries.append((name, start, end, [(ph, start + i * step, start + (i + 1) * step)
                                               for i, ph in enumerate(phones)]))
        return _alignment(tokens, entries, duration, "pocketsphinx-words")


def _spoken_form(text: str, tok: Token, tokens: list[Token]) -> str:
    """A number's whitespace-delimited run ("$5", "50%") when it holds no other token."""
    if not tok.text[0].isdigit():
        return tok.text
    a, b = tok.char_start, tok.char_end
    while a > 0 and not text[a - 1].isspace():
        a -= 1
    while b < len(text) and not text[b].isspace():
        b += 1
    run = text[a:b].rstrip(".,;:!?\"')]").lstrip("\"'([")
    others = [t for t in tokens if a <= t.char_start < b and t is not tok]
    return tok.text if others or not run else run


_Entry = tuple[str, float, float, list[tuple[str, float, float]]]


def _alignment(tokens: list[Token], entries: list[_Entry], duration: float, method: str) -> Alignment:
    """(word, start, end, phones) entries from the decoder -> an Alignment over `tokens`."""
    spans: list[tuple[tuple[str, ...], float, float]] = []
    word_spans: list[tuple[float, float]] = []
    for name, start, end, phones in entries:
        name = _ALT.sub("", name)
        is_word = not (name.startswith("<") or name.startswith("["))  # <s>, <sil>, [NOISE]
        if is_word:
            word_spans.append((start, end))
        for ph, a, b in phones:
            spans.append(((ph if is_word and ph in ARPABET else "SIL",), a, b))
    if len(word_spans) != len(tokens):
        raise RuntimeError(f"aligned {len(word_spans)} words, expected {len(tokens)}")
    words = [Word(t.text, t.char_start, t.char_end, a, b) for t, (a, b) in zip(tokens, word_spans)]
    return Alignment(normalize_phonemes(spans_to_phonemes(spans), duration),
                     clip_words(words, duration), method)


def _ms(frame: int, pad_ms: int) -> float:
    return frame * FRAME_MS - pad_ms


def _to_pcm16k(audio: np.ndarray, sample_rate: int, pad_ms: int) -> bytes:
    x = resample_poly(audio.astype(np.float64), ALIGN_RATE, sample_rate) \
        if sample_rate != ALIGN_RATE else audio.astype(np.float64)
    pad = np.zeros(ALIGN_RATE * pad_ms // 1000)
    x = np.concatenate([pad, x, pad])
    # A whisper of fixed noise: digital zeros give -inf log energies in the silence padding.
    x += np.random.default_rng(0).normal(0.0, 1e-4, len(x))
    return (np.clip(x, -1.0, 1.0) * 32767).astype(np.int16).tobytes()


def _decode(decoder, pcm: bytes) -> None:  # type: ignore[no-untyped-def]
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()


# -- fallbacks --------------------------------------------------------------------------------

def align_dtw(audio: np.ndarray, sample_rate: int, text: str) -> Alignment:
    """Warp espeak's exact timeline of `text` onto `audio` by DTW over MFCCs."""
    ref = espeak.synthesize(text, "en-us")
    duration = 1000.0 * len(audio) / sample_rate
    a = mfcc(ref.audio, ref.sample_rate)
    b = mfcc(audio, sample_rate)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("audio too short for DTW")
    path = dtw_path(a, b)
    # ref frame -> mean target frame on the path: a monotonic map from espeak time to ours.
    ref_frames = np.arange(len(a))
    sums = np.bincount(path[:, 0], weights=path[:, 1], minlength=len(a))
    counts = np.maximum(np.bincount(path[:, 0], minlength=len(a)), 1)
    target = np.maximum.accumulate(sums / counts)

    def warp(t_ms: float) -> float:
        return float(np.interp(t_ms / FRAME_MS, ref_frames, target)) * FRAME_MS

    phonemes = [Phoneme(p.symbol, warp(p.start_ms), warp(p.end_ms)) for p in ref.phonemes]
    words = [Word(w.text, w.char_start, w.char_end, warp(w.start_ms), warp(w.end_ms))
             for w in ref.words]
    return Alignment(normalize_phonemes(phonemes, duration), clip_words(words, duration), "dtw")


def align_proportional(duration_ms: float, text: str) -> Alignment:
    """Last resort: espeak's timeline stretched linearly to the audio's duration."""
    ref = espeak.synthesize(text, "en-us")
    k = duration_ms / max(ref.phonemes[-1].end_ms, 1e-6)
    phonemes = [Phoneme(p.symbol, p.start_ms * k, p.end_ms * k) for p in ref.phonemes]
    words = [Word(w.text, w.char_start, w.char_end, w.start_ms * k, w.end_ms * k) for w in ref.words]
    return Alignment(normalize_phonemes(phonemes, duration_ms), clip_words(words, duration_ms),
                     "proportional")


def mfcc(audio: np.ndarray, sample_rate: int, n_mels: int = 26, n_ceps: int = 13) -> np.ndarray:
    """(frames, n_ceps-1 + deltas) MFCCs at 10 ms hops, mean/variance normalised per utterance."""
    x = resample_poly(audio.astype(np.float64), ALIGN_RATE, sample_rate) \
        if sample_rate != ALIGN_RATE else audio.astype(np.float64)
    win, hop, nfft = 400, 160, 512
    if len(x) < win:
        return np.zeros((0, 2 * (n_ceps - 1)))
    n = 1 + (len(x) - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    frames = x[idx] * np.hamming(win)
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2
    logmel = np.log(power @ _mel_filters(n_mels, nfft, ALIGN_RATE).T + 1e-8)
    ceps = dct(logmel, type=2, norm="ortho", axis=1)[:, 1:n_ceps]  # c0 = loudness: skip it
    feats = np.hstack([ceps, np.gradient(ceps, axis=0)])
    return (feats - feats.mean(0)) / (feats.std(0) + 1e-8)


def _mel_filters(n_mels: int, nfft: int, sr: int, fmin: float = 130.0, fmax: float = 6800.0) -> np.ndarray:
    def mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    edges = 700.0 * (10 ** (np.linspace(mel(fmin), mel(fmax), n_mels + 2) / 2595.0) - 1.0)
    bins = np.fft.rfftfreq(nfft, 1.0 / sr)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))


def dtw_path(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Optimal monotonic alignment path [(i, j), ...] between feature sequences a and b."""
    n, m = len(a), len(b)
    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    # Cells on one anti-diagonal (i + j = k) only depend on the two previous anti-diagonals,
    # so each diagonal is one vectorised step: O(n + m) Python iterations instead of O(n * m).
    for k in range(2, n + m + 1):
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        best = np.minimum(np.minimum(acc[i - 1, j - 1], acc[i - 1, j]), acc[i, j - 1])
        acc[i, j] = cost[i - 1, j - 1] + best
    path = []
    i, j = n, m
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        step = np.argmin([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    return np.array(path[::-1], dtype=int)
