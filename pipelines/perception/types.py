"""What perception says about a frame: typed, on the hot path (dataclasses, no pydantic).

A `Perceiver` (pipelines/perception/perceiver.py) takes audio and frames on one media timeline
and returns one `Perception` per frame it analysed; the file command, the live call stage and
the evaluation all read these. Edges (the events file, the data channel) convert them to the
versioned records of pipelines/perception/records.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the analysed frame


@dataclass(frozen=True)
class FaceObservation:
    id: int  # stable across frames while the face is tracked
    box: Box
    speaking: float  # 0..1: how sure perception is that this face makes the sound heard now
    mouth: float  # mouth opening, inner lips' gap over the inter-ocular distance
    looking: bool | None  # at the camera (from head pose and the irises); None: not measured
    yaw: float  # head pose, degrees (positive: the face turns to the image's right)
    pitch: float  # degrees (positive: looking down)
    fresh: bool  # landmarks measured on this frame (False: carried from an earlier one)


@dataclass(frozen=True)
class PerceptionEvent:
    t: float  # media time, seconds
    type: str  # person_appeared, person_left, speaker_started, speaker_stopped, speaker_changed,
    #            looking_at_camera, looking_away, nod, shake
    face: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Perception:
    t: float  # media time of the frame, seconds
    index: int  # frame number in the input
    faces: tuple[FaceObservation, ...]
    speaker: int | None  # id of the face judged to be speaking; None: nobody on screen
    mask: np.ndarray | None  # (H, W) float32 in 0..1: the sounding object; None: nothing sounds
    mask_kind: str | None  # "face" (a speaking person) or "motion" (a non-face sound source)
    speech: float  # 0..1: voice activity of the audio at this frame's instant
    saliency: float  # the glance's score for this frame
    analysed: bool  # whether the expensive recognizers ran on this frame
    events: tuple[PerceptionEvent, ...] = ()
