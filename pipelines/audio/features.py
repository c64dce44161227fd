"""Log-mel features, computed the same way whole or in chunks of any size.

    sample rate   16 kHz mono float32
    window        400 samples (25 ms), Hann (periodic)
    hop           160 samples (10 ms): 100 frames per second
    FFT           512 points
    mel bins      80, HTK mel scale, 60-7600 Hz, triangular filters (slaney-normalised area)
    value         natural log of mel power + 1e-6

Frames are causal (not centred): frame i covers samples [160 i, 160 i + 400), so it exists
once its last sample has arrived, and a signal fed in chunks of random sizes gives exactly
the frames of the whole signal (`StreamingLogMel`, tested).
"""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
WINDOW = 400
HOP = 160
N_FFT = 512
N_MELS = 80
FMIN, FMAX = 60.0, 7600.0
FRAME_RATE = SAMPLE_RATE // HOP  # 100 frames per second
LOG_FLOOR = 1e-6


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10 ** (m / 2595.0) - 1.0)


def mel_filterbank() -> np.ndarray:
    """(N_MELS, N_FFT // 2 + 1) float32."""
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))
    fb = np.zeros((N_MELS, len(freqs)))
    for m in range(N_MELS):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rise = (freqs - lo) / (mid - lo)
        fall = (hi - freqs) / (hi - mid)
        fb[m] = np.maximum(0.0, np.minimum(rise, fall)) * (2.0 / (hi - lo))
    return fb.astype(np.float32)


_FB = mel_filterbank()
_WIN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)).astype(np.float32)


def n_frames(n_samples: int) -> int:
    return 0 if n_samples < WINDOW else (n_samples - WINDOW) // HOP + 1


def log_mel(samples: np.ndarray) -> np.ndarray:
    """(n_frames(len(samples)), N_MELS) float32 for 16 kHz mono samples."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    n = n_frames(len(x))
    if n == 0:
        return np.zeros((0, N_MELS), np.float32)
    idx = np.arange(WINDOW)[None, :] + HOP * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * _WIN, n=N_FFT, axis=1)) ** 2
    return np.log(spec.astype(np.float32) @ _FB.T + LOG_FLOOR).astype(np.float32)


class StreamingLogMel:
    """Feed chunks of any size; get every frame as soon as its window is complete."""

    def __init__(self) -> None:
        self._tail = np.zeros(0, np.float32)
        self.frames_out = 0

    def push(self, chunk: np.ndarray) -> np.ndarray:
        x = np.concatenate([self._tail, np.asarray(chunk, dtype=np.float32).reshape(-1)])
        feats = log_mel(x)
        used = len(feats) * HOP  # the next frame starts here
        self._tail = x[used:]
        self.frames_out += len(feats)
        return feats

    def reset(self) -> None:
        self._tail = np.zeros(0, np.float32)
        self.frames_out = 0
