"""`avatar perceive input.mp4 --events events.jsonl [--overlay overlay.mp4] [--glance]`:
perception of a video file (docs/perception.md, "Command").

The input is decoded with PyAV as a stream, never held whole: each video frame with its own
timestamp (variable frame rate is fine), downscaled for analysis when longer than
ANALYSIS_MAX_SIDE on a side (boxes and masks are mapped back to the input's pixels); the
soundtrack decoded in its own pass over the file, mixed to mono, resampled to 16 kHz and fed
to the Perceiver just ahead of the frames (silence where there is none). The events file
(pipelines/perception/records.py) and the overlay video are written under temporary names in
their folders and renamed when complete: after an error neither exists.

Errors a user can cause (no video stream, a file that is not a video, a corrupt or truncated
one, an unwritable destination) print one line and exit with status 2.

    python -m pipelines.perception.file input.mp4 --events events.jsonl [--overlay overlay.mp4] [--glance]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import IO, Any

import numpy as np

from . import records as rec
from .types import Perception

ANALYSIS_MAX_SIDE = 1280
AUDIO_RATE = 16000
AUDIO_AHEAD_S = 0.1  # audio fed this far past the Perceiver's look-ahead before each frame
MIN_ANALYSIS_SIDE = 16  # tinier frames are padded (black, right and bottom) to this for the Perceiver
OVERLAY_MIN_SIDE = 320  # tiny inputs are drawn enlarged so the labels can be read
EXIT_USAGE = 2
EXIT_FAILURE = 1


class InputError(ValueError):
    """Something about the input or the destination a user can fix: one line, exit 2."""


@dataclass(frozen=True)
class VideoInfo:
    name: str
    width: int
    height: int
    fps: float
    duration: float | None
    frames: int | None
    audio: bool
    origin: float  # the container's first timestamp, seconds: media time 0

    @property
    def analysis_size(self) -> tuple[int, int]:
        """(width, height) of the frames perception analyses."""
        return analysis_size(self.width, self.height)


@dataclass
class PerceiveSummary:
    events_path: str
    overlay_path: str | None
    frames: int
    media_seconds: float
    wall_seconds: float
    faces: int  # distinct face ids seen
    events: dict[str, int] = field(default_factory=dict)  # event type -> how many
    counters: dict[str, int] = field(default_factory=dict)
    speaker_frames: int = 0  # frames with somebody speaking on screen
    warnings: list[str] = field(default_factory=list)  # one line each (a truncated file, ...)


def analysis_size(width: int, height: int, max_side: int = ANALYSIS_MAX_SIDE) -> tuple[int, int]:
    long = max(width, height)
    if long <= max_side:
        return width, height
    s = max_side / long
    return max(1, round(width * s)), max(1, round(height * s))


# --- reading ------------------------------------------------------------------------------

def _av_error() -> tuple[type[BaseException], ...]:
    import av

    return (av.FFmpegError,) if hasattr(av, "FFmpegError") else (av.AVError,)  # type: ignore[attr-defined]


def _open(path: str) -> Any:
    import av

    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder, not a video file")
    try:
        return av.open(path, "r", metadata_errors="ignore")
    except _av_error() as exc:
        raise InputError(f"{os.path.basename(path)}: not a readable video file ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    s = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(s).split()) or type(exc).__name__


def probe(path: str) -> VideoInfo:
    """What the container says about the input. InputError when it has no video."""
    name = os.path.basename(path)
    with contextlib.closing(_open(path)) as c:
        if not c.streams.video:
            kinds = sorted({s.type for s in c.streams}) or ["nothing"]
            raise InputError(f"{name}: no video stream (it holds {', '.join(kinds)}): perception needs a video")
        v = c.streams.video[0]
        w, h = int(v.codec_context.width or 0), int(v.codec_context.height or 0)
        if w <= 0 or h <= 0:
            raise InputError(f"{name}: the video stream has no frame size (corrupt or truncated file)")
        rate = v.average_rate or v.guessed_rate or v.base_rate
        fps = float(rate) if rate else 0.0
        if not (0.1 <= fps <= 1000.0):
            fps = 25.0
        duration = None
        if v.duration is not None and v.time_base is not None:
            duration = float(v.duration * v.time_base)
        elif c.duration is not None:
            duration = c.duration / 1_000_000
        starts = [float(s.start_time * s.time_base) for s in (v, *c.streams.audio[:1])
                  if s.start_time is not None and s.time_base is not None]
        origin = min(starts) if starts else 0.0
        frames = int(v.frames) if v.frames else None
        try:  # one frame decoded now, so a broken file fails before mediapipe loads
            first = next(iter(c.decode(v)), None)
        except _av_error() as exc:
            raise InputError(f"{name}: cannot decode its first video frame ({_reason(exc)}): "
                             "corrupt or truncated file") from None
        if first is None:
            raise InputError(f"{name}: no video frame could be decoded (empty, corrupt or truncated file)")
        return VideoInfo(name, w, h, round(fps, 3), None if duration is None else round(duration, 3), frames,
                         bool(c.streams.audio), origin)


class AudioFeed:
    """The input's first audio stream as 16 kHz mono, decoded in its own pass over the file and
    handed out up to a media time; silence after its end (or throughout, without one)."""

    def __init__(self, path: str, info: VideoInfo) -> None:
        self.pushed = 0  # samples handed out so far
        self.ended = not info.audio
        self._buf: list[np.ndarray] = []
        self._have = 0
        self._iter: Iterator[np.ndarray] | None = None
        if info.audio:
            self._iter = self._decode(path, info.origin)

    def _decode(self, path: str, origin: float) -> Iterator[np.ndarray]:
        import av

        c = _open(path)
        try:
            stream = c.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
            first = True
            for frame in c.decode(stream):
                if first:
                    first = False
                    t0 = (frame.time or origin) - origin
                    if t0 > 0:  # the soundtrack starts after the video: silence before it
                        yield np.zeros(int(round(t0 * AUDIO_RATE)), np.float32)
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        except _av_error() as exc:
            raise InputError(f"{os.path.basename(path)}: cannot decode its audio ({_reason(exc)}): "
                             "corrupt or truncated file") from None
        finally:
            c.close()

    def until(self, t: float) -> np.ndarray:
        """The samples from where the last call ended up to media time `t`."""
        want = max(0, int(round(t * AUDIO_RATE)) - self.pushed)
        while self._have < want and not self.ended:
            assert self._iter is not None
            chunk = next(self._iter, None)
            if chunk is None:
                self.ended = True
                break
            self._buf.append(chunk)
            self._have += len(chunk)
        if self._have < want:  # past the soundtrack's end: silence
            self._buf.append(np.zeros(want - self._have, np.float32))
            self._have = want
        x = np.concatenate(self._buf) if self._buf else np.zeros(0, np.float32)
        out, rest = x[:want], x[want:]
        self._buf, self._have = ([rest] if len(rest) else []), len(rest)
        self.pushed += len(out)
        return out

    def rest(self) -> np.ndarray:
        """What is left of the soundtrack (nothing after its end)."""
        parts = list(self._buf)
        while not self.ended:
            assert self._iter is not None
            chunk = next(self._iter, None)
            if chunk is None:
                self.ended = True
                break
            parts.append(chunk)
        x = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        self._buf, self._have = [], 0
        self.pushed += len(x)
        return x


def video_frames(path: str, info: VideoInfo) -> Iterator[tuple[float, np.ndarray]]:
    """(media time, RGB uint8 at the analysis size) for each decoded frame, in order; times
    strictly increasing (a frame without a timestamp, or with a repeated one, is placed just
    after the one before)."""
    aw, ah = info.analysis_size
    c = _open(path)
    name = os.path.basename(path)
    last = -1.0
    try:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in c.decode(stream):
            t = frame.time
            t = last + 1.0 / info.fps if t is None else t - info.origin
            if t <= last:
                t = last + 1e-3
            last = t
            if (frame.width, frame.height) != (info.width, info.height):  # size changed mid-stream
                raise InputError(f"{name}: the frame size changes mid-stream at {t:.2f} s "
                                 f"({info.width}x{info.height} -> {frame.width}x{frame.height})")
            if (aw, ah) != (frame.width, frame.height):
                rgb = frame.reformat(width=aw, height=ah, format="rgb24", interpolation="AREA").to_ndarray()
            else:
                rgb = frame.to_ndarray(format="rgb24")
            if min(aw, ah) < MIN_ANALYSIS_SIDE:  # no face fits; the Perceiver's patches need a few pixels
                pad = np.zeros((max(ah, MIN_ANALYSIS_SIDE), max(aw, MIN_ANALYSIS_SIDE), 3), np.uint8)
                pad[:ah, :aw] = rgb
                rgb = pad
            yield round(t, 4), rgb
    except _av_error() as exc:
        where = f"after {last:.2f} s" if last >= 0 else "at its start"
        raise InputError(f"{name}: cannot decode its video {where} ({_reason(exc)}): "
                         "corrupt or truncated file") from None
    finally:
        c.close()


# --- writing ------------------------------------------------------------------------------

class AtomicOutput:
    """A file written under a temporary name in its destination's folder, renamed there by
    `commit`; `discard` (or an exception) leaves nothing."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        folder = os.path.dirname(self.path)
        if os.path.isdir(self.path):
            raise InputError(f"{path}: is a folder")
        if not os.path.isdir(folder):
            raise InputError(f"{path}: the folder {folder} does not exist")
        suffix = os.path.splitext(self.path)[1]
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=".partial-", suffix=suffix, dir=folder)
        except OSError as exc:
            raise InputError(f"{path}: cannot write there ({_reason(exc)})") from None
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)  # as open() would have made it, not mkstemp's 0600

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


class OverlayWriter:
    """What was perceived, drawn on the analysed frames: H.264 (+ the input's audio, mono
    16 kHz AAC), frames at their media times (variable frame rate kept)."""

    def __init__(self, path: str, width: int, height: int, fps: float, audio: bool) -> None:
        import av

        k = 1
        if max(width, height) < OVERLAY_MIN_SIDE:
            k = -(-OVERLAY_MIN_SIDE // max(width, height))
        self.scale = k
        self.width, self.height = _even(width * k), _even(height * k)
        self._c = av.open(path, "w", format="mp4")
        v = self._c.add_stream("libx264", rate=max(1, round(fps)))
        v.width, v.height, v.pix_fmt = self.width, self.height, "yuv420p"
        v.codec_context.time_base = Fraction(1, 1000)
        v.time_base = Fraction(1, 1000)
        v.options = {"preset": "veryfast", "crf": "23"}
        self._v = v
        self._a = None
        if audio:
            a = self._c.add_stream("aac", rate=AUDIO_RATE)
            a.layout = "mono"
            self._a = a
            self._resampler = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_RATE)
        self._last_pts = -1
        self._samples = 0

    def audio(self, x: np.ndarray) -> None:
        import av

        if self._a is None or not len(x):
            return
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x, np.float32).reshape(1, -1), format="flt",
                                           layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, self._samples, Fraction(1, AUDIO_RATE)
        self._samples += len(x)
        for out in self._resampler.resample(frame):
            self._mux(self._a.encode(out))

    def video(self, rgb: np.ndarray, t: float) -> None:
        import av

        h, w = rgb.shape[:2]  # drawn at `scale` already (draw)
        if (h, w) != (self.height, self.width):
            canvas = np.zeros((self.height, self.width, 3), np.uint8)
            canvas[: min(h, self.height), : min(w, self.width)] = rgb[: self.height, : self.width]
            rgb = canvas
        pts = max(int(round(t * 1000)), self._last_pts + 1)
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts, frame.time_base = pts, Fraction(1, 1000)
        self._mux(self._v.encode(frame))

    def _mux(self, packets: list[Any]) -> None:
        for p in packets:
            self._c.mux(p)

    def close(self) -> None:
        if self._a is not None:
            for out in self._resampler.resample(None):
                self._mux(self._a.encode(out))
            self._mux(self._a.encode(None))
        self._mux(self._v.encode(None))
        self._c.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._c.close()


def _even(n: int) -> int:
    return max(2, n + (n % 2))


SPEAKER_RGB = (255, 214, 0)
FACE_RGB = (235, 235, 235)
MASK_RGB = {"face": np.array([0, 200, 255], np.float32), "motion": np.array([255, 120, 0], np.float32)}


def draw(rgb: np.ndarray, p: Perception, recent: list[str], scale: int = 1) -> np.ndarray:
    """The analysed frame with what perception saw: the sounding mask tinted, each face's box
    (the speaker's thick and yellow), its id and speaking score (a bar under the box), and a
    banner with the time, the voice activity, the speaker and the latest events."""
    from PIL import Image, ImageDraw, ImageFont

    img = rgb
    if scale > 1:
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    if p.mask is not None:
        m = p.mask >= rec.MASK_THRESHOLD
        if scale > 1:
            m = np.repeat(np.repeat(m, scale, axis=0), scale, axis=1)
        tint = MASK_RGB.get(p.mask_kind or "motion", MASK_RGB["motion"])
        out = img.astype(np.float32)
        out[m] = 0.55 * out[m] + 0.45 * tint
        img = out.astype(np.uint8)
    im = Image.fromarray(np.ascontiguousarray(img))
    d = ImageDraw.Draw(im)
    h, w = img.shape[:2]
    lw = max(1, round(min(h, w) / 240))
    size = max(10, min(28, round(min(h, w) / 28)))
    font = ImageFont.load_default(size=size)
    for f in p.faces:
        x0, y0, x1, y1 = (v * scale for v in f.box)
        spk = f.id == p.speaker
        col = SPEAKER_RGB if spk else FACE_RGB
        d.rectangle((x0, y0, x1, y1), outline=col, width=lw * (3 if spk else 1))
        label = f"#{f.id} {f.speaking:.2f}" + (" speaking" if spk else "") + (" · looking" if f.looking else "")
        ty = max(0.0, y0 - size - 4)
        tw = d.textlength(label, font=font)
        d.rectangle((x0, ty, x0 + tw + 4, ty + size + 2), fill=(0, 0, 0))
        d.text((x0 + 2, ty), label, fill=col, font=font)
        bh = max(4, size // 2)  # the speaking bar, under the box
        by = min(h - bh - 1, y1 + 3)
        d.rectangle((x0, by, x1, by + bh), fill=(40, 40, 40), outline=col)
        d.rectangle((x0, by, x0 + (x1 - x0) * float(np.clip(f.speaking, 0, 1)), by + bh),
                    fill=(60, 220, 90) if spk else (150, 150, 150))
    who = f"speaker #{p.speaker}" if p.speaker is not None else "nobody speaking"
    if p.mask is not None:
        who += f", mask: {p.mask_kind}"
    lines = [f"{p.t:7.2f} s  speech {p.speech:.2f}  {who}", *recent[-3:]]
    bw = max(d.textlength(s, font=font) for s in lines) + 8
    d.rectangle((0, 0, bw, len(lines) * (size + 3) + 4), fill=(0, 0, 0))
    for i, s in enumerate(lines):
        d.text((4, 2 + i * (size + 3)), s, fill=(255, 255, 255), font=font)
    return np.asarray(im)


# --- the command --------------------------------------------------------------------------

def perceive_file(input: str | os.PathLike[str], events_path: str | os.PathLike[str],
                  overlay_path: str | os.PathLike[str] | None = None, *, glance: bool = False,
                  progress: bool | IO[str] = True) -> PerceiveSummary:
    """Perceive a video file: the events file (and the overlay) written, atomically.
    `progress`: a tqdm bar on stderr (True), on the stream given, or none (False)."""
    path, events_path = os.fspath(input), os.fspath(events_path)
    overlay = os.fspath(overlay_path) if overlay_path is not None else None
    if overlay is not None and os.path.abspath(overlay) == os.path.abspath(events_path):
        raise InputError("--events and --overlay name the same file")
    for out in (events_path, overlay):
        if out is not None and os.path.abspath(out) == os.path.abspath(path):
            raise InputError(f"{out}: is the input; it would be overwritten")
    info = probe(path)
    aw, ah = info.analysis_size
    t_start = time.monotonic()
    ev_out = AtomicOutput(events_path)  # the destinations checked before mediapipe loads
    try:
        ov_out = AtomicOutput(overlay) if overlay is not None else None
    except BaseException:
        ev_out.discard()
        raise
    writer: OverlayWriter | None = None
    bar = None
    try:
        from .perceiver import Perceiver  # once input and outputs are known good: mediapipe takes seconds to load

        perceiver = Perceiver(fps=info.fps, glance=glance)
        if ov_out is not None:
            writer = OverlayWriter(ov_out.tmp, aw, ah, info.fps, info.audio)
        total = info.frames or (round(info.duration * info.fps) if info.duration else None)
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="frame", desc="perceive", file=progress if progress is not True else sys.stderr,
                       dynamic_ncols=True, mininterval=0.5)
        settings = rec.Settings(glance=glance, lookahead_s=float(getattr(perceiver, "lookahead_s", 0.0)),
                                masks=bool(getattr(perceiver, "masks", True)), analysis_max_side=ANALYSIS_MAX_SIDE,
                                audio_rate=AUDIO_RATE)
        header = rec.Header(t=0.0, input=info.name, width=info.width, height=info.height, fps=info.fps,
                            duration=info.duration, frames=info.frames, audio=info.audio, analysis_width=aw,
                            analysis_height=ah, settings=settings)
        summary = PerceiveSummary(events_path, overlay, 0, 0.0, 0.0, 0)
        ids: set[int] = set()
        with open(ev_out.tmp, "w", encoding="utf-8") as fh:
            fh.write(rec.dump(header) + "\n")
            feed = AudioFeed(path, info)
            pending: dict[int, np.ndarray] = {}
            recent: list[tuple[float, str]] = []
            ahead = settings.lookahead_s + AUDIO_AHEAD_S
            last_t = 0.0
            pushed = 0

            def emit(results: list[Perception]) -> None:
                for p in results:
                    if p.mask is not None and p.mask.shape[:2] != (ah, aw):  # a padded tiny frame
                        p = dataclasses.replace(p, mask=p.mask[:ah, :aw])
                    lines = rec.records_of(p, analysed_size=(ah, aw), input_size=(info.height, info.width))
                    for r in lines:
                        fh.write(rec.dump(r) + "\n")
                    ids.update(f.id for f in p.faces)
                    summary.frames += 1
                    summary.speaker_frames += p.speaker is not None
                    for e in p.events:
                        summary.events[e.type] = summary.events.get(e.type, 0) + 1
                    rgb = pending.pop(p.index, None)
                    if rgb is not None:
                        rgb = rgb[:ah, :aw]
                    if writer is not None and rgb is not None:
                        recent.extend((p.t, _event_text(e)) for e in p.events)
                        recent[:] = [(te, s) for te, s in recent if p.t - te <= 1.5]
                        writer.video(draw(rgb, p, [s for _, s in recent], writer.scale), p.t)
                    if bar is not None:
                        bar.update(1)

            for t, rgb in video_frames(path, info):
                x = feed.until(t + ahead)
                perceiver.push_audio(x, AUDIO_RATE)
                if writer is not None:
                    writer.audio(x)
                    pending[pushed] = rgb  # the Perceiver numbers frames as they come, from 0
                pushed += 1
                last_t = t
                emit(perceiver.push_frame(rgb, t))
            if pushed == 0:
                raise InputError(f"{info.name}: no video frame could be decoded (corrupt or truncated file)")
            if info.frames and pushed < 0.9 * info.frames - 1:
                summary.warnings.append(f"{info.name}: decoded {pushed} of the {info.frames} frames it announces, "
                                        "to {:.2f} s: truncated or corrupt after that".format(last_t))
            elif not info.frames and info.duration and last_t + 1.0 / info.fps < 0.9 * info.duration - 0.5:
                summary.warnings.append(f"{info.name}: its video ends at {last_t:.2f} s of the {info.duration:.2f} s "
                                        "it announces: truncated or corrupt after that")
            x = feed.rest()
            if len(x):
                perceiver.push_audio(x, AUDIO_RATE)
                if writer is not None:
                    writer.audio(x)
            emit(perceiver.finish())
            c = perceiver.counters
            wall = time.monotonic() - t_start
            fh.write(rec.dump(rec.End(t=round(last_t, 4), frames=summary.frames, detector_calls=c["detector_calls"],
                                      mesh_calls=c["mesh_calls"], segmenter_calls=c["segmenter_calls"],
                                      wall_s=round(wall, 3))) + "\n")
        if writer is not None:
            writer.close()
            writer = None
        ev_out.commit()
        if ov_out is not None:
            ov_out.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        ev_out.discard()
        if ov_out is not None:
            ov_out.discard()
        raise
    finally:
        if bar is not None:
            bar.close()
    summary.media_seconds = round(last_t, 3)
    summary.wall_seconds = round(time.monotonic() - t_start, 3)
    summary.faces = len(ids)
    summary.counters = dict(perceiver.counters)
    return summary


def _event_text(e: Any) -> str:
    who = f" #{e.face}" if e.face is not None else ""
    return f"{e.t:.2f} s {e.type.replace('_', ' ')}{who}"


# --- command line -------------------------------------------------------------------------

def parser(prog: str = "avatar perceive") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Perceive a video file: faces, who speaks, the sounding "
                                "object; writes an events file (JSON Lines) and optionally an overlay video.")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's arguments, for avatar/cli.py's subparser."""
    p.add_argument("input", help="a video file (mp4, mkv, webm, mov, ...), with or without sound")
    p.add_argument("--events", required=True, help="where to write the events file (JSON Lines)")
    p.add_argument("--overlay", help="also write a video of what was perceived (MP4)")
    p.add_argument("--glance", action="store_true", help="glance mode: run the expensive recognizers only on "
                   "salient frames (cheaper, a little less accurate)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks and the native libraries' logs")


@contextlib.contextmanager
def _quiet_native_stderr(enabled: bool) -> Iterator[IO[str]]:
    """MediaPipe's C++ (TFLite, absl) writes to file descriptor 2 whenever it likes; the user
    asked for a progress bar and, on error, one line. Yields a stream on the real stderr, and
    points descriptor 2 at /dev/null meanwhile."""
    if not enabled:
        yield sys.stderr
        return
    sys.stderr.flush()
    saved = os.dup(2)
    real = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield real
    finally:
        real.flush()
        os.dup2(saved, 2)
        os.close(saved)
        real.close()


def run(args: argparse.Namespace, prog: str = "avatar perceive") -> int:
    """Run the parsed command; errors as one line on stderr and an exit status."""
    if not args.debug:
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _quiet_native_stderr(not args.debug) as err:
            try:
                s = perceive_file(args.input, args.events, args.overlay, glance=args.glance,
                                  progress=False if args.no_progress else err)
            except (InputError, OSError) as exc:
                if args.debug:
                    raise
                print(f"{prog}: error: {_one_line(exc)}", file=err)
                return EXIT_USAGE
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=err)
                return 130
            except Exception as exc:  # noqa: BLE001 - a bug (or mediapipe missing): one line unless --debug
                if args.debug:
                    raise
                print(f"{prog}: error: {type(exc).__name__}: {_one_line(exc)} (run with --debug for details)",
                      file=err)
                return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    for w in s.warnings:
        print(f"{prog}: warning: {w}", file=sys.stderr)
    speed = s.frames / max(s.wall_seconds, 1e-9)
    ev = ", ".join(f"{n} {k}" for k, n in sorted(s.events.items())) or "no events"
    print(f"wrote {s.events_path}" + (f" and {s.overlay_path}" if s.overlay_path else "") +
          f": {s.frames} frames ({s.media_seconds:.2f} s), {s.faces} face(s), somebody speaking on "
          f"{s.speaker_frames} frames; {ev}; in {s.wall_seconds:.1f} s ({speed:.1f} frames/s)")
    return 0


def _one_line(exc: BaseException) -> str:
    s = " ".join(str(exc).split())
    return s or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
