"""The soundtrack as perception reads it: 16 kHz mono, loudness at any instant, and silero's
speech probability per 32 ms window, on the same media timeline as the frames."""
from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import resample_poly

from pipelines.audio.vad import WINDOW, StreamingVad

RATE = 16000
FLOOR_DB = -60.0


class AudioTimeline:
    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._x = np.zeros(0, np.float32)
        self._c = np.zeros(0, np.float64)  # cumulative sum of squares, _c[0] = 0
        self._vad = StreamingVad()
        self._probs: list[np.ndarray] = []
        self._p = np.zeros(0, np.float32)

    @property
    def end_s(self) -> float:
        return (len(self._x) + sum(len(c) for c in self._chunks)) / RATE

    def push(self, samples: np.ndarray, sample_rate: int) -> None:
        x = np.asarray(samples, np.float32)
        if x.ndim > 1:  # (n, channels) or (channels, n): mono by the mean
            x = x.mean(axis=int(np.argmin(x.shape)))
        x = np.clip(np.nan_to_num(x.reshape(-1), nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)
        if sample_rate != RATE and len(x):
            g = gcd(RATE, int(sample_rate))
            x = resample_poly(x, RATE // g, int(sample_rate) // g).astype(np.float32)
        if len(x):
            self._chunks.append(x)
            self._probs.append(self._vad.analyse(x).probabilities)

    def _flat(self) -> None:
        if self._chunks:
            new = np.concatenate(self._chunks)
            self._x = np.concatenate([self._x, new])
            # running sum of squares, extended (not recomputed) as audio comes: a long file's
            # loudness lookups stay O(1) each
            last = self._c[-1] if len(self._c) else 0.0
            self._c = np.concatenate([self._c if len(self._c) else np.zeros(1), last + np.cumsum(new.astype(np.float64) ** 2)])
            self._chunks = []
        if self._probs:
            self._p = np.concatenate([self._p, *self._probs])
            self._probs = []

    def loudness_db(self, times: np.ndarray, half_window_s: float = 0.04) -> np.ndarray:
        """RMS level (dBFS) over [t - w, t + w] for each t; the floor where nothing was heard."""
        self._flat()
        out = np.full(len(times), FLOOR_DB, np.float32)
        if not len(self._x):
            return out
        c = self._c
        h = int(half_window_s * RATE)
        for i, t in enumerate(times):
            a, b = int(t * RATE) - h, int(t * RATE) + h
            a, b = max(0, a), min(len(self._x), b)
            if b - a > 0:
                out[i] = max(FLOOR_DB, 10 * np.log10((c[b] - c[a]) / (b - a) + 1e-12))
        return out

    def speech(self, times: np.ndarray) -> np.ndarray:
        """Silero's speech probability at each instant (0 where not yet scored)."""
        self._flat()
        idx = (np.asarray(times) * RATE / WINDOW).astype(int)
        ok = (idx >= 0) & (idx < len(self._p))
        out = np.zeros(len(idx), np.float32)
        out[ok] = self._p[idx[ok]]
        return out
