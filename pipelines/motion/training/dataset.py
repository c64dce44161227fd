"""Training and evaluation data, generated here: synthesized speech with exact (espeak) or
aligned (piper) phoneme timelines, targets from the viseme function (the one source of
truth), degraded like call audio.

Voices: espeak-ng languages x voice variants x rates x pitches, and the piper voice at
several pitches (closer to human speech). `HELD_OUT` is never trained on: neither those
voice/variant names nor that piper pitch appear in training data.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.signal import resample_poly

from pipelines.audio.features import SAMPLE_RATE, log_mel
from pipelines.motion.audio_model import token_centre
from pipelines.motion.visemes import mouth_params
from pipelines.speech.types import Phoneme

from .augment import CALL, CLEAN, HARSH, LIGHT, Severity, augment
from .corpus import sentences

log = logging.getLogger(__name__)

# Evaluation voices: variants and accents never used in training, and piper at an unseen pitch.
HELD_OUT = ("en-us+m3", "en-gb-x-rp+f3", "en-us+steph2", "en-gb-scotland+john", "en-029+klatt4", "joe@1.22")
HELD_OUT_VARIANTS = {"m3", "f3", "steph2", "john", "klatt4"}
TRAIN_LANGUAGES_EN = ("en-us", "en", "en-us-nyc", "en-gb-x-rp", "en-029", "en-gb-scotland")
TRAIN_LANGUAGES_OTHER = ("de", "fr", "es", "it", "pt", "nl", "pl", "sv", "ru", "hi")
PIPER_TRAIN_PITCHES = (0.85, 0.92, 1.0, 1.07, 1.12)


@dataclass
class DataConfig:
    n_espeak: int = 2400
    n_piper: int = 600
    share_other_languages: float = 0.12
    copies: int = 2  # augmented renditions per utterance (the first is lightly degraded)
    n_eval_per_voice: int = 16
    seed: int = 1234
    lookaheads_ms: list[int] = field(default_factory=lambda: [0, 20, 40, 60, 80, 100, 120])

    def key(self) -> str:
        # DATA_VERSION: what the config cannot say (how targets are made) is part of the key too.
        blob = json.dumps({**asdict(self), "data_version": DATA_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# 2: piper's timelines come from its own durations (were: pocketsphinx forced alignment), and
# its noise is seeded per sentence. 3: evaluation utterances draw their augmentation from
# generators of their own (see build_eval_set).
DATA_VERSION = 3


@dataclass
class Example:
    voice: str
    feats: np.ndarray  # (F, 80) float16
    targets: np.ndarray  # (T, n_lookaheads, 5) float16, T = F // 2
    audio: np.ndarray | None = None  # 16 kHz, kept for evaluation baselines


def _to16k(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return audio.astype(np.float32)
    from math import gcd

    g = gcd(rate, SAMPLE_RATE)
    return resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)


def targets_for(phonemes: list[Phoneme], n_tokens: int, lookaheads_ms: list[int]) -> np.ndarray:
    centres = token_centre(np.arange(n_tokens))
    out = np.zeros((n_tokens, len(lookaheads_ms), 5), np.float32)
    for h, la in enumerate(lookaheads_ms):
        out[:, h] = mouth_params(phonemes, n_tokens, 50, times=centres - la / 1000)
    return out


def make_example(voice: str, audio16: np.ndarray, phonemes: list[Phoneme], rng: np.random.Generator,
                 lookaheads_ms: list[int], pool: list[np.ndarray] | None, severity: Severity,
                 keep_audio: bool = False) -> Example:
    # random silence around the speech, so onsets and rest are learned too
    lead, tail = int(rng.uniform(0.05, 0.6) * SAMPLE_RATE), int(rng.uniform(0.2, 0.7) * SAMPLE_RATE)
    x = np.concatenate([np.zeros(lead, np.float32), audio16, np.zeros(tail, np.float32)])
    shift = 1000 * lead / SAMPLE_RATE
    ph = [Phoneme("SIL", 0.0, shift)] + [Phoneme(p.symbol, p.start_ms + shift, p.end_ms + shift) for p in phonemes]
    y = augment(x, rng, pool, severity)
    feats = log_mel(y)
    n_tok = len(feats) // 2
    return Example(voice, feats.astype(np.float16), targets_for(ph, n_tok, lookaheads_ms).astype(np.float16),
                   y if keep_audio else None)


def _espeak_voice(rng: np.random.Generator, variants: list[str], other: float) -> str:
    langs = TRAIN_LANGUAGES_OTHER if rng.random() < other else TRAIN_LANGUAGES_EN
    lang = langs[int(rng.integers(len(langs)))]
    if rng.random() < 0.25:
        return lang
    return f"{lang}+{variants[int(rng.integers(len(variants)))]}"


class _Voices:
    """One synthesizer per voice, reused: the piper model and the aligner take ~1 s to load,
    which would dominate data generation if paid per sentence. Rate and pitch are set per
    sentence on the reused object (plain attributes, validated by a fresh constructor once)."""

    def __init__(self) -> None:
        self._synths: dict[str, object] = {}

    def __call__(self, voice: str, text: str, rate: float, pitch: float):  # type: ignore[no-untyped-def]
        from pipelines.speech.tts import SpeechSynthesizer

        name, _, piper_pitch = voice.partition("@")
        if piper_pitch:
            pitch = float(piper_pitch)
        SpeechSynthesizer(name, rate=rate, pitch=pitch)  # validates (cheap: loads nothing)
        synth = self._synths.get(name)
        if synth is None:
            # Seeded: piper's delivery is random, and the data must be the same on every run.
            synth = self._synths[name] = SpeechSynthesizer(name, seed=0)
        synth.rate, synth.pitch = rate, pitch  # type: ignore[attr-defined]
        return synth.synthesize(text)  # type: ignore[attr-defined]


def build_training_set(cfg: DataConfig, progress: Callable[[int, int], None] | None = None) -> list[Example]:
    from pipelines.speech import espeak

    rng = np.random.default_rng(cfg.seed)
    variants = [v for v in espeak.list_variants() if v not in HELD_OUT_VARIANTS]
    texts = sentences(cfg.n_espeak + cfg.n_piper, cfg.seed)
    jobs: list[tuple[str, str, float, float]] = []
    for i in range(cfg.n_espeak):
        jobs.append((_espeak_voice(rng, variants, cfg.share_other_languages), texts[i],
                     float(rng.uniform(0.75, 1.5)), float(rng.uniform(0.75, 1.4))))
    for i in range(cfg.n_piper):
        p = PIPER_TRAIN_PITCHES[int(rng.integers(len(PIPER_TRAIN_PITCHES)))]
        jobs.append((f"joe@{p}", texts[cfg.n_espeak + i], float(rng.uniform(0.8, 1.3)), 1.0))
    clean: list[tuple[str, np.ndarray, list[Phoneme]]] = []
    synth = _Voices()
    for n, (voice, text, rate, pitch) in enumerate(jobs):
        try:
            utt = synth(voice, text, rate, pitch)
        except ValueError as exc:  # a voice that cannot say this text: skip it, say so
            log.warning("skipped %s: %s", voice, exc)
            continue
        clean.append((voice, _to16k(utt.audio, utt.sample_rate), list(utt.phonemes)))
        if progress:
            progress(n + 1, len(jobs) * (1 + cfg.copies))
    pool = [a for _, a, _ in clean[:: max(1, len(clean) // 200)]]  # babble sources
    out = []
    for c in range(cfg.copies):
        for n, (voice, audio, ph) in enumerate(clean):
            severity = LIGHT if c == 0 else HARSH
            out.append(make_example(voice, audio, ph, rng, cfg.lookaheads_ms, pool, severity))
            if progress:
                progress(len(jobs) * (1 + c) + n + 1, len(jobs) * (1 + cfg.copies))
    return out


EVAL_SEVERITIES = (CALL, CLEAN, HARSH)


def build_eval_set(cfg: DataConfig, voices: tuple[str, ...] = HELD_OUT, severity: Severity = CALL,
                   salt: int = 0) -> list[Example]:
    """Held-out voices, sentences never used in training, augmented with a fixed seed.

    Each utterance draws its augmentation from its own generator: espeak's output varies by a
    few samples from call to call, and with one shared generator that shifted every later
    draw (noise of another length consumes other numbers), so each run evaluated on
    differently degraded audio (closure recall swung 0.73-0.81 between runs).

    `salt` draws other sentences and degradations (the calibration set, calibrate.py)."""
    texts = sentences(cfg.n_eval_per_voice * len(voices), cfg.seed + 99 + salt)
    pool_rng = np.random.default_rng(cfg.seed + 8 + salt)
    out, clean = [], []
    synth = _Voices()
    for i, voice in enumerate(voices):
        for j in range(cfg.n_eval_per_voice):
            utt = synth(voice, texts[i * cfg.n_eval_per_voice + j], float(pool_rng.uniform(0.85, 1.2)), 1.0)
            clean.append((voice, _to16k(utt.audio, utt.sample_rate), list(utt.phonemes)))
    pool = [a for _, a, _ in clean[::5]]
    for k, (voice, audio, ph) in enumerate(clean):
        rng = np.random.default_rng([cfg.seed + 7 + salt, k])
        out.append(make_example(voice, audio, ph, rng, cfg.lookaheads_ms, pool, severity, keep_audio=True))
    return out


def cache_path(cfg: DataConfig, kind: str) -> str:
    root = os.environ.get("AVATAR_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "avatar-engine"))
    os.makedirs(root, exist_ok=True)
    return os.path.join(root, f"motion-{kind}-{cfg.key()}.npz")


def save(examples: list[Example], path: str) -> None:
    tmp = path + ".partial.npz"
    arrays: dict[str, np.ndarray] = {}
    for i, e in enumerate(examples):
        arrays[f"f{i}"], arrays[f"t{i}"] = e.feats, e.targets
        if e.audio is not None:
            arrays[f"a{i}"] = e.audio
    arrays["voices"] = np.array([e.voice for e in examples])
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load(path: str) -> list[Example]:
    with np.load(path) as z:
        voices = list(z["voices"])
        return [Example(str(v), z[f"f{i}"], z[f"t{i}"], z[f"a{i}"] if f"a{i}" in z else None)
                for i, v in enumerate(voices)]
