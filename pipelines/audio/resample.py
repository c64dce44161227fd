"""Any rate and layout in, 16 kHz mono float32 out, chunk by chunk.

    x ─► sanitise (NaN/inf → 0, ints scaled to [-1, 1], clip) ─► average channels
      ─► libswresample (PyAV's AudioResampler) ─► one-pole high-pass (20 Hz) ─► clip ─► out

Resampling is libswresample's windowed-sinc polyphase filter, reached through PyAV: it keeps
its filter history and fractional phase between calls, so chunks of any size give exactly
the samples of the whole signal (tested bit-exact) and the output never drifts from
`in_samples * 16000 / in_rate` (rounded, after `flush`). The mix to mono is done here, as a
plain average, because libswresample's default stereo → mono matrix is not a plain average.
The high-pass removes DC offsets (cheap sound cards, bad files) that would otherwise shift
every log-mel frame and can look like energy to a VAD.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from scipy.signal import lfilter

from .features import SAMPLE_RATE

log = logging.getLogger(__name__)

OUT_RATE = SAMPLE_RATE  # 16 kHz, what features and the VAD take
MIN_RATE, MAX_RATE = 8000, 192000
HIGHPASS_HZ = 20.0
# int16 full scale: a sample at or beyond it was (almost certainly) clipped on the way in.
CLIP_LEVEL = 32767 / 32768


@dataclass(slots=True)
class ResamplerStats:
    """Counters over everything pushed so far (per channel frames, not values)."""

    frames_in: int = 0  # input sample frames (one per time step, any channel count)
    samples_out: int = 0
    nonfinite: int = 0  # NaN / inf values replaced by 0
    clipped: int = 0  # values at or beyond full scale (|x| >= CLIP_LEVEL after scaling)
    values_in: int = 0  # frames_in * channels, the denominator of `clipped`

    @property
    def clipped_fraction(self) -> float:
        return self.clipped / self.values_in if self.values_in else 0.0


def to_float(x: np.ndarray) -> np.ndarray:
    """Integer PCM scaled to [-1, 1) as float32 (int16 / 32768, ...; unsigned is offset
    binary); float arrays are returned as they are (float64 stays float64 until clipped)."""
    x = np.asarray(x)
    if x.dtype.kind == "i":
        return x.astype(np.float32) / np.float32(-np.iinfo(x.dtype).min)
    if x.dtype.kind == "u":
        mid = (int(np.iinfo(x.dtype).max) + 1) // 2
        return (x.astype(np.float32) - np.float32(mid)) / np.float32(mid)
    if x.dtype.kind == "f":
        return x
    raise TypeError(f"audio samples must be integer or float, got {x.dtype}")


class DcBlocker:
    """One-pole high-pass y[n] = x[n] - x[n-1] + R y[n-1] with R = exp(-2π fc / fs).

    State carries across calls. It starts settled on the first sample, so a stream that
    begins with a DC offset does not start with a step (a click)."""

    def __init__(self, rate: int = OUT_RATE, cutoff_hz: float = HIGHPASS_HZ) -> None:
        r = math.exp(-2 * math.pi * cutoff_hz / rate)
        self._b = np.array([1.0, -1.0])
        self._a = np.array([1.0, -r])
        self._zi: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return x
        if self._zi is None:
            self._zi = np.array([-float(x[0])])  # steady state for a constant input x[0]
        y, self._zi = lfilter(self._b, self._a, x.astype(np.float64), zi=self._zi)
        return y.astype(np.float32)


class StreamingResampler:
    """`push` chunks of (n,) or interleaved (n, channels) samples at `in_rate`, int or float;
    get 16 kHz (or `out_rate`) mono float32 in [-1, 1]. `flush` at end of stream returns the
    filter's tail."""

    def __init__(self, in_rate: int, channels: int = 1, *, highpass_hz: float | None = HIGHPASS_HZ,
                 out_rate: int = OUT_RATE) -> None:
        if not (MIN_RATE <= int(in_rate) <= MAX_RATE):
            raise ValueError(f"sample rate {in_rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
        if not (1 <= int(channels) <= 8):
            raise ValueError(f"channel count must be 1-8, got {channels}")
        self.in_rate = int(in_rate)
        self.channels = int(channels)
        self.stats = ResamplerStats()
        self._time_base = Fraction(1, self.in_rate)
        if not (MIN_RATE <= int(out_rate) <= MAX_RATE):
            raise ValueError(f"output sample rate {out_rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
        self.out_rate = int(out_rate)
        self._swr: av.AudioResampler | None = (
            None if self.in_rate == self.out_rate  # nothing to resample: no filter delay either
            else av.AudioResampler(format="flt", layout="mono", rate=self.out_rate))
        self._highpass = DcBlocker(self.out_rate, highpass_hz) if highpass_hz else None
        self._flushed = False

    def _mono(self, chunk: np.ndarray) -> np.ndarray:
        x = np.asarray(chunk)
        if x.ndim == 1 and self.channels > 1:
            if len(x) % self.channels:
                raise ValueError(f"{len(x)} interleaved values are not a whole number of "
                                 f"{self.channels}-channel frames")
            x = x.reshape(-1, self.channels)
        elif x.ndim == 2 and x.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channel(s), got shape {x.shape}")
        elif x.ndim > 2:
            raise ValueError(f"expected (n,) or (n, channels) samples, got shape {x.shape}")
        x = to_float(x)
        bad = ~np.isfinite(x)
        n_bad = int(bad.sum())
        if n_bad:
            x = np.where(bad, np.float32(0.0), x)
            self.stats.nonfinite += n_bad
        self.stats.clipped += int(np.count_nonzero(np.abs(x) >= CLIP_LEVEL))
        self.stats.values_in += x.size
        x = np.clip(x, -1.0, 1.0)
        return (x.mean(axis=1) if x.ndim == 2 else x).astype(np.float32, copy=False)

    def push(self, chunk: np.ndarray) -> np.ndarray:
        if self._flushed:
            raise RuntimeError("push after flush: make a new StreamingResampler")
        mono = self._mono(chunk)
        if len(mono) == 0:
            return np.zeros(0, np.float32)
        pts = self.stats.frames_in
        self.stats.frames_in += len(mono)
        if self._swr is None:
            return self._finish([mono])
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono).reshape(1, -1),
                                           format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = self.in_rate, pts, self._time_base
        return self._finish([f.to_ndarray().reshape(-1) for f in self._swr.resample(frame)])

    def flush(self) -> np.ndarray:
        """The samples still inside the filter. The stream is over afterwards."""
        if self._flushed:
            return np.zeros(0, np.float32)
        self._flushed = True
        if self._swr is None:
            return np.zeros(0, np.float32)
        out = self._finish([f.to_ndarray().reshape(-1) for f in self._swr.resample(None)])
        log.debug("resampler %d Hz x%d: %d frames in, %d out, %d non-finite, %.4f clipped",
                  self.in_rate, self.channels, self.stats.frames_in, self.stats.samples_out,
                  self.stats.nonfinite, self.stats.clipped_fraction)
        return out

    def _finish(self, parts: list[np.ndarray]) -> np.ndarray:
        y = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
        if self._highpass is not None:
            y = self._highpass(y)
        # The sinc filter and the high-pass can overshoot full scale slightly: keep the promise.
        y = np.clip(y, -1.0, 1.0)
        self.stats.samples_out += len(y)
        return y
