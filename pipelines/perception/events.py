"""From per-frame perception to events: a state changes when its new value has held for a
few frames (no flicker), and the event carries the media time the change began."""
from __future__ import annotations

from collections import deque

import numpy as np

from .types import FaceObservation, PerceptionEvent

HOLD_FRAMES = 3  # a new speaker state must hold this long
LOOK_HOLD_FRAMES = 5
GESTURE_S = 1.2  # nod / shake: within this much time
NOD_DEG, SHAKE_DEG = 8.0, 12.0


class _Debounced:
    def __init__(self, initial: object, hold: int) -> None:
        self.value, self.hold = initial, hold
        self._cand: object = initial
        self._since_t = 0.0
        self._n = 0

    def update(self, v: object, t: float) -> tuple[object, float] | None:
        """(old value, the time the new one began) when the value changes."""
        if v == self.value:
            self._n = 0
            self._cand = v
            return None
        if v != self._cand:
            self._cand, self._since_t, self._n = v, t, 0
        self._n += 1
        if self._n >= self.hold:
            old, self.value = self.value, v
            self._n = 0
            return old, self._since_t
        return None


class EventTracker:
    def __init__(self) -> None:
        self._speaker = _Debounced(None, HOLD_FRAMES)
        self._seen: set[int] = set()
        self._looking: dict[int, _Debounced] = {}
        self._pose: dict[int, deque[tuple[float, float, float]]] = {}
        self._gesture_until: dict[int, float] = {}

    def update(self, t: float, faces: tuple[FaceObservation, ...], speaker: int | None) -> list[PerceptionEvent]:
        ev: list[PerceptionEvent] = []
        ids = {f.id for f in faces}
        for f in faces:
            if f.id not in self._seen:
                self._seen.add(f.id)
                ev.append(PerceptionEvent(t, "person_appeared", f.id, {"box": [round(v, 1) for v in f.box]}))
        for gone in sorted(self._seen - ids):
            self._seen.discard(gone)
            self._looking.pop(gone, None)
            self._pose.pop(gone, None)
            ev.append(PerceptionEvent(t, "person_left", gone))
            if self._speaker.value == gone:  # a speaker who left stops speaking now
                self._speaker.value = None
                ev.append(PerceptionEvent(t, "speaker_stopped", gone))
        changed = self._speaker.update(speaker, t)
        if changed is not None:
            old, since = changed
            new = self._speaker.value
            if old is None:
                ev.append(PerceptionEvent(since, "speaker_started", new))  # type: ignore[arg-type]
            elif new is None:
                ev.append(PerceptionEvent(since, "speaker_stopped", old))  # type: ignore[arg-type]
            else:
                ev.append(PerceptionEvent(since, "speaker_changed", new, {"from": old}))  # type: ignore[arg-type]
        for f in faces:
            if not f.fresh or f.looking is None:
                continue
            d = self._looking.setdefault(f.id, _Debounced(None, LOOK_HOLD_FRAMES))
            ch = d.update(f.looking, t)
            if ch is not None:
                ev.append(PerceptionEvent(ch[1], "looking_at_camera" if f.looking else "looking_away", f.id))
            ev.extend(self._gesture(f, t))
        return ev

    def _gesture(self, f: FaceObservation, t: float) -> list[PerceptionEvent]:
        q = self._pose.setdefault(f.id, deque())
        q.append((t, f.yaw, f.pitch))
        while q and q[0][0] < t - GESTURE_S:
            q.popleft()
        if t < self._gesture_until.get(f.id, -1.0) or len(q) < 6:
            return []
        yaw = np.array([p[1] for p in q])
        pitch = np.array([p[2] for p in q])
        for kind, main, other, deg in (("nod", pitch, yaw, NOD_DEG), ("shake", yaw, pitch, SHAKE_DEG)):
            if np.ptp(main) >= deg and np.ptp(other) < 0.6 * np.ptp(main) and _reversals(main, deg / 2) >= 2:
                self._gesture_until[f.id] = t + GESTURE_S
                q.clear()
                return [PerceptionEvent(t, kind, f.id, {"degrees": round(float(np.ptp(main)), 1)})]
        return []


def _reversals(x: np.ndarray, step: float) -> int:
    """How often the series turns back by at least `step` (a nod: down then up = 2 legs)."""
    n, ref, direction = 0, x[0], 0
    for v in x[1:]:
        if direction >= 0 and v <= ref - step:
            n, direction, ref = n + (direction > 0), -1, v
        elif direction <= 0 and v >= ref + step:
            n, direction, ref = n + (direction < 0), 1, v
        elif (direction > 0 and v > ref) or (direction < 0 and v < ref):
            ref = v
    return n + 1 if n else 0
