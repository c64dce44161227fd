"""Typed frames that travel through a graph.

Every frame carries its presentation timestamp `pts` in its own time base (audio: samples,
video: ticks of 1/fps), the monotonic time it entered the graph, its deadline and the
session epoch it belongs to (an interrupt bumps the epoch; older frames are stale).
The runtime knows nothing of faces or codecs: pipelines subclass `Frame` for their payloads.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeVar

import numpy as np

F = TypeVar("F", bound="Frame")


@dataclass(slots=True, kw_only=True)
class Frame:
    pts: int
    time_base: Fraction
    entered: float = 0.0  # clock time at which the media this frame derives from entered the graph
    deadline: float = math.inf  # clock time by which it must be presented
    epoch: int = 0

    @property
    def time(self) -> float:
        """Presentation time in seconds."""
        return float(self.pts * self.time_base)

    def timing(self) -> dict[str, Any]:
        """The timing fields, to stamp a frame derived from this one."""
        return {"pts": self.pts, "time_base": self.time_base, "entered": self.entered,
                "deadline": self.deadline, "epoch": self.epoch}

    def restamped(self: F, other: Frame) -> F:
        """This frame's payload with `other`'s timing (used to repeat the last frame)."""
        return dataclasses.replace(self, **other.timing())


@dataclass(slots=True, kw_only=True)
class AudioFrame(Frame):
    """Mono float32 samples; `pts` counts samples, so time_base is 1/sample_rate."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(slots=True, kw_only=True)
class VideoFrame(Frame):
    """A picture, pts in 1/fps ticks. `format` names the layout of `image` (uint8, numpy or
    torch) the way libav does: "rgb24" is (H, W, 3); "yuv420p" is planar I420 packed as
    (H * 3 // 2, W) — Y, then U and V at half resolution — what video encoders consume."""

    image: Any
    format: str = "rgb24"


@dataclass(frozen=True, slots=True)
class SegmentEnd:
    """In-stream marker: the segment (utterance) `segment_id` ends here. Never late, never dropped."""

    segment_id: str = ""
    epoch: int = 0
