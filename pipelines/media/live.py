"""Live encoding: a session's audio and video frames in, encoded packets out to a transport.

    H264Encoder   libx264 ultrafast/zerolatency, constrained baseline, Annex B with SPS/PPS
                  in band at every keyframe (so any keyframe starts a decoder), no B-frames
    OpusEncoder   libopus 48 kHz mono, 20 ms packets, `lowdelay` (2.5 ms of codec delay)
    PcmEncoder    s16le 48 kHz mono, one packet per input chunk

Encoders are blocking and keep codec state: `StreamSink` creates and calls them on its own
`ThreadWorker` (one per session), never on the event loop. Packet timestamps are in each
stream's time base (video 1/fps, audio 1/48000); audio packet pts is the media time of its
first decoded sample, so Opus's first packet starts `preskip` samples before 0.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

import av
import numpy as np

from engines import ThreadWorker
from realtime import AudioFrame, Channel, ChannelClosed, Frame, Stage, StageContext, VideoFrame
from realtime.stage import StageMeter

AUDIO_RATE = 48000  # what Opus runs at; PCM uses it too, so a client has one audio clock


@dataclass(slots=True)
class EncodedPacket:
    stream: str  # "video" | "audio"
    pts: int
    duration: int
    time_base: Fraction
    data: bytes
    keyframe: bool = False
    start: bool = False  # the first packet of an utterance in this stream

    @property
    def time(self) -> float:
        return float(self.pts * self.time_base)

    @property
    def end(self) -> float:
        return float((self.pts + self.duration) * self.time_base)


class AudioEncoder(Protocol):
    codec: str

    def encode(self, samples: np.ndarray, sample_rate: int, pts: int) -> list[EncodedPacket]: ...

    def flush(self) -> list[EncodedPacket]: ...


class H264Encoder:
    def __init__(self, width: int, height: int, fps: int, *, crf: int = 23, gop_s: float = 5.0,
                 preset: str = "ultrafast", level: str = "3.1") -> None:
        self.fps = fps
        self.time_base = Fraction(1, fps)
        c = self._ctx = av.CodecContext.create("libx264", "w")
        c.width, c.height, c.pix_fmt = width, height, "yuv420p"
        c.time_base, c.framerate = self.time_base, Fraction(fps)
        # zerolatency: no lookahead, no B-frames, one frame in -> one packet out.
        # forced-idr: a requested keyframe is an IDR (a decoder can start there).
        # The keyframe interval is the context's gop_size: libx264's wrapper has no "keyint"
        # option, and unknown options are ignored silently (until 2026-12-02 the stream sent
        # one keyframe at its start and then only on requests).
        c.gop_size = max(1, round(gop_s * fps))
        c.options = {"preset": preset, "tune": "zerolatency", "profile": "baseline", "level": level,
                     "crf": str(crf), "forced-idr": "1", "repeat-headers": "1"}
        c.open()

    def encode(self, image: np.ndarray, fmt: str, pts: int, keyframe: bool = False) -> list[EncodedPacket]:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)
        frame.pts, frame.time_base = pts, self.time_base
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        return [self._packet(p) for p in self._ctx.encode(frame)]

    def flush(self) -> list[EncodedPacket]:
        return [self._packet(p) for p in self._ctx.encode(None)]

    def _packet(self, p: av.Packet) -> EncodedPacket:
        return EncodedPacket("video", int(p.pts), 1, self.time_base, bytes(p), keyframe=bool(p.is_keyframe))


class _Resampled:
    """Float mono at the session rate -> s16 mono at 48 kHz, timestamps carried through."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)

    def frames(self, samples: np.ndarray | None, sample_rate: int = AUDIO_RATE, pts: int = 0) -> list[av.AudioFrame]:
        if samples is None:
            return list(self._resampler.resample(None))
        data = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, pts, Fraction(1, sample_rate)
        return list(self._resampler.resample(frame))


class OpusEncoder:
    codec = "opus"

    def __init__(self, *, bitrate: int = 32000) -> None:
        self.time_base = Fraction(1, AUDIO_RATE)
        c = self._ctx = av.CodecContext.create("libopus", "w")
        c.sample_rate, c.layout, c.format, c.bit_rate = AUDIO_RATE, "mono", "s16", bitrate
        c.time_base = self.time_base
        c.options = {"application": "lowdelay", "frame_duration": "20"}
        c.open()
        self._in = _Resampled()

    def encode(self, samples: np.ndarray, sample_rate: int, pts: int) -> list[EncodedPacket]:
        out: list[EncodedPacket] = []
        for f in self._in.frames(samples, sample_rate, pts):
            out += [self._packet(p) for p in self._ctx.encode(f)]
        return out

    def flush(self) -> list[EncodedPacket]:
        out: list[EncodedPacket] = []
        for f in self._in.frames(None):
            out += [self._packet(p) for p in self._ctx.encode(f)]
        return out + [self._packet(p) for p in self._ctx.encode(None)]

    def _packet(self, p: av.Packet) -> EncodedPacket:
        return EncodedPacket("audio", int(p.pts), int(p.duration or 960), self.time_base, bytes(p), keyframe=True)


class PcmEncoder:
    codec = "pcm_s16le"

    def __init__(self) -> None:
        self.time_base = Fraction(1, AUDIO_RATE)
        self._in = _Resampled()

    def encode(self, samples: np.ndarray, sample_rate: int, pts: int) -> list[EncodedPacket]:
        return [self._packet(f) for f in self._in.frames(samples, sample_rate, pts)]

    def flush(self) -> list[EncodedPacket]:
        return [self._packet(f) for f in self._in.frames(None)]

    def _packet(self, f: av.AudioFrame) -> EncodedPacket:
        data = f.to_ndarray().reshape(-1).astype("<i2").tobytes()
        return EncodedPacket("audio", int(f.pts), f.samples, self.time_base, data, keyframe=True)


@dataclass(frozen=True, slots=True)
class CodecInfo:
    """What a client needs to configure its decoders, learnt from a throwaway encode."""

    h264_codec_string: str  # RFC 6381, e.g. "avc1.42C01F", from the encoder's own SPS
    opus_preskip: int  # samples of codec delay before the first real sample


def probe_codecs() -> CodecInfo:
    """Blocking (a few ms): encodes one tiny frame and 20 ms of silence."""
    video = H264Encoder(64, 64, 25)
    data = b"".join(p.data for p in video.encode(np.zeros((96, 64), np.uint8), "yuv420p", 0, keyframe=True)
                    + video.flush())
    i = data.find(b"\x00\x00\x01\x67")  # the SPS NAL unit: profile, constraints, level follow
    if i < 0:
        raise RuntimeError("libx264 produced no in-band SPS")
    profile, constraints, level = data[i + 4], data[i + 5], data[i + 6]
    audio = OpusEncoder()
    packets = audio.encode(np.zeros(960, np.float32), AUDIO_RATE, 0) + audio.flush()
    return CodecInfo(f"avc1.{profile:02X}{constraints:02X}{level:02X}", max(0, -packets[0].pts))


@dataclass(slots=True)
class SinkStats:
    video_frames: int = 0
    audio_packets: int = 0
    keyframes: int = 0
    bytes: int = 0
    audio_gap_samples: int = 0  # silence inserted where audio frames were dropped (interrupts)
    media_time: float = 0.0  # end of the last video frame encoded


@dataclass(slots=True)
class _Keyframes:
    at: list[int] = field(default_factory=list)  # video pts from which a keyframe is wanted
    starts: list[int] = field(default_factory=list)  # utterance start frames (flagged)


class StreamSink(Stage):
    """Audio and video frames in, encoded packets handed to `deliver` (on the event loop), in
    presentation order. Audio stays continuous: where frames were dropped (an interrupt
    clears the channels) silence is encoded instead. `request_keyframe(pts)` makes the first
    video frame at or after `pts` a keyframe (utterance starts, client requests, recovery
    after the transport dropped video)."""

    inputs = ("audio", "video")
    outputs = ()

    def __init__(self, name: str, *, video: Callable[[], H264Encoder], audio: Callable[[], AudioEncoder],
                 deliver: Callable[[list[EncodedPacket]], None], budget_s: float = 0.010) -> None:
        super().__init__(name, budget_s=budget_s)
        self._make_video, self._make_audio = video, audio
        self.deliver = deliver
        self.thread = ThreadWorker("encode")
        self.stats = SinkStats()
        self._video: H264Encoder | None = None
        self._audio: AudioEncoder | None = None
        self._key = _Keyframes()
        self._next_audio: int | None = None  # expected pts of the next audio frame (input rate)
        self._start_audio: list[float] = []  # utterance start times not yet flagged on audio

    def request_keyframe(self, pts: int = 0, *, utterance_start: bool = False) -> None:
        self._key.at.append(pts)
        if utterance_start:
            self._key.starts.append(pts)
            self._start_audio.append(pts / (self._video.fps if self._video else 1))

    async def setup(self, ctx: StageContext) -> None:
        self.thread.start()
        try:
            self._video, self._audio = await self.thread.call(lambda: (self._make_video(), self._make_audio()))
        except BaseException:
            await self.thread.close()  # teardown is not called for a stage whose setup failed
            raise

    async def run(self, ctx: StageContext) -> None:
        meter = ctx.meter(self)
        a_ch, v_ch = ctx.input("audio"), ctx.input("video")
        held: Frame | None = None  # an audio frame later than the last video frame
        while (v := await _next(v_ch)) is not None:
            # Audio for media time t is emitted before the motion for t, so when video frame
            # t is here its audio is already queued: take it without waiting for more (waiting
            # for the *next* audio frame would add a frame period of latency).
            items: list[Frame] = []
            while True:
                a = held if held is not None else _try_next(a_ch)
                held = None
                if a is None:
                    break
                if a.time > v.time:
                    held = a
                    break
                items.append(a)
            items.append(v)
            await self._encode(ctx, meter, items)  # one hop to the codec thread per video frame
        rest = [held] if held is not None else []
        while (a := await _next(a_ch)) is not None:
            rest.append(a)
        if rest:
            await self._encode(ctx, meter, rest)
        packets = await self.thread.call(self._flush_blocking)
        if packets:
            self.deliver(packets)

    async def _encode(self, ctx: StageContext, meter: StageMeter, items: list[Frame]) -> None:
        t0 = ctx.clock.now()
        plan = [(item, self._wants_key(item)) for item in items]
        packets = await self.thread.call(self._encode_blocking, plan)
        meter.frames_in(len(items))
        meter.work(ctx.clock.now() - t0, len(items))
        for p in packets:
            self._account(p)
        if packets:
            self.deliver(packets)

    def _wants_key(self, item: Frame) -> tuple[bool, bool]:
        """(keyframe, utterance start) for a video frame; decided on the loop, where requests land."""
        if not isinstance(item, VideoFrame):
            return False, False
        key = any(p <= item.pts for p in self._key.at)
        start = any(p <= item.pts for p in self._key.starts)
        if key:
            self._key.at = [p for p in self._key.at if p > item.pts]
        if start:
            self._key.starts = [p for p in self._key.starts if p > item.pts]
        return key, start

    def _encode_blocking(self, plan: list[tuple[Frame, tuple[bool, bool]]]) -> list[EncodedPacket]:
        assert self._video is not None and self._audio is not None
        out: list[EncodedPacket] = []
        for item, (key, start) in plan:
            if isinstance(item, AudioFrame):
                samples, pts = self._continuous(item)
                if len(samples):
                    out += self._audio.encode(samples, item.sample_rate, pts)
            elif isinstance(item, VideoFrame):
                packets = self._video.encode(item.image, item.format, item.pts, keyframe=key)
                for p in packets:
                    p.start = start
                out += packets
        return out

    def _continuous(self, frame: AudioFrame) -> tuple[np.ndarray, int]:
        """The frame's samples and pts, preceded by silence for samples dropped before it."""
        samples, pts, expected = frame.samples, frame.pts, self._next_audio
        if expected is not None and pts > expected:
            self.stats.audio_gap_samples += pts - expected
            samples, pts = np.concatenate([np.zeros(pts - expected, np.float32), samples]), expected
        elif expected is not None and pts < expected:
            samples, pts = samples[expected - pts:], expected  # never goes back in time
        self._next_audio = pts + len(samples)
        return samples, pts

    def _flush_blocking(self) -> list[EncodedPacket]:
        assert self._video is not None and self._audio is not None
        return self._audio.flush() + self._video.flush()

    def _account(self, p: EncodedPacket) -> None:
        self.stats.bytes += len(p.data)
        if p.stream == "video":
            self.stats.video_frames += 1
            self.stats.keyframes += p.keyframe
            self.stats.media_time = max(self.stats.media_time, p.end)
        else:
            self.stats.audio_packets += 1
            while self._start_audio and self._start_audio[0] < p.end:
                self._start_audio.pop(0)
                p.start = True

    async def teardown(self) -> None:
        self._video = self._audio = None  # codec contexts are freed with their last reference
        await self.thread.close()


def _try_next(ch: Channel[object]) -> Frame | None:
    while (item := ch.try_get()) is not None:
        if isinstance(item, Frame):
            return item
    return None


async def _next(ch: Channel[object]) -> Frame | None:
    while True:
        try:
            item = await ch.get()
        except ChannelClosed:
            return None
        if isinstance(item, Frame):
            return item


__all__ = ["AUDIO_RATE", "AudioEncoder", "CodecInfo", "EncodedPacket", "H264Encoder", "OpusEncoder",
           "PcmEncoder", "SinkStats", "StreamSink", "probe_codecs"]
