"""Phoneme timeline -> mouth motion parameters at the video frame rate.

This function is the one source of truth for mouth motion: the text path renders it, and
the audio-to-motion model is trained on its output.

Coarticulation follows the dominance model of Cohen & Massaro (1993): every phoneme pulls
each mouth parameter towards its own target with a strength (dominance) that peaks inside
the phoneme and decays with distance in time; the mouth shape at time t is the
dominance-weighted average of all targets. The decay is asymmetric: a phoneme's influence
reaches further ahead of it (ANTICIPATION, ~100 ms) than after it, so the lips start moving
towards a sound before it is heard. Two articulations are not left to averaging because
they are all-or-nothing: bilabials (p, b, m) press the lips shut and labiodentals (f, v)
tuck the lower lip, each over the phoneme's closure with short ramps around it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipelines.speech.types import Phoneme

from .params import MOUTH

# targets: jaw_open, lip_round, lip_spread ; dominance (how strongly a phoneme holds its shape)
_V, _C, _W = 1.0, 0.35, 0.12  # vowel, consonant, weak (coarticulated away) dominance
TARGETS: dict[str, tuple[float, float, float, float]] = {
    # vowels
    "AA": (0.85, 0.0, 0.1, _V), "AE": (0.7, 0.0, 0.35, _V), "AH": (0.55, 0.0, 0.1, _V),
    "AO": (0.7, 0.45, 0.0, _V), "AW": (0.7, 0.35, 0.0, _V), "AY": (0.7, 0.0, 0.3, _V),
    "EH": (0.55, 0.0, 0.35, _V), "ER": (0.35, 0.35, 0.0, _V), "EY": (0.45, 0.0, 0.5, _V),
    "IH": (0.35, 0.0, 0.45, _V), "IY": (0.2, 0.0, 0.7, _V), "OW": (0.5, 0.65, 0.0, _V),
    "OY": (0.5, 0.5, 0.1, _V), "UH": (0.3, 0.6, 0.0, _V), "UW": (0.2, 0.95, 0.0, _V),
    # consonants
    "B": (0.05, 0.0, 0.0, 0.8), "P": (0.05, 0.0, 0.0, 0.8), "M": (0.05, 0.0, 0.0, 0.8),
    "F": (0.12, 0.0, 0.1, 0.7), "V": (0.12, 0.0, 0.1, 0.7),
    "TH": (0.18, 0.0, 0.15, _C), "DH": (0.18, 0.0, 0.15, _C),
    "T": (0.2, 0.0, 0.15, _W), "D": (0.2, 0.0, 0.15, _W), "N": (0.2, 0.0, 0.1, _W),
    "L": (0.25, 0.0, 0.1, _W), "S": (0.12, 0.0, 0.4, _C), "Z": (0.12, 0.0, 0.4, _C),
    "SH": (0.15, 0.6, 0.0, _C), "ZH": (0.15, 0.6, 0.0, _C), "CH": (0.15, 0.55, 0.0, _C),
    "JH": (0.15, 0.55, 0.0, _C), "K": (0.3, 0.0, 0.05, _W), "G": (0.3, 0.0, 0.05, _W),
    "NG": (0.25, 0.0, 0.05, _W), "HH": (0.4, 0.0, 0.0, 0.02), "R": (0.25, 0.4, 0.0, _C),
    "W": (0.1, 0.95, 0.0, 0.6), "Y": (0.2, 0.0, 0.5, _C),
    "SIL": (0.0, 0.0, 0.0, 0.5),
}
BILABIAL = frozenset({"P", "B", "M"})
LABIODENTAL = frozenset({"F", "V"})
DENTAL = frozenset({"TH", "DH"})
ANTICIPATION_S = 0.100  # reach of a phoneme's influence before its centre
CARRYOVER_S = 0.060  # ... and after it
LEAD_S = 0.020  # the articulatory target is reached this much before the acoustic centre
CLOSURE_RAMP_IN_S = 0.060  # lips start closing this long before a bilabial is heard
CLOSURE_RAMP_OUT_S = 0.040


def frame_times(n_frames: int, fps: float) -> np.ndarray:
    """The instant each frame depicts: the middle of its display interval."""
    return (np.arange(n_frames) + 0.5) / fps


def mouth_params(phonemes: Sequence[Phoneme], n_frames: int, fps: float, *,
                 times: np.ndarray | None = None) -> np.ndarray:
    """(n_frames, 5) float32: jaw_open, lip_press, lip_round, lip_spread, lip_tuck."""
    t = frame_times(n_frames, fps) if times is None else np.asarray(times, dtype=np.float64)
    out = np.zeros((len(t), MOUTH.stop - MOUTH.start), dtype=np.float32)
    if not phonemes or len(t) == 0:
        return out
    starts = np.array([p.start_ms for p in phonemes]) / 1000.0
    ends = np.array([p.end_ms for p in phonemes]) / 1000.0
    spec = np.array([TARGETS.get(p.symbol, TARGETS["SIL"]) for p in phonemes])  # (P, 4)
    centres = 0.5 * (starts + ends) - LEAD_S
    half = np.maximum(0.5 * (ends - starts), 0.01)
    # Dominance: flat over the phoneme's own core, exponential decay outside it.
    d = t[:, None] - centres[None, :]  # (T, P)
    outside = np.maximum(np.abs(d) - 0.6 * half[None, :], 0.0)
    reach = np.where(d < 0, ANTICIPATION_S, CARRYOVER_S)
    dom = spec[None, :, 3] * np.exp(-((outside / reach) ** 1.5)) + 1e-6
    w = dom / dom.sum(1, keepdims=True)
    jaw, rnd, spread = (w @ spec[:, 0]), (w @ spec[:, 1]), (w @ spec[:, 2])
    press = _gesture(t, starts, ends, [p.symbol in BILABIAL for p in phonemes])
    tuck = _gesture(t, starts, ends, [p.symbol in LABIODENTAL for p in phonemes])
    jaw = jaw * (1.0 - 0.7 * np.maximum(press, tuck))  # a closed or tucked lip holds the jaw up
    out[:, 0], out[:, 1], out[:, 2], out[:, 3], out[:, 4] = jaw, press, rnd, spread, tuck
    return np.clip(out, 0.0, 1.0)


def tongue_params(phonemes: Sequence[Phoneme], n_frames: int, fps: float, *,
                  times: np.ndarray | None = None) -> np.ndarray:
    """(n_frames,) float32: the tongue tip showing at the front of the mouth -- between the
    teeth for th / dh, up at the teeth for l (half as far) -- with the closures' ramps."""
    t = frame_times(n_frames, fps) if times is None else np.asarray(times, dtype=np.float64)
    if not phonemes or len(t) == 0:
        return np.zeros(len(t), np.float32)
    starts = np.array([p.start_ms for p in phonemes]) / 1000.0
    ends = np.array([p.end_ms for p in phonemes]) / 1000.0
    dental = _gesture(t, starts, ends, [p.symbol in DENTAL for p in phonemes])
    lateral = _gesture(t, starts, ends, [p.symbol == "L" for p in phonemes])
    return np.clip(np.maximum(dental, 0.5 * lateral), 0.0, 1.0).astype(np.float32)


def _gesture(t: np.ndarray, starts: np.ndarray, ends: np.ndarray, mask: Sequence[bool]) -> np.ndarray:
    """1 over each selected phoneme (its closure), ramping in before it and out after it."""
    g = np.zeros(len(t))
    for s, e, on in zip(starts, ends, mask, strict=True):
        if not on:
            continue
        hold_end = max(e - 0.015, s + 0.02)  # the release (burst) belongs to the next sound
        rise = np.clip((t - (s - CLOSURE_RAMP_IN_S)) / CLOSURE_RAMP_IN_S, 0, 1)
        fall = np.clip(((hold_end + CLOSURE_RAMP_OUT_S) - t) / CLOSURE_RAMP_OUT_S, 0, 1)
        g = np.maximum(g, np.minimum(rise, fall) ** 0.7)
    return g
