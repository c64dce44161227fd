"""Writing a talking-head file: H.264 video + AAC audio in MP4, through PyAV.

The file is written under a temporary name in the destination folder and renamed into
place only when complete, so a failed or interrupted render leaves no partial file.
"""
from __future__ import annotations

import os
import tempfile
from fractions import Fraction

import av
import numpy as np

AUDIO_RATE = 32000  # AAC frames are 1024 samples: 32 ms, under one video frame (48 kHz costs 3x more CPU for speech that is 22 kHz anyway)


class Mp4Writer:
    def __init__(self, path: str | os.PathLike[str], *, width: int, height: int, fps: int,
                 crf: int = 20, preset: str = "superfast") -> None:
        self.path = os.fspath(path)
        self.width, self.height, self.fps = width, height, fps
        self.crf, self.preset = crf, preset
        self._tmp: str | None = None
        self._container: av.container.OutputContainer | None = None
        self._resampler: av.AudioResampler | None = None
        self.video_frames = 0
        self.audio_samples = 0  # at the input rate

    def open(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, self._tmp = tempfile.mkstemp(prefix=".partial-", suffix=".mp4", dir=folder)
        os.close(fd)
        c = self._container = av.open(self._tmp, "w", format="mp4")
        v = c.add_stream("libx264", rate=self.fps)
        v.width, v.height, v.pix_fmt = self.width, self.height, "yuv420p"
        v.options = {"preset": self.preset, "crf": str(self.crf)}
        a = c.add_stream("aac", rate=AUDIO_RATE)
        a.layout = "mono"
        self._v, self._a = v, a
        self._resampler = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_RATE)

    def write_video(self, image: np.ndarray, pts: int, fmt: str = "rgb24") -> None:
        """`fmt` "rgb24" (H, W, 3) or "yuv420p" (H * 3 // 2, W): the latter skips a colour
        conversion that costs more than encoding at ultrafast (about 2 ms at 512x512)."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)
        frame.pts, frame.time_base = pts, Fraction(1, self.fps)
        self._mux(self._v.encode(frame))
        self.video_frames += 1

    def write_audio(self, samples: np.ndarray, sample_rate: int, pts: int) -> None:
        data = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, pts, Fraction(1, sample_rate)
        assert self._resampler is not None
        for out in self._resampler.resample(frame):
            self._mux(self._a.encode(out))
        self.audio_samples += data.shape[1]

    def _mux(self, packets: list[av.Packet]) -> None:
        assert self._container is not None
        for p in packets:
            self._container.mux(p)

    def close(self) -> str:
        """Flush the encoders and move the file into place. Returns the final path."""
        assert self._container is not None and self._resampler is not None and self._tmp is not None
        for out in self._resampler.resample(None):
            self._mux(self._a.encode(out))
        self._mux(self._a.encode(None))
        self._mux(self._v.encode(None))
        self._container.close()
        self._container = None
        os.replace(self._tmp, self.path)
        self._tmp = None
        return self.path

    def abort(self) -> None:
        """Drop everything written so far: no partial file stays behind."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is being discarded anyway
                pass
            self._container = None
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass
            self._tmp = None
