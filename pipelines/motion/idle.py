"""Idle life: blinks, head sway, gaze, breathing and brows, as a deterministic function of time.

One `IdleMotion` per session (seeded), queried for any increasing run of frame times, so
the same seed gives the same avatar behaviour offline and live. Blinks come every 2-6 s
(uniform), close in ~80 ms and open in ~150 ms; sometimes a double blink. Head sway is a sum
of slow sinusoids (0.05-0.35 Hz, up to about +/-3 degrees of yaw), livelier while speaking.
The eyes hold a fixation for 0.4-2.5 s and jump to the next in 40 ms (a saccade): two
fixations in three are at the camera, the others a glance aside. Breathing is ~15 breaths a
minute. `SpeechAccent` lifts the brows on stressed syllables (the jaw opening more than it
has lately).
"""
from __future__ import annotations

import numpy as np

from .params import IDLE, IDX, PARAM_NAMES

BLINK_GAP_S = (2.0, 6.0)
BLINK_CLOSE_S, BLINK_HOLD_S, BLINK_OPEN_S = 0.08, 0.04, 0.15
SWAY_DEG = {"head_yaw": 3.0, "head_pitch": 2.0, "head_roll": 1.5}
FIXATION_S = (0.4, 2.5)  # how long the eyes rest on one point
SACCADE_S = 0.04
AT_CAMERA = 2 / 3  # share of fixations on the camera (gaze 0: the portrait's own gaze)
BREATH_HZ = 0.25


class IdleMotion:
    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)
        self._blinks: list[float] = []
        self._next_blink = float(self._rng.uniform(0.6, 2.5))  # the first comes early
        # sway: three sinusoids per axis with random frequencies and phases
        self._sway = {name: (self._rng.uniform(0.05, 0.35, 3), self._rng.uniform(0, 2 * np.pi, 3),
                             np.array([1.0, 0.5, 0.25]) / 1.75)
                      for name in SWAY_DEG}
        self._brow = (self._rng.uniform(0.03, 0.12, 2), self._rng.uniform(0, 2 * np.pi, 2))
        self._breath_phase = float(self._rng.uniform(0, 2 * np.pi))
        # the gaze has its own stream, so adding it left every other seeded motion as it was
        self._gaze_rng = np.random.default_rng([seed, 1])
        self._fix_t: list[float] = [0.0]
        self._fix_xy: list[tuple[float, float]] = [(0.0, 0.0)]

    def _blinks_until(self, t_end: float) -> np.ndarray:
        while self._next_blink <= t_end + 1.0:
            self._blinks.append(self._next_blink)
            if self._rng.random() < 0.12:  # a double blink now and then
                self._blinks.append(self._next_blink + 0.32)
            self._next_blink += float(self._rng.uniform(*BLINK_GAP_S))
        return np.asarray(self._blinks)

    def _fixations_until(self, t_end: float) -> tuple[np.ndarray, np.ndarray]:
        rng = self._gaze_rng
        while self._fix_t[-1] <= t_end + 1.0:
            self._fix_t.append(self._fix_t[-1] + float(rng.uniform(*FIXATION_S)))
            if rng.random() < AT_CAMERA:
                xy = tuple(rng.normal(0.0, 0.04, 2))  # at the camera, with a microsaccade's jitter
            else:
                xy = (float(rng.choice([-1, 1]) * rng.uniform(0.25, 0.7)), float(rng.uniform(-0.3, 0.3)))
            self._fix_xy.append((float(xy[0]), float(xy[1])))
        return np.asarray(self._fix_t), np.asarray(self._fix_xy)

    def gaze(self, times: np.ndarray) -> np.ndarray:
        """(len(times), 2) gaze_x, gaze_y: fixations joined by 40 ms saccades."""
        t = np.asarray(times, dtype=np.float64)
        starts, xy = self._fixations_until(float(t.max()) if len(t) else 0.0)
        k = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(starts) - 1)
        prev = xy[np.maximum(k - 1, 0)]
        ramp = np.clip((t - starts[k]) / SACCADE_S, 0, 1)
        ramp = np.where(k == 0, 1.0, ramp * ramp * (3 - 2 * ramp))[:, None]
        return (prev + ramp * (xy[k] - prev)).astype(np.float32)

    def params(self, times: np.ndarray, speaking: np.ndarray | None = None) -> np.ndarray:
        """(len(times), 9): blink_r, blink_l, brow_raise, head_yaw, head_pitch, head_roll, breath,
        gaze_x, gaze_y.
        `speaking` (0..1 per time, e.g. jaw activity) livens up the head while talking."""
        t = np.asarray(times, dtype=np.float64)
        out = np.zeros((len(t), IDLE.stop - IDLE.start), dtype=np.float32)
        if len(t) == 0:
            return out
        names = PARAM_NAMES[IDLE]
        col = {n: i for i, n in enumerate(names)}
        starts = self._blinks_until(float(t.max()))
        d = t[:, None] - starts[None, :]
        closing = np.clip(d / BLINK_CLOSE_S, 0, 1)
        opening = np.clip(1 - (d - BLINK_CLOSE_S - BLINK_HOLD_S) / BLINK_OPEN_S, 0, 1)
        blink = np.where(d < 0, 0.0, np.minimum(closing, opening)).max(1) if len(starts) else 0.0
        out[:, col["blink_r"]] = blink
        out[:, col["blink_l"]] = blink
        lively = 1.0 if speaking is None else 1.0 + 0.8 * np.asarray(speaking, dtype=np.float64)
        for name, amp in SWAY_DEG.items():
            f, ph, a = self._sway[name]
            wave = (a[None, :] * np.sin(2 * np.pi * f[None, :] * t[:, None] + ph[None, :])).sum(1)
            out[:, col[name]] = amp * wave * lively
        f, ph = self._brow
        out[:, col["brow_raise"]] = 0.12 * np.sin(2 * np.pi * f[None, :] * t[:, None] + ph[None, :]).sum(1)
        out[:, col["breath"]] = np.sin(2 * np.pi * BREATH_HZ * t + self._breath_phase)
        out[:, [col["gaze_x"], col["gaze_y"]]] = self.gaze(t)
        return out


class SpeechAccent:
    """Brows that lift on stressed syllables, frame by frame: a stressed syllable opens the
    jaw more than the speech has lately, so the accent is the jaw's fast envelope above its
    slow one. Causal (no look-ahead), one per session."""

    def __init__(self, lift: float = 0.45) -> None:
        self.lift = lift
        self._fast = self._slow = self._out = 0.0

    def step(self, jaw: float) -> float:
        self._fast += 0.5 * (jaw - self._fast)
        self._slow += 0.04 * (jaw - self._slow)
        target = min(max((self._fast - self._slow - 0.1) / 0.25, 0.0), 1.0)
        rate = 0.35 if target > self._out else 0.08  # up quickly, down slowly
        self._out += rate * (target - self._out)
        return self.lift * self._out


class Liveliness:
    """Idle life and speech accents added to a session's motion, one frame at a time (what
    the `idle` stage does to each frame; also the Pipecat face, integrations/speech_face.py)."""

    def __init__(self, seed: int = 0) -> None:
        self.idle = IdleMotion(seed)
        self.accent = SpeechAccent()
        self._speaking = 0.0

    def apply(self, params: np.ndarray, time: float) -> np.ndarray:
        """`params` (N_PARAMS,) for media time `time` (seconds, increasing), with life added."""
        # liveliness follows how much the jaw has been moving lately (smoothed)
        self._speaking += 0.15 * (min(1.0, 2.0 * float(params[0])) - self._speaking)
        out = params.copy()
        out[IDLE] += self.idle.params(np.array([time]), np.array([self._speaking]))[0]
        out[IDX["brow_raise"]] += self.accent.step(float(params[IDX["jaw_open"]]))
        return out
