"""The motion parameter set: what drives the renderer, per video frame.

One vector of `N_PARAMS` float32 values per frame. The mouth parameters come from speech
(the viseme function for text, the audio-to-motion model for audio — trained on targets
from the same viseme function); the rest is idle life. See docs/motion-parameters.md.

    index name        range     meaning
    0     jaw_open    0..1      jaw drop; 1 = a wide "aa" (inner lip gap ~ 0.4 mouth widths)
    1     lip_press   0..1      lips pressed shut whatever the jaw does (p, b, m)
    2     lip_round   0..1      rounding / pucker: narrower mouth, fuller lips (oo, w, o)
    3     lip_spread  0..1      spread: corners out (ee, s)
    4     lip_tuck    0..1      lower lip up against the upper teeth (f, v)
    5     blink_r     0..1      right eye (image left) closure
    6     blink_l     0..1      left eye closure
    7     brow_raise  -1..1     both brows up (+) or down (-)
    8     head_yaw    degrees   turn, + = towards image right
    9     head_pitch  degrees   nod, + = chin down
    10    head_roll   degrees   tilt, + = clockwise in the image
    11    breath      -1..1     breathing phase: + = chest/head up
    12    gaze_x      -1..1     eyes towards image right (+), 0 = the portrait's own gaze
    13    gaze_y      -1..1     eyes down (+)
    14    tongue      0..1      tongue tip at the front of the mouth, under the upper teeth
                                (th, dh: 1; l: 0.5) -- from text only: the audio model
                                predicts the five lip parameters

All zeros is the rest pose: mouth closed and relaxed, eyes open, head straight.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from realtime import Frame

PARAM_NAMES: tuple[str, ...] = (
    "jaw_open", "lip_press", "lip_round", "lip_spread", "lip_tuck",
    "blink_r", "blink_l", "brow_raise", "head_yaw", "head_pitch", "head_roll", "breath",
    "gaze_x", "gaze_y", "tongue",
)
N_PARAMS = len(PARAM_NAMES)
IDX = {name: i for i, name in enumerate(PARAM_NAMES)}
MOUTH = slice(0, 5)  # the speech-driven part
IDLE = slice(5, 14)
TONGUE = IDX["tongue"]  # speech, like MOUTH, but from the phonemes alone
RANGES: dict[str, tuple[float, float]] = {
    "jaw_open": (0, 1), "lip_press": (0, 1), "lip_round": (0, 1), "lip_spread": (0, 1),
    "lip_tuck": (0, 1), "blink_r": (0, 1), "blink_l": (0, 1), "brow_raise": (-1, 1),
    "head_yaw": (-15, 15), "head_pitch": (-15, 15), "head_roll": (-15, 15), "breath": (-1, 1),
    "gaze_x": (-1, 1), "gaze_y": (-1, 1), "tongue": (0, 1),
}
LOW = np.array([RANGES[n][0] for n in PARAM_NAMES], dtype=np.float32)
HIGH = np.array([RANGES[n][1] for n in PARAM_NAMES], dtype=np.float32)


def clip_params(p: np.ndarray) -> np.ndarray:
    """Clamp a (..., N_PARAMS) array into the documented ranges."""
    return np.clip(p, LOW, HIGH).astype(np.float32)


@dataclass(slots=True, kw_only=True)
class MotionFrame(Frame):
    """Motion for one video frame; pts in ticks of 1/fps, made for the audio at that time."""

    params: np.ndarray  # (N_PARAMS,) float32


def video_time_base(fps: int) -> Fraction:
    return Fraction(1, fps)
