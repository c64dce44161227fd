"""Lip sync measured from pixels and samples only: what a viewer sees and hears.

Used by the tests, the benchmarks and `avatar eval`. Nothing here reads the engine's
internal state: the mouth opening comes from decoded frames, loudness from decoded audio.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.render import face_mesh as fm


@dataclass(frozen=True)
class MouthProbe:
    """Where to look for the mouth in frames of one avatar: the columns through the middle
    of the mouth, and rows from above the upper lip to below the lowest the jaw can go."""

    x0: int
    x1: int
    y0: int
    y1: int

    @classmethod
    def for_landmarks(cls, landmarks: np.ndarray) -> MouthProbe:
        lm = np.asarray(landmarks)
        left, right = lm[61], lm[291]
        width = float(np.linalg.norm(right - left))
        cx = float((left[0] + right[0]) / 2)
        outer = lm[list(fm.LIPS_UPPER_OUTER + fm.LIPS_LOWER_OUTER)]
        return cls(int(cx - 0.2 * width), int(cx + 0.2 * width) + 1,
                   int(outer[:, 1].min() - 0.15 * width), int(outer[:, 1].max() + 0.45 * width) + 1)


def interior_mask(region: np.ndarray) -> np.ndarray:
    """Pixels that are mouth interior: dark cavity, or bright unsaturated teeth."""
    rgb = region.astype(np.float32) / 255.0
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    sat = (rgb.max(-1) - rgb.min(-1)) / np.maximum(rgb.max(-1), 1e-3)
    return (luma < 0.30) | ((luma > 0.62) & (sat < 0.16))


def mouth_gaps(frames: Sequence[np.ndarray] | np.ndarray, probe: MouthProbe) -> np.ndarray:
    """Lip gap per frame in pixels: median over the probe's columns of interior rows."""
    out = np.empty(len(frames), dtype=np.float32)
    for i, f in enumerate(frames):
        region = np.asarray(f)[probe.y0:probe.y1, probe.x0:probe.x1]
        out[i] = float(np.median(interior_mask(region).sum(0)))
    return out


def mouth_areas(frames: Sequence[np.ndarray] | np.ndarray, probe: MouthProbe) -> np.ndarray:
    """Mouth opening per frame as its area over its width (mean interior rows per column): like
    `mouth_gaps` but not whole pixels, so a small face's few-pixel openings still grade."""
    out = np.empty(len(frames), dtype=np.float32)
    for i, f in enumerate(frames):
        out[i] = float(interior_mask(np.asarray(f)[probe.y0:probe.y1, probe.x0:probe.x1]).sum(0).mean())
    return out


def loudness_envelope(samples: np.ndarray, sample_rate: int, fps: float, n_frames: int,
                      floor_db: float = -50.0) -> np.ndarray:
    """Loudness per video frame: RMS over the frame's audio in dB re the loudest frame,
    floored (silence all reads as the floor)."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    out = np.full(n_frames, floor_db)
    for k in range(n_frames):
        a, b = int(k * sample_rate / fps), int((k + 1) * sample_rate / fps)
        seg = x[a:b]
        if len(seg):
            out[k] = 10 * np.log10(np.mean(seg**2) + 1e-12)
    out -= out.max()
    return np.maximum(out, floor_db)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def best_lag(mouth: np.ndarray, audio: np.ndarray, max_lag: int) -> int:
    """Lag (frames) maximising the correlation of mouth[t] with audio[t - lag]: positive
    means the mouth moves after the sound, negative before."""
    lags = range(-max_lag, max_lag + 1)
    n = len(mouth)
    scores = []
    for lag in lags:
        if lag >= 0:
            scores.append(pearson(mouth[lag:], audio[: n - lag]))
        else:
            scores.append(pearson(mouth[: n + lag], audio[-lag:]))
    return list(lags)[int(np.argmax(scores))]


@dataclass(frozen=True)
class LipSyncReport:
    pearson_r: float
    lag_frames: int
    max_gap: float
    closure_gaps: tuple[float, ...]  # gap at each bilabial closure frame

    @property
    def worst_closure_ratio(self) -> float:
        return max(self.closure_gaps, default=0.0) / self.max_gap if self.max_gap > 0 else 0.0


def lipsync_report(gaps: np.ndarray, envelope: np.ndarray, closure_frames: Sequence[int],
                   max_lag: int = 5) -> LipSyncReport:
    return LipSyncReport(pearson(gaps, envelope), best_lag(gaps, envelope, max_lag), float(gaps.max()),
                         tuple(float(gaps[k]) for k in closure_frames if 0 <= k < len(gaps)))
