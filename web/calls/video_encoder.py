"""The avatar's VP8 encoder: aiortc's, with settings for synthetic frames.

aiortc encodes every outgoing VP8 frame with libvpx tuned for cameras: the temporal
denoiser on (`noise-sensitivity` 4), `cpu-used` −6. Our frames are rendered, so there is no
sensor noise to remove. Rendered 512² avatar frames (cpu2, `libvpx` through PyAV, ms per frame
and luma PSNR of the decoded frames):

    settings                          500 kbps           1.5 Mbps (where REMB goes on a LAN)
    aiortc's (denoiser, cpu-used -6)  4.0 ms, 42.7 dB    4.9 ms, 43.8 dB
    no denoiser, cpu-used -8          2.9 ms, 45.0 dB    4.0 ms, 48.7 dB
    no denoiser, cpu-used -12 (ours)  2.3 ms, 43.5 dB    2.8 ms, 48.1 dB

The denoiser costs a quarter to a third of the encode and *lowers* PSNR by 3-5 dB (it smears
the lips' motion into the next frame); −12 then trades 0.6-1.5 dB for another 0.6-1.2 ms.
With four calls at 25 fps that is ~0.2 of a core, on a two-core server (BENCHMARKS.md,
"Sustained calls").

aiortc has no public way to configure its encoder, so `install(sender)` puts an encoder in
the sender before its RTP loop starts (the loop creates one only when none is there). Keyframe
requests (PLI/FIR) and the receiver's bitrate estimate (REMB) reach it exactly as they reach
aiortc's own. If a future aiortc moves that attribute, `install` logs it and the call goes on
with aiortc's encoder.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import av
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import VIDEO_TIME_BASE, convert_timebase
from aiortc.sdp import SessionDescription

log = logging.getLogger(__name__)

_SLOT = "_RTCRtpSender__encoder"  # where RTCRtpSender keeps its encoder (aiortc 1.9–1.16)


class AvatarVp8Encoder(Vp8Encoder):
    """VP8 for rendered frames: no denoiser, faster search; times each frame. Rate control,
    keyframes and packetization as aiortc's."""

    OPTIONS = {"noise-sensitivity": "0", "cpu-used": "-12"}

    def __init__(self, on_encoded: Callable[[float], None] | None = None) -> None:
        super().__init__()
        self._on_encoded = on_encoded  # called with seconds per frame (the metric)

    def encode(self, frame: av.Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        assert isinstance(frame, av.VideoFrame)
        t0 = time.perf_counter()
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        c = self.codec
        # As aiortc: a new size, or a bitrate estimate off by more than 10 %, re-opens the encoder.
        if c is None or (frame.width, frame.height) != (c.width, c.height) \
                or abs(self.target_bitrate - c.bit_rate) / c.bit_rate > 0.1:
            self.codec = c = self._open(frame.width, frame.height)
        if force_keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        data = b"".join(bytes(p) for p in c.encode(frame))
        payloads = self._packetize(data, self.picture_id)
        self.picture_id = (self.picture_id + 1) % (1 << 15)
        timestamp = convert_timebase(frame.pts, frame.time_base, VIDEO_TIME_BASE)
        if self._on_encoded is not None:
            self._on_encoded(time.perf_counter() - t0)
        return payloads, timestamp

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        ctx = av.CodecContext.create("libvpx", "w")
        ctx.width, ctx.height = width, height
        ctx.bit_rate = self.target_bitrate
        ctx.pix_fmt = "yuv420p"
        ctx.gop_size = 3000  # keyframes on request (PLI) only
        ctx.qmin, ctx.qmax = 2, 56
        rate = str(self.target_bitrate)  # minrate = maxrate = bit_rate: CBR, 1 s buffer
        ctx.options = {"bufsize": rate, "minrate": rate, "maxrate": rate, "deadline": "realtime",
                       "lag-in-frames": "0", "overshoot-pct": "15", "undershoot-pct": "100",
                       "partitions": "0", "static-thresh": "1", **self.OPTIONS}
        ctx.thread_count = 1
        return ctx


def negotiated_video_codec(answer_sdp: str) -> str | None:
    """The codec the call's video will use: the first one of the answer's video section."""
    desc = SessionDescription.parse(answer_sdp)
    for m in desc.media:
        if m.kind == "video" and m.fmt:  # the m= line orders the payload types by preference
            by_type = {c.payloadType: c.mimeType.lower() for c in m.rtp.codecs}
            return by_type.get(int(m.fmt[0]))
    return None


def install(sender: Any, on_encoded: Callable[[float], None] | None = None) -> bool:
    """Give `sender` (an RTCRtpSender of video, before its transport connects) our VP8
    encoder. Only for calls that negotiated VP8 (`negotiated_video_codec`)."""
    if not hasattr(sender, _SLOT):
        log.warning("aiortc's RTCRtpSender keeps its encoder elsewhere in this version: "
                    "calls use aiortc's VP8 settings (slower, denoised)")
        return False
    setattr(sender, _SLOT, AvatarVp8Encoder(on_encoded))
    return True
