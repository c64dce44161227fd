"""Reading back what the engine wrote, the way a player would: PyAV decodes."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np


@dataclass
class Decoded:
    frames: list[np.ndarray]  # RGB
    video_pts_s: list[float]
    fps: Fraction
    width: int
    height: int
    audio: np.ndarray  # mono float
    sample_rate: int
    n_audio_streams: int
    n_video_streams: int
    video_codec: str
    audio_codec: str

    @property
    def video_seconds(self) -> float:
        return len(self.frames) / float(self.fps)

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / self.sample_rate


def decode(path: str) -> Decoded:
    with av.open(path) as c:
        vs, aus = c.streams.video, c.streams.audio
        v = vs[0]
        fps, width, height, vcodec = v.average_rate, v.codec_context.width, v.codec_context.height, v.codec_context.name
        frames, pts = [], []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            pts.append(float(f.pts * f.time_base))
        n_a, n_v = len(aus), len(vs)
    with av.open(path) as c:
        a = c.streams.audio[0]
        rate, acodec = a.codec_context.sample_rate, a.codec_context.name
        chunks = [f.to_ndarray().mean(0) if f.to_ndarray().ndim == 2 else f.to_ndarray() for f in c.decode(audio=0)]
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return Decoded(frames, pts, fps, width, height, audio, rate, n_a, n_v, vcodec, acodec)
