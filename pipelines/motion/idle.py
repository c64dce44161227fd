"""Idle life: blinks, head sway, breathing and brows, as a deterministic function of time.

One `IdleMotion` per session (seeded), queried for any increasing run of frame times, so
the same seed gives the same avatar behaviour offline and live. Blinks come every 2-6 s
(uniform), close in ~80 ms and open in ~150 ms; sometimes a double blink. Head sway is a sum
of slow sinusoids (0.05-0.35 Hz, up to about +/-1.6 degrees of yaw), livelier while speaking; breathing
is ~15 breaths a minute.
"""
from __future__ import annotations

import numpy as np

from .params import IDLE, PARAM_NAMES

BLINK_GAP_S = (2.0, 6.0)
BLINK_CLOSE_S, BLINK_HOLD_S, BLINK_OPEN_S = 0.08, 0.04, 0.15
SWAY_DEG = {"head_yaw": 1.6, "head_pitch": 1.0, "head_roll": 0.9}
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

    def _blinks_until(self, t_end: float) -> np.ndarray:
        while self._next_blink <= t_end + 1.0:
            self._blinks.append(self._next_blink)
            if self._rng.random() < 0.12:  # a double blink now and then
                self._blinks.append(self._next_blink + 0.32)
            self._next_blink += float(self._rng.uniform(*BLINK_GAP_S))
        return np.asarray(self._blinks)

    def params(self, times: np.ndarray, speaking: np.ndarray | None = None) -> np.ndarray:
        """(len(times), 7): blink_r, blink_l, brow_raise, head_yaw, head_pitch, head_roll, breath.
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
        return out
