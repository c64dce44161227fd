"""Streaming voice activity detection with silero-vad.

silero-vad (MIT, weights inside its wheel) scores each 512-sample window (32 ms at 16 kHz)
with a speech probability; the model keeps its own recurrent state and the last 64 samples
of context between calls, so windows must be fed in order, one stream per model.

On top of the probabilities, a small state machine turns them into speech segments:

- hysteresis: a run starts on a window >= `threshold`; it is broken only by windows below
  `neg_threshold` (between the two, the current state holds);
- a run becomes speech once it holds `min_speech_ms` of speech windows (shorter blips,
  a cough, a click, are ignored); `speech_start` then reports the run's *onset* (first
  window, minus `speech_pad_ms`), not the moment it was confirmed;
- speech ends after `min_silence_ms` below `neg_threshold`; `speech_end` reports where the
  silence began (plus `speech_pad_ms`).

Times are seconds from the first sample pushed. Events therefore arrive late by up to
`min_speech_ms` (start) and `min_silence_ms` (end) plus one window — the price of not
flickering.

The model runs in the calling thread; stages put it behind an engine worker (stages.py).
"""
from __future__ import annotations

import importlib.util
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .features import SAMPLE_RATE

log = logging.getLogger(__name__)

WINDOW = 512  # samples per model call at 16 kHz (fixed by the model)
WINDOW_S = WINDOW / SAMPLE_RATE

VadKind = Literal["speech_start", "speech_end"]


class VadUnavailable(RuntimeError):
    """The silero-vad package (which carries the weights) is not installed."""


@dataclass(frozen=True, slots=True)
class VadEvent:
    kind: VadKind
    time_s: float  # seconds from the start of the stream
    probability: float  # mean speech probability of the run (start) or of the silence (end)


@dataclass(frozen=True, slots=True)
class VadResult:
    """What one `analyse` call produced."""

    events: list[VadEvent]
    probabilities: np.ndarray  # float32, one per window completed by this call
    first_window: int  # stream index of probabilities[0]; window k starts at k * WINDOW_S


def silero_model_path() -> Path:
    """The TorchScript model inside the silero-vad wheel.

    Found without importing the package: `import silero_vad` calls torch.set_num_threads(1)
    at import time, and the torch thread pool is process-wide, owned by the CLI/server
    settings (engines/threads.py), not by a library we happen to load."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise VadUnavailable("silero-vad is not installed: pip install silero-vad")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"
    if not path.is_file():
        raise VadUnavailable(f"silero-vad model missing from its package: {path}")
    return path


def load_silero() -> torch.jit.ScriptModule:
    """What silero_vad.load_silero_vad() does (torch.jit.load + eval), minus the import."""
    with warnings.catch_warnings():  # torch 2.9+ flags TorchScript as deprecated; it still works
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(str(path := silero_model_path()), map_location="cpu")
    model.eval()
    log.debug("silero-vad loaded from %s", path)
    return model


@dataclass(slots=True)
class _Run:
    """A candidate or confirmed speech run, or a silence gap inside one (window indices)."""

    start: int
    voiced: int = 0  # windows counted as speech
    prob_sum: float = 0.0
    gap_start: int | None = None
    gap_prob_sum: float = 0.0
    confirmed: bool = False


class StreamingVad:
    """Push 16 kHz mono float32 samples in chunks of any size; get speech start/end events."""

    def __init__(self, threshold: float = 0.5, neg_threshold: float = 0.35,
                 min_speech_ms: float = 250, min_silence_ms: float = 300,
                 speech_pad_ms: float = 30, *, model: torch.jit.ScriptModule | None = None) -> None:
        if not 0.0 < neg_threshold <= threshold < 1.0:
            raise ValueError("need 0 < neg_threshold <= threshold < 1")
        self.threshold = threshold
        self.neg_threshold = neg_threshold
        self.min_speech_windows = max(1, _windows(min_speech_ms))
        self.min_silence_windows = max(1, _windows(min_silence_ms))
        self.pad_s = speech_pad_ms / 1000.0
        self.model = model if model is not None else load_silero()
        self.reset()

    def reset(self) -> None:
        """A new stream: time back to 0, model state cleared."""
        self.model.reset_states()
        self._buf = np.zeros(0, np.float32)
        self.windows = 0  # windows scored so far
        self.samples_in = 0
        self._run: _Run | None = None

    @property
    def speaking(self) -> bool:
        return self._run is not None and self._run.confirmed

    def push(self, samples: np.ndarray) -> list[VadEvent]:
        return self.analyse(samples).events

    def analyse(self, samples: np.ndarray) -> VadResult:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        # Garbage in must not become speech: the resampler already sanitises, but the
        # detector may be fed directly.
        x = np.clip(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)
        self.samples_in += len(x)
        buf = np.concatenate([self._buf, x])
        n = len(buf) // WINDOW
        self._buf = buf[n * WINDOW:]
        first = self.windows
        probs = np.empty(n, np.float32)
        events: list[VadEvent] = []
        with torch.no_grad():
            for i in range(n):
                window = torch.from_numpy(buf[i * WINDOW:(i + 1) * WINDOW].copy()).unsqueeze(0)
                p = float(self.model(window, SAMPLE_RATE).item())
                probs[i] = p
                ev = self._step(self.windows, p)
                self.windows += 1
                if ev is not None:
                    events.append(ev)
        return VadResult(events, probs, first)

    def flush(self) -> list[VadEvent]:
        """End of stream: close a confirmed speech segment (an unconfirmed run is dropped)."""
        run, self._run = self._run, None
        if run is None or not run.confirmed:
            return []
        end_w = run.gap_start if run.gap_start is not None else self.windows
        gap = self.windows - end_w
        prob = run.gap_prob_sum / gap if gap else 0.0
        end_s = min(end_w * WINDOW_S + self.pad_s, self.samples_in / SAMPLE_RATE)
        return [VadEvent("speech_end", end_s, prob)]

    def _step(self, w: int, p: float) -> VadEvent | None:
        run = self._run
        if run is None:
            if p < self.threshold:
                return None
            run = self._run = _Run(start=w)
        # Inside a run: a window >= threshold ends any gap; one below neg_threshold opens a
        # gap; in between, whatever state we are in holds (hysteresis).
        if p >= self.threshold:
            run.gap_start, run.gap_prob_sum = None, 0.0
        elif p < self.neg_threshold and run.gap_start is None:
            run.gap_start = w
        if run.gap_start is None:
            run.voiced += 1
            run.prob_sum += p
        else:
            run.gap_prob_sum += p
            if w + 1 - run.gap_start >= self.min_silence_windows:
                self._run = None
                if run.confirmed:
                    return VadEvent("speech_end", run.gap_start * WINDOW_S + self.pad_s,
                                    run.gap_prob_sum / (w + 1 - run.gap_start))
                return None  # a blip too short to be speech
        if not run.confirmed and run.voiced >= self.min_speech_windows:
            run.confirmed = True
            return VadEvent("speech_start", max(0.0, run.start * WINDOW_S - self.pad_s),
                            run.prob_sum / run.voiced)
        return None


def _windows(ms: float) -> int:
    """Whole windows needed to cover `ms` milliseconds."""
    return int(np.ceil(ms / 1000.0 / WINDOW_S - 1e-9))
