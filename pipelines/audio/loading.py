"""Audio files in (`avatar render --audio speech.wav`): decode with libav, resample to 16 kHz.

Anything libav decodes works (wav, mp3, ogg/vorbis, ogg/opus, flac, m4a/aac, ...). The first
audio stream is used. Problems come back as one line (`AudioFileError`, a ValueError, which
the CLI prints and exits 2 on). A damaged file (a WAV whose header claims more data than
there is, a truncated download) decodes as far as the data goes: what is there is returned,
`info.damaged` says so and a warning is logged. Length is judged on decoded samples, never
on the header, because headers lie.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import numpy as np

from .resample import OUT_RATE, StreamingResampler

log = logging.getLogger(__name__)

DEFAULT_MAX_SECONDS = 600.0
# Decoded audio shorter than this share of the header's duration marks the file damaged
# (header durations of compressed files are estimates, so not stricter than this).
TRUNCATED_SHARE = 0.9


class AudioFileError(ValueError):
    """An audio file we cannot use; the message is one human-readable line."""


@dataclass(frozen=True, slots=True)
class AudioInfo:
    path: str
    codec: str
    sample_rate: int  # of the file (Hz)
    channels: int
    duration_s: float  # of the audio decoded
    nan_count: int  # NaN/inf values replaced by 0 (float files only)
    clipped_fraction: float  # share of values at or beyond full scale
    damaged: bool  # decoding stopped on bad data, or far less audio than the header claims


def load_audio(path: str | os.PathLike[str], *, max_seconds: float = DEFAULT_MAX_SECONDS
               ) -> tuple[np.ndarray, AudioInfo]:
    """16 kHz mono float32 samples in [-1, 1] and what the file was."""
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    p = Path(path)
    name = str(p)
    if not p.exists():
        raise AudioFileError(f"{name}: no such file")
    if p.is_dir():
        raise AudioFileError(f"{name}: is a directory, not an audio file")
    try:
        if p.stat().st_size == 0:
            raise AudioFileError(f"{name}: the file is empty")
        container = av.open(name, mode="r")
    except av.error.FFmpegError as exc:
        raise AudioFileError(f"{name}: not a readable audio file ({_reason(exc)})") from None
    except OSError as exc:
        raise AudioFileError(f"{name}: cannot read ({exc.strerror or exc})") from None
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise AudioFileError(f"{name}: has no audio stream (contains {', '.join(kinds)})")
        return _decode(container, container.streams.audio[0], name, max_seconds)


def _decode(container: av.container.InputContainer, stream: av.audio.stream.AudioStream,
            name: str, max_seconds: float) -> tuple[np.ndarray, AudioInfo]:
    out: list[np.ndarray] = []
    done: list[StreamingResampler] = []  # retired by a mid-stream format change
    resampler: StreamingResampler | None = None
    seconds = 0.0
    damaged = False
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                x = _frame_array(frame)
                if len(x) == 0:
                    continue
                if resampler is None or (frame.sample_rate, x.shape[1]) != (
                        resampler.in_rate, resampler.channels):
                    if resampler is not None:  # the format changed mid-stream: start over
                        out.append(resampler.flush())
                        done.append(resampler)
                    try:
                        resampler = StreamingResampler(frame.sample_rate, x.shape[1])
                    except ValueError as exc:
                        raise AudioFileError(f"{name}: {exc}") from None
                out.append(resampler.push(x))
                seconds += len(x) / frame.sample_rate
                if seconds > max_seconds:
                    raise AudioFileError(f"{name}: longer than the limit of {max_seconds:g} s")
    except av.error.FFmpegError as exc:
        # Truncated or corrupt data: keep what decoded (a cut-off recording is still useful).
        damaged = True
        log.warning("%s: decoding stopped early (%s); using the first %.2f s",
                    name, _reason(exc), seconds)
    if resampler is None:
        raise AudioFileError(f"{name}: no audio could be decoded")
    declared = _declared_seconds(container, stream)
    if not damaged and declared is not None and seconds < declared * TRUNCATED_SHARE - 0.05:
        damaged = True  # a truncated download, or a header that claims more than there is
        log.warning("%s: the header says %.2f s but only %.2f s could be decoded",
                    name, declared, seconds)
    out.append(resampler.flush())
    stats = [r.stats for r in (*done, resampler)]
    values = sum(st.values_in for st in stats)
    duration = sum(r.stats.frames_in / r.in_rate for r in (*done, resampler))
    samples = np.concatenate(out).astype(np.float32, copy=False)
    info = AudioInfo(path=name, codec=stream.codec_context.name, sample_rate=resampler.in_rate,
                     channels=resampler.channels, duration_s=duration,
                     nan_count=sum(st.nonfinite for st in stats),
                     clipped_fraction=sum(st.clipped for st in stats) / values if values else 0.0,
                     damaged=damaged)
    log.info("loaded %s: %s %d Hz x%d, %.2f s -> %d samples at %d Hz", name, info.codec,
             info.sample_rate, info.channels, duration, len(samples), OUT_RATE)
    return samples, info


def _declared_seconds(container: av.container.InputContainer,
                      stream: av.audio.stream.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _frame_array(frame: av.AudioFrame) -> np.ndarray:
    """(n, channels) in the frame's own sample type; the resampler scales integers."""
    a = frame.to_ndarray()
    ch = frame.layout.nb_channels
    return a.T if frame.format.is_planar else a.reshape(-1, ch)


def _reason(exc: BaseException) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    return str(msg).strip().rstrip(".") or type(exc).__name__
