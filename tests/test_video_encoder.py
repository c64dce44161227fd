"""Claim: the calls' VP8 encoder (web/calls/video_encoder.py) gives a receiver frames it decodes
from the RTP payloads, at a PSNR of 38 dB or more and no worse than aiortc's own encoder on
avatar frames, at the bitrate it is set to."""
from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
import torch
from aiortc.codecs import get_encoder
from aiortc.codecs.vpx import Vp8Decoder, vp8_depayload
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from pipelines.motion.idle import IdleMotion
from pipelines.motion.params import IDLE, N_PARAMS
from pipelines.render.avatar import default_avatar
from pipelines.render.renderer import WarpRenderer
from web.calls.video_encoder import AvatarVp8Encoder, negotiated_video_codec

SIZE, N = 256, 60
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


@pytest.fixture(scope="module")
def frames() -> list[av.VideoFrame]:
    """Two seconds of a talking avatar (jaw and sway moving), as the call's renderer makes them."""
    renderer = WarpRenderer(default_avatar(SIZE), output="yuv420p")
    t = np.arange(N) / 25
    params = np.zeros((N, N_PARAMS), np.float32)
    params[:, 0] = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)  # jaw: three syllables a second
    params[:, IDLE] = IdleMotion(seed=1).params(t)
    with torch.inference_mode():
        yuv = renderer(torch.from_numpy(params)).numpy()
    out = []
    for i, a in enumerate(yuv):
        f = av.VideoFrame.from_ndarray(a, format="yuv420p")
        f.pts, f.time_base = i * 3600, fractions.Fraction(1, 90000)
        out.append(f)
    return out


def _psnr_y(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a[:SIZE].astype(np.float64) - b[:SIZE].astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def _send_and_receive(encoder, frames: list[av.VideoFrame], keyframe_at: int = -1) -> list[float]:
    """Encode, depacketize as a receiver does, decode; PSNR of each decoded frame."""
    decoder = Vp8Decoder()
    psnr = []
    for i, f in enumerate(frames):
        payloads, ts = encoder.encode(f, force_keyframe=(i == keyframe_at))
        assert ts == i * 3600  # RTP timestamp from the frame's pts (90 kHz)
        data = b"".join(vp8_depayload(p) for p in payloads)
        if i == keyframe_at:  # a receiver that joins here (after a PLI) can decode it alone
            assert data[0] & 1 == 0, "not a keyframe"  # VP8 frame tag: bit 0 clear = key frame
            fresh = Vp8Decoder().decode(JitterFrame(data=data, timestamp=ts))
            assert len(fresh) == 1
        (out,) = decoder.decode(JitterFrame(data=data, timestamp=ts))
        psnr.append(_psnr_y(out.to_ndarray(format="yuv420p"), f.to_ndarray(format="yuv420p")))
    return psnr


def test_avatar_vp8_decodes_at_least_as_well_as_aiortcs_and_honours_keyframe_requests(frames) -> None:
    ours = _send_and_receive(AvatarVp8Encoder(), frames, keyframe_at=30)
    theirs = _send_and_receive(get_encoder(VP8), frames)
    # after the first second (CBR settles) at aiortc's default 500 kbps
    assert np.mean(ours[25:]) >= 38.0, np.mean(ours[25:])
    assert np.mean(ours[25:]) >= np.mean(theirs[25:]) - 0.5, (np.mean(ours[25:]), np.mean(theirs[25:]))
    assert min(ours) >= 30.0


def test_a_new_bitrate_estimate_reopens_the_encoder_at_that_rate(frames) -> None:
    enc = AvatarVp8Encoder()
    low = sum(len(p) for f in frames[:30] for p in enc.encode(f)[0])
    enc.target_bitrate = 1_500_000  # what aiortc sets on a REMB from the receiver
    high = sum(len(p) for f in frames[30:] for p in enc.encode(f)[0])
    assert enc.codec.bit_rate == 1_500_000
    assert high > 1.5 * low, (low, high)


def test_negotiated_codec_is_read_from_the_answer() -> None:
    sdp = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
           "m=video 9 UDP/TLS/RTP/SAVPF 102 96\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\n"
           "a=rtpmap:102 H264/90000\r\na=rtpmap:96 VP8/90000\r\n")
    assert negotiated_video_codec(sdp) == "video/h264"
    assert negotiated_video_codec(sdp.replace("102 96", "96 102")) == "video/vp8"
    assert negotiated_video_codec(sdp.split("m=video")[0]) is None
