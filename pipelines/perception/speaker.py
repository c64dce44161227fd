"""Who is speaking: audio-visual synchrony, without training.

A face is the speaker when its mouth opening follows the loudness of the speech heard, over
a sliding window, at some small lag (the mouth leads the sound by up to a couple of frames;
the video may be off by one). A face moving its lips to other speech does not follow this
soundtrack's loudness (r near 0); speech from off screen follows nobody's mouth; silence
gates everything off. Causal with a look-ahead: the score of the frame at t reads frames and
audio up to t + lookahead.
"""
from __future__ import annotations

import numpy as np

WINDOW_S = 0.6  # the shortest correlation window (it ends at t + lookahead, starts at the turn's onset)
LAGS = (-1, 0, 1, 2)  # frames by which the mouth may lead the sound
R_LOW, R_HIGH = 0.15, 0.5  # correlation mapped to a 0..1 score between these
MIN_MOUTH_STD = 0.008  # IOD, jaw std over the window: a mouth that does not move is not speaking
SPEECH_HANGOVER_S = (0.25, 0.12)  # speech "now" = any speech in [t - a, t + b]: pauses between words


def mouth_series(measured: dict[int, float], first: int, last: int) -> np.ndarray | None:
    """Mouth opening for frames first..last, linear between measured frames (the glance
    measures some frames only); None when under 4 frames of the span were measured."""
    ks = np.array(sorted(k for k in measured if first - 8 <= k <= last + 8))
    if len(ks) < 4 or ((ks >= first) & (ks <= last)).sum() < 3:
        return None
    vals = np.array([measured[k] for k in ks], np.float32)
    return np.interp(np.arange(first, last + 1), ks, vals).astype(np.float32)


def sync(mouth: np.ndarray, loud_db: np.ndarray) -> float:
    """max over LAGS of Pearson r between mouth[j - lag] and loudness[j]."""
    if float(mouth.std()) < MIN_MOUTH_STD or float(loud_db.std()) < 1.0:
        return 0.0
    best = -1.0
    n = len(mouth)
    for lag in LAGS:
        m = mouth[max(0, -lag):n - max(0, lag)]
        a = loud_db[max(0, lag):n - max(0, -lag)]
        if len(m) < 6 or m.std() < 1e-6 or a.std() < 1e-6:
            continue
        best = max(best, float(np.corrcoef(m, a)[0, 1]))
    return best


def score(r: float, speech_now: float) -> float:
    """0..1: correlation above chance, while speech is heard."""
    s = float(np.clip((r - R_LOW) / (R_HIGH - R_LOW), 0.0, 1.0))
    return s * float(np.clip((speech_now - 0.3) / 0.4, 0.0, 1.0))


class SpeakerChooser:
    """The face with the highest score above `on` speaks; the current speaker keeps the turn
    while its score stays above `hold` (no flicker between two close scores)."""

    def __init__(self, on: float = 0.5, hold: float = 0.3) -> None:
        self.on, self.hold = on, hold
        self.current: int | None = None

    def choose(self, scores: dict[int, float]) -> int | None:
        best = max(scores, key=scores.__getitem__, default=None)
        cur = self.current
        if cur is not None and scores.get(cur, 0.0) >= self.hold and (best == cur or scores[best] < scores[cur] + 0.2):
            return cur
        self.current = best if best is not None and scores[best] >= self.on else None
        return self.current
