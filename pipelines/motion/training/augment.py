"""Degrade clean synthetic speech the way calls do: noise at a random SNR, gain, band
limits and EQ, room reverberation, and an Opus encode/decode round trip through PyAV.

All functions take and return 16 kHz mono float32 and a numpy Generator (seeded)."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from scipy import signal

SR = 16000


def coloured_noise(n: int, rng: np.random.Generator, colour: str) -> np.ndarray:
    white = rng.standard_normal(n)
    if colour == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
    spec /= np.sqrt(f) if colour == "pink" else f  # pink 1/f power, brown 1/f^2
    x = np.fft.irfft(spec, n)
    return x / (np.std(x) + 1e-12)


def babble(n: int, rng: np.random.Generator, pool: list[np.ndarray]) -> np.ndarray:
    """Other talkers, mixed: the hardest realistic noise for a lip model."""
    out = np.zeros(n)
    for _ in range(int(rng.integers(2, 5))):
        src = pool[int(rng.integers(len(pool)))]
        if len(src) < n:
            src = np.tile(src, n // max(len(src), 1) + 1)
        start = int(rng.integers(0, len(src) - n + 1))
        out += src[start:start + n]
    return out / (np.std(out) + 1e-12)


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator, pool: list[np.ndarray] | None) -> np.ndarray:
    kinds = ["white", "pink", "brown"] + (["babble"] if pool else [])
    kind = kinds[int(rng.integers(len(kinds)))]
    noise = babble(len(x), rng, pool) if kind == "babble" else coloured_noise(len(x), rng, kind)  # type: ignore[arg-type]
    active = np.abs(x) > 0.02 * (np.abs(x).max() + 1e-9)
    p_speech = np.mean(x[active] ** 2) if active.any() else np.mean(x**2) + 1e-9
    noise *= np.sqrt(p_speech / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def band_limit(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lo = float(rng.choice([60, 100, 200, 300]))
    hi = float(rng.choice([3400, 4000, 5500, 7000, 7900]))
    sos = signal.butter(4, [lo, min(hi, SR / 2 - 50)], btype="band", fs=SR, output="sos")
    return signal.sosfilt(sos, x).astype(np.float32)


def random_eq(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    y = x.astype(np.float64)
    for _ in range(int(rng.integers(1, 4))):
        f0 = float(np.exp(rng.uniform(np.log(150), np.log(6000))))
        gain_db = float(rng.uniform(-10, 10))
        q = float(rng.uniform(0.5, 3.0))
        a = 10 ** (gain_db / 40)
        w0 = 2 * np.pi * f0 / SR
        alpha = np.sin(w0) / (2 * q)
        b = [1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a]  # RBJ peaking filter
        den = [1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a]
        y = signal.lfilter(b, den, y)
    return y.astype(np.float32)


def reverb(x: np.ndarray, rng: np.random.Generator, rt60_max_s: float = 0.8) -> np.ndarray:
    """Exponentially decaying noise as a room impulse response (RT60 0.15 s to rt60_max_s)."""
    rt60 = float(rng.uniform(0.15, max(rt60_max_s, 0.15)))
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    rir[0] = 1.0 / max(float(rng.uniform(0.3, 1.5)), 1e-3)  # direct path vs reverberant energy
    y = signal.fftconvolve(x, rir)[: len(x)]
    return (y / (np.abs(y).max() + 1e-9) * np.abs(x).max()).astype(np.float32)


def opus_round_trip(x: np.ndarray, bitrate: int) -> np.ndarray:
    """Encode to Opus at `bitrate` and decode back, at 48 kHz as WebRTC does."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = 48000, "mono", "s16", bitrate
    enc.time_base = Fraction(1, 48000)
    dec = av.CodecContext.create("opus", "r")
    dec.sample_rate, dec.layout = 48000, "mono"
    up = signal.resample_poly(x, 3, 1)
    pcm = (np.clip(up, -1, 1) * 32767).astype(np.int16)
    out = []
    step = 960  # 20 ms
    frames = []
    for i in range(0, len(pcm) - len(pcm) % step + step, step):
        chunk = pcm[i:i + step]
        if len(chunk) < step:
            chunk = np.pad(chunk, (0, step - len(chunk)))
        f = av.AudioFrame.from_ndarray(chunk[None], format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = 48000, i, Fraction(1, 48000)
        frames.append(f)
    packets = [p for f in frames for p in enc.encode(f)] + list(enc.encode(None))
    for p in packets:
        for f in dec.decode(p):
            out.append(f.to_ndarray().reshape(-1).astype(np.float32) / (32768.0 if f.format.name.startswith("s16") else 1.0))
    y = np.concatenate(out) if out else np.zeros(0, np.float32)
    skip = 312  # Opus pre-skip at 48 kHz: keep the signal aligned with its timeline
    y = y[skip:skip + len(up)]
    if len(y) < len(up):
        y = np.pad(y, (0, len(up) - len(y)))
    return signal.resample_poly(y, 1, 3)[: len(x)].astype(np.float32)


@dataclass(frozen=True)
class Severity:
    """How hard the degradation chain is. Training uses HARSH (robustness); the figures are
    reported for CLEAN, CALL (what a phone or video call delivers: speech well above the
    noise, a room, a voice codec at a normal bitrate) and HARSH."""

    name: str
    strength: float  # scales the probability of each step (0 = clean)
    snr_db: tuple[float, float]
    rt60_max_s: float
    opus_kbps: tuple[int, ...]


CLEAN = Severity("clean", 0.0, (30, 30), 0.0, ())
CALL = Severity("call", 1.0, (10, 30), 0.5, (16000, 24000, 32000))
HARSH = Severity("harsh", 1.0, (0, 30), 0.8, (12000, 16000, 24000, 32000))
LIGHT = Severity("light", 0.4, (0, 30), 0.8, (12000, 16000, 24000, 32000))  # training's gentler rendition


def augment(x: np.ndarray, rng: np.random.Generator, pool: list[np.ndarray] | None = None,
            severity: Severity = HARSH) -> np.ndarray:
    """A random chain of call-like degradations."""
    y = x.astype(np.float32)
    p = severity.strength
    if p <= 0:
        return y
    if rng.random() < 0.35 * p:
        y = reverb(y, rng, severity.rt60_max_s)
    if rng.random() < 0.5 * p:
        y = random_eq(y, rng)
    if rng.random() < 0.5 * p:
        y = band_limit(y, rng)
    if rng.random() < 0.8 * p:
        y = add_noise(y, float(rng.uniform(*severity.snr_db)), rng, pool)
    y *= float(10 ** (rng.uniform(-20, 6) / 20))  # gain, sometimes clipping
    y = np.clip(y, -1.0, 1.0)
    if severity.opus_kbps and rng.random() < 0.3 * p:
        y = opus_round_trip(y, int(rng.choice(severity.opus_kbps)))
    return y.astype(np.float32)
