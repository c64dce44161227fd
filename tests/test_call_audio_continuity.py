"""Claim (docs/calls.md, "Media"): a caller receives all of the call's audio — as many seconds
of it as of video, its RTP timestamps without gaps. (aiortc's Opus encoder stamps every
packet of one frame with the same timestamp, and receivers keep one packet per timestamp:
40 ms frames lost half their audio until the sink cut them in 20 ms pieces.)"""
from __future__ import annotations

import asyncio

import numpy as np

from callutil import CallClient, server_process

CALL = {"call_size": 256, "sizes": [256], "size": 256, "voice": "en-us"}


def test_a_caller_receives_as_much_audio_as_video_without_gaps() -> None:
    async def scenario() -> tuple[float, float, np.ndarray]:
        async with server_process(**CALL) as http:
            call = CallClient(http, wav=None, keep_video=False)
            assert await call.start() == 201
            assert (await call.post("say", {"text": "Every word of this sentence should reach the caller."}))[0] == 202
            await asyncio.sleep(6.0)
            audio_s = sum(len(mono) / rate for _, mono, rate in call.got.audio)
            video = [t for t, _ in call.got.video]
            pts = np.asarray(call.got.audio_pts, np.int64)
            await call.close()
            return audio_s, video[-1] - video[0], pts

    audio_s, video_s, pts = asyncio.run(scenario())
    assert video_s > 4.0, video_s
    assert abs(audio_s - video_s) < 0.4, (audio_s, video_s)
    steps = np.diff(pts)
    assert (steps == 960).mean() > 0.98, np.unique(steps, return_counts=True)  # 20 ms at 48 kHz
