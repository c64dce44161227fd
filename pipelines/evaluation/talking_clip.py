"""A camera clip of one talking face: this project's renderer saying a sentence, placed on a
plain 640x480 25 fps frame with its own speech as the soundtrack. What a caller's camera and
microphone send, for the live perception test and benchmark (the perception benchmark's
scenes, pipelines/evaluation/perception_scenes.py, are the varied ones)."""
from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import av
import numpy as np

from avatar.render import render
from avatar.settings import RenderRequest

TEXT = ("Hello there. I am the caller, and I am talking to the avatar on this call. "
        "Can you see me speaking?")


def talking_camera(out: Path, *, text: str = TEXT, size: tuple[int, int] = (640, 480), talker: int = 256,
                   top: int = 120, left: int = 200, voice: str = "en-us") -> Path:
    """Writes `out` (H.264 + AAC); the talker's square is [left, left+talker) x [top, top+talker)."""
    w, h = size
    with tempfile.TemporaryDirectory() as d:
        talk = Path(d) / "talk.mp4"
        asyncio.run(render(RenderRequest(text=text, voice=voice, size=talker, output=talk)))
        with av.open(str(talk)) as src, av.open(str(out), "w") as dst:
            vs = dst.add_stream("libx264", rate=25)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            vs.options = {"preset": "ultrafast"}
            aus = dst.add_stream("aac", rate=48000)
            rs = av.AudioResampler(format="fltp", layout="mono", rate=48000)
            for f in src.decode(video=0):
                c = np.full((h, w, 3), 90, np.uint8)
                c[top:top + talker, left:left + talker] = f.to_ndarray(format="rgb24")
                for p in vs.encode(av.VideoFrame.from_ndarray(c, format="rgb24")):
                    dst.mux(p)
            src.seek(0)
            for f in src.decode(audio=0):
                for r in rs.resample(f):
                    for p in aus.encode(r):
                        dst.mux(p)
            for s in (vs, aus):
                for p in s.encode(None):
                    dst.mux(p)
    return out
