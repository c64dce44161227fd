"""Generated audio-visual scenes with exact ground truth, for evaluating perception (issue 13).

A scene is a 640x480, 25 fps video with a 16 kHz mono soundtrack and, per frame, who on
screen makes the sound (`speaker`), the sounding object's exact pixels (`masks`), every
talker's face box and whose lips move. Kinds (AVSBench-Robust's negatives among them):

    talkers        2-4 talkers rendered by this project's WarpRenderer (lips driven by the
                   audio-to-motion model on real synthesized speech: espeak and piper "joe"),
                   one in the soundtrack at a time, turns of 1.5-4 s, some turns of silence;
                   one talker mouths OTHER speech that is not in the soundtrack (the
                   distractor), sprites sway and breathe, a disc drifts in the background,
                   noise at an SNR of clean / 20 / 10 / 5 dB
    silence        faces on screen, no sound (a -80 dBFS dither)
    noise          faces on screen, noise only
    offscreen      speech in the soundtrack; on screen nobody's lips move, or one talker's
                   move to other speech: nobody on screen is the speaker
    static_object  a drawn loudspeaker that never moves, playing notes (not speech); the
                   mask is the loudspeaker. A training-free, motion-based method cannot find
                   it: that is the point of this kind
    moving_object  a drum that jumps with the energy of its own hits; the mask is the drum
                   while its sound rings

Exact masks by construction: each talker (and object) is a sprite with a binary alpha defined
here (the person mask of the framed portrait, from mediapipe's selfie segmentation, computed
once and thresholded); the composite uses exactly that alpha, so the pixels a sprite covers
are known. The renderer's own head motion is off; sway and scale are applied when compositing
(alpha resized with nearest neighbour, the same geometry as the colours). Talkers differ:
portrait variant (pipelines/evaluation/test_portraits.py: original, darker skin, grayscale,
lighter skin, rotated), face width 60-160 px, position, blur, and compression (JPEG or an
H.264 round trip through PyAV) applied to the sprite's colours only.

Scenes are cached on disk (`$AVATAR_CACHE_DIR` or ~/.cache/avatar-engine, under
perception-scenes/v{GENERATOR_VERSION}/), frames losslessly (FFV1), keyed by kind, seed and size.

    python -m pipelines.evaluation.perception_scenes --sheet sheet.png   # a contact sheet of the test set
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.signal import resample_poly

GENERATOR_VERSION = 1
WIDTH, HEIGHT, FPS, SAMPLE_RATE = 640, 480, 25, 16000
KINDS = ("talkers", "silence", "noise", "offscreen", "static_object", "moving_object")
NEGATIVE_KINDS = ("silence", "noise", "offscreen")
SNRS_DB = (None, 20.0, 10.0, 5.0)  # None: clean
# The test set: (kind, seed). Fixed; figures are reported on exactly these scenes.
TEST_SCENES: tuple[tuple[str, int], ...] = (
    ("talkers", 101), ("talkers", 102), ("talkers", 103), ("talkers", 104),
    ("talkers", 105), ("talkers", 106),
    ("silence", 201), ("silence", 202), ("noise", 301), ("noise", 302),
    ("offscreen", 401), ("offscreen", 402), ("static_object", 501), ("static_object", 502),
    ("moving_object", 601), ("moving_object", 602),
)
TEST_SEEDS: tuple[int, ...] = tuple(s for _, s in TEST_SCENES)
PORTRAITS = ("original", "darker_skin", "grayscale", "lighter_skin", "rotated_ccw15")
VOICES = ("en-us", "joe", "en-us+f3", "joe", "en-us+m3")  # per talker slot, cycled
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please pass me the salt and the pepper.",
    "We will meet again on Monday morning.",
    "My phone battery died halfway through the call.",
    "Could you open the window a little?",
    "The train to Boston leaves at noon.",
    "She sells sea shells by the sea shore.",
    "I think the blue one looks much better.",
    "Nobody told me the meeting was cancelled.",
    "Let us go for a walk in the park.",
    "The soup is too hot to eat right now.",
    "How many people are coming tonight?",
    "Turn left at the second traffic light.",
    "I have never seen such a big dog before.",
    "The museum is closed on public holidays.",
    "Bring an umbrella, it might rain later.",
    "Which of these two books did you read?",
    "My brother plays the piano every evening.",
    "We ran out of milk again this morning.",
    "The garden looks lovely in the spring.",
)


@dataclass
class Scene:
    frames: np.ndarray  # (T, H, W, 3) uint8
    audio: np.ndarray  # (N,) float32 mono, 16 kHz, from media time 0
    fps: int
    speaker: np.ndarray  # (T,) int: index of the on-screen talker heard at that frame, -1 none
    masks: np.ndarray  # (T, H, W) bool: the sounding object's pixels (all False: nothing on screen sounds)
    talker_boxes: np.ndarray  # (T, n_talkers, 4) float32 face boxes x0, y0, x1, y1 (px)
    lip_moving: np.ndarray  # (T, n_talkers) bool: whose lips move (to any speech, heard or not)
    kind: str
    seed: int
    info: dict[str, object] = field(default_factory=dict)  # what was drawn: portraits, voices, SNR...

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def n_talkers(self) -> int:
        return self.talker_boxes.shape[1]

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def to_mp4(self, path: str | os.PathLike[str], *, crf: int = 18) -> str:
        """H.264 + AAC in MP4 (pipelines.media.mp4.Mp4Writer: no partial file on failure)."""
        from pipelines.media.mp4 import Mp4Writer

        h, w = self.frames.shape[1:3]
        wr = Mp4Writer(path, width=w, height=h, fps=self.fps, crf=crf)
        wr.open()
        try:
            per = SAMPLE_RATE // self.fps
            for i, f in enumerate(self.frames):
                wr.write_audio(self.audio[i * per:(i + 1) * per], SAMPLE_RATE, i * per)
                wr.write_video(f, i)
            rest = self.audio[len(self.frames) * per:]
            if len(rest):
                wr.write_audio(rest, SAMPLE_RATE, len(self.frames) * per)
            return wr.close()
        except BaseException:
            wr.abort()
            raise


# --- sprites ------------------------------------------------------------------------------------

@dataclass
class _Talker:
    image_frames: np.ndarray  # (T, S, S, 3) uint8, the renderer's frames (degraded)
    alpha: np.ndarray  # (S, S) bool person mask
    face_box: np.ndarray  # (4,) in sprite pixels
    lip_audio: np.ndarray  # what its lips follow (16 kHz)
    lip_moving: np.ndarray  # (T,) bool
    x: np.ndarray  # (T,) top-left of the sprite in the frame (before scale about its centre)
    y: np.ndarray
    scale: np.ndarray  # (T,)
    desc: dict[str, object]


@cache
def _portrait(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A test portrait and its landmarks (detected on the variant itself)."""
    from pipelines.evaluation import test_portraits as tp
    from pipelines.render.landmarks import detect_face_landmarks

    maker = {"original": tp.original, "darker_skin": tp.darker_skin, "grayscale": tp.grayscale,
             "lighter_skin": tp.lighter_skin, "rotated_ccw15": lambda: tp.rotated(15)}[name]
    img = maker().image
    return img, detect_face_landmarks(img).astype(np.float32)


@cache
def _selfie():  # type: ignore[no-untyped-def]
    from mediapipe.python.solutions import selfie_segmentation

    return selfie_segmentation.SelfieSegmentation(model_selection=0)


def person_alpha(image: np.ndarray) -> np.ndarray:
    """The binary person mask of a portrait: selfie segmentation > 0.5, the largest connected
    part, holes filled. Defined once per sprite; the composite uses exactly this."""
    m = _selfie().process(np.ascontiguousarray(image)).segmentation_mask > 0.5
    lab, n = ndimage.label(m)
    if n > 1:
        sizes = ndimage.sum(m, lab, range(1, n + 1))
        m = lab == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(m)


@cache
def _audio_model():  # type: ignore[no-untyped-def]
    from pipelines.motion.audio_model import load_audio_model

    return load_audio_model()[0]


def mouth_params(lip_audio: np.ndarray, n_frames: int, fps: int) -> np.ndarray:
    """(T, 5) mouth parameters at each frame's middle, from the audio-to-motion model."""
    from pipelines.motion.audio_model import infer

    pad = np.concatenate([lip_audio, np.zeros(SAMPLE_RATE // 2, np.float32)])
    times, p = infer(_audio_model(), pad, 80)
    t = (np.arange(n_frames) + 0.5) / fps
    return np.stack([np.interp(t, times, p[:, i]) for i in range(p.shape[1])], 1).astype(np.float32)


def render_talker(portrait: str, size: int, lip_audio: np.ndarray, n_frames: int, fps: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames (T, S, S, 3), the person alpha (S, S) and the face box of a talker whose lips
    follow `lip_audio`; blinks at random, head still (motion is added when compositing)."""
    import torch

    from pipelines.motion.params import IDX, MOUTH, N_PARAMS
    from pipelines.render import face_mesh as fm
    from pipelines.render.avatar import frame_portrait
    from pipelines.render.renderer import WarpRenderer

    img, lm = _portrait(portrait)
    av_ = frame_portrait(portrait, img, lm, size)
    params = np.zeros((n_frames, N_PARAMS), np.float32)
    params[:, MOUTH] = mouth_params(lip_audio, n_frames, fps)
    t = 0
    while True:  # blinks every 2-5 s, 5 frames each
        t += int(rng.uniform(2, 5) * fps)
        if t + 5 >= n_frames:
            break
        for k, v in enumerate((0.4, 1.0, 1.0, 0.6, 0.2)):
            params[t + k, IDX["blink_r"]] = params[t + k, IDX["blink_l"]] = v
    r = WarpRenderer(av_)
    out = np.empty((n_frames, size, size, 3), np.uint8)
    with torch.inference_mode():
        for i in range(0, n_frames, 64):
            out[i:i + 64] = r(torch.from_numpy(params[i:i + 64])).numpy()
    oval = av_.landmarks[list(fm.FACE_OVAL)]
    box = np.array([*oval.min(0), *oval.max(0)], np.float32)
    return out, person_alpha(av_.image), box


def _degrade(frames: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Blur / compression on a talker's colours only (its alpha stays exact)."""
    if kind.startswith("blur"):
        s = float(kind[4:])
        return np.stack([ndimage.gaussian_filter(f, (s, s, 0)) for f in frames])
    if kind.startswith("jpeg"):
        q = int(kind[4:])
        out = np.empty_like(frames)
        for i, f in enumerate(frames):
            b = io.BytesIO()
            Image.fromarray(f).save(b, "JPEG", quality=q)
            out[i] = np.asarray(Image.open(b))
        return out
    if kind.startswith("h264"):
        return _h264_round_trip(frames, int(kind[4:]))
    return frames


def _h264_round_trip(frames: np.ndarray, crf: int) -> np.ndarray:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, FPS)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        out = [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]
    return np.stack(out[:len(frames)])


# --- sound --------------------------------------------------------------------------------------

@cache
def _synth(voice: str, sentence: str, seed: int) -> np.ndarray:
    """A sentence at 16 kHz, leading and trailing silence trimmed, RMS-normalised."""
    from pipelines.speech.tts import SpeechSynthesizer

    pitch = 1.0
    if voice.endswith("@low"):
        voice, pitch = voice[:-4], 0.9
    u = SpeechSynthesizer(voice, pitch=pitch, seed=seed).synthesize(sentence)
    x = np.asarray(u.audio, np.float64)
    if u.sample_rate != SAMPLE_RATE:
        g = np.gcd(SAMPLE_RATE, u.sample_rate)
        x = resample_poly(x, SAMPLE_RATE // g, u.sample_rate // g)
    env = ndimage.uniform_filter1d(np.abs(x), 160)
    on = np.flatnonzero(env > 0.02 * env.max())
    x = x[on[0]:on[-1] + 1] if len(on) else x
    x = x / max(float(np.sqrt(np.mean(x ** 2))), 1e-9) * 0.08
    return np.clip(x, -1, 1).astype(np.float32)


def _fit(x: np.ndarray, max_s: float) -> np.ndarray:
    n = int(max_s * SAMPLE_RATE)
    if len(x) <= n:
        return x
    y = x[:n].copy()
    fade = min(800, n)
    y[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
    return y


def coloured_noise(n: int, rng: np.random.Generator, colour: str) -> np.ndarray:
    """White, pink (1/f) or brown (1/f^2) noise, unit RMS."""
    w = rng.standard_normal(n)
    if colour != "white":
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        f[0] = f[1]
        spec = np.fft.rfft(w) / (np.sqrt(f) if colour == "pink" else f)
        spec[f < 30] *= 0.1
        w = np.fft.irfft(spec, n)
    return (w / max(float(np.sqrt(np.mean(w ** 2))), 1e-12)).astype(np.float32)


def add_noise(x: np.ndarray, active: np.ndarray, snr_db: float, rng: np.random.Generator,
              colour: str = "pink") -> np.ndarray:
    """x plus noise at `snr_db` against x's power over its `active` samples."""
    p = float(np.mean(x[active] ** 2)) if active.any() else float(np.mean(x ** 2))
    noise = coloured_noise(len(x), rng, colour) * np.sqrt(p / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


# --- drawing ------------------------------------------------------------------------------------

def _background(h: int, w: int, rng: np.random.Generator, flat: tuple[int, int, int] | None) -> np.ndarray:
    if flat is not None:
        return np.broadcast_to(np.array(flat, np.uint8), (h, w, 3)).copy()
    base = rng.uniform(60, 200, 3)
    low = rng.standard_normal((6, 8, 3))
    field_ = np.stack([np.asarray(Image.fromarray(low[..., c].astype(np.float32)).resize((w, h), Image.Resampling.BICUBIC))
                       for c in range(3)], -1)
    img = base + 25 * field_ + 6 * rng.standard_normal((h, w, 3))
    for _ in range(int(rng.integers(2, 5))):  # furniture: a few flat rectangles
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        img[y0:y0 + int(rng.integers(30, h // 2)), x0:x0 + int(rng.integers(30, w // 3))] = rng.uniform(30, 230, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def _paste(canvas: np.ndarray, owner: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x: int, y: int,
           k: int) -> None:
    """Write rgb where alpha into canvas at top-left (x, y), clipped; mark those pixels k."""
    h, w = canvas.shape[:2]
    sh, sw = alpha.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + sw, w), min(y + sh, h)
    if x0 >= x1 or y0 >= y1:
        return
    a = alpha[y0 - y:y1 - y, x0 - x:x1 - x]
    canvas[y0:y1, x0:x1][a] = rgb[y0 - y:y1 - y, x0 - x:x1 - x][a]
    owner[y0:y1, x0:x1][a] = k


def _transform(rgb: np.ndarray, alpha: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    if abs(s - 1) < 1e-3:
        return rgb, alpha
    n = max(2, round(rgb.shape[0] * s))
    r = np.asarray(Image.fromarray(rgb).resize((n, n), Image.Resampling.BILINEAR))
    a = np.asarray(Image.fromarray(alpha).resize((n, n), Image.Resampling.NEAREST))
    return r, a


def _loudspeaker(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A drawn loudspeaker: a dark cabinet with two cones (RGB, alpha)."""
    w, h = size, int(size * 1.6)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.zeros((h, w, 3), np.float32)
    rgb[:] = (70, 45, 30)
    for cy, r in ((0.3 * h, 0.3 * w), (0.7 * h, 0.4 * w)):
        d = np.hypot(yy - cy, xx - w / 2) / r
        rgb[d < 1] = (35, 35, 40)
        rgb[d < 0.6] = (90, 90, 95)
        rgb[d < 0.2] = (20, 20, 20)
    alpha = np.ones((h, w), bool)
    alpha[:4, :4] = alpha[:4, -4:] = alpha[-4:, :4] = alpha[-4:, -4:] = False  # rounded-ish corners
    return rgb.astype(np.uint8), alpha


def _drum(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A drum seen from the front: a red shell, a light head on top (RGB, alpha)."""
    w, h = size, int(size * 0.9)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.zeros((h, w, 3), np.float32)
    top = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - 0.18 * h) / (0.18 * h)) ** 2 < 1
    bottom = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - 0.82 * h) / (0.18 * h)) ** 2 < 1
    shell = (yy >= 0.18 * h) & (yy <= 0.82 * h)
    alpha = top | bottom | shell
    rgb[alpha] = (180, 30, 40)
    rgb[(shell & ((yy - 0.5 * h) % (0.16 * h) < 3))] = (230, 200, 60)  # hoops / lacing
    rgb[top] = (235, 228, 210)
    return rgb.astype(np.uint8), alpha


# --- the scenes ---------------------------------------------------------------------------------

def _frame_label(intervals: list[tuple[float, float]], n_frames: int, fps: int) -> np.ndarray:
    t = (np.arange(n_frames) + 0.5) / fps
    out = np.zeros(n_frames, bool)
    for a, b in intervals:
        out |= (t >= a) & (t < b)
    return out


def _place(track: np.ndarray, x: np.ndarray, at: float) -> tuple[float, float]:
    i = int(at * SAMPLE_RATE)
    n = min(len(x), len(track) - i)
    track[i:i + n] += x[:n]
    return i / SAMPLE_RATE, (i + n) / SAMPLE_RATE


def _layout(n: int, w: int, h: int, rng: np.random.Generator, size_scale: float) -> list[tuple[int, float, float]]:
    """Per talker: render size S, the sprite's centre x, its top y."""
    slot = w / n
    hi = {1: 480, 2: 470, 3: 380, 4: 300}[n] * size_scale
    lo = 200 * size_scale
    out = []
    for k in range(n):
        s = int(rng.uniform(lo, hi)) // 2 * 2
        cx = slot * (k + 0.5) + rng.uniform(-0.12, 0.12) * slot
        top = h - s * rng.uniform(0.75, 0.95)  # the bust runs off the bottom of the frame
        out.append((s, cx, top))
    return out


def make_scene(kind: str, seed: int, *, duration: float | None = None, size: tuple[int, int] = (WIDTH, HEIGHT),
               flat_background: tuple[int, int, int] | None = None, degrade: bool = True,
               n_talkers: int | None = None) -> Scene:
    """Generate one scene (no cache; see `load_scene`). Deterministic in (kind, seed, options)."""
    if kind not in KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; kinds: {', '.join(KINDS)}")
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rng = np.random.default_rng([seed, KINDS.index(kind), GENERATOR_VERSION])
    w, h = size
    size_scale = w / WIDTH
    if duration is None:
        duration = float(rng.uniform(8, 10)) if kind == "talkers" else float(rng.uniform(6, 7))
    fps = FPS
    T = int(round(duration * fps))
    n_samples = T * SAMPLE_RATE // fps
    info: dict[str, object] = {"duration_s": T / fps}

    if n_talkers is None:
        n_talkers = {"talkers": int(rng.integers(2, 5)), "silence": int(rng.integers(1, 4)),
                     "noise": int(rng.integers(1, 3)), "offscreen": int(rng.integers(1, 4)),
                     "static_object": int(rng.integers(0, 2)), "moving_object": int(rng.integers(0, 2))}[kind]
    sentences = list(rng.permutation(len(SENTENCES)))
    voice_of = [VOICES[(k + seed) % len(VOICES)] for k in range(max(n_talkers, 1) + 1)]

    def next_sentence() -> str:
        if not sentences:
            sentences.extend(rng.permutation(len(SENTENCES)))
        return SENTENCES[int(sentences.pop())]

    soundtrack = np.zeros(n_samples, np.float32)
    lip_tracks = [np.zeros(n_samples, np.float32) for _ in range(n_talkers)]
    own_turns: list[list[tuple[float, float]]] = [[] for _ in range(n_talkers)]
    fake_turns: list[list[tuple[float, float]]] = [[] for _ in range(n_talkers)]
    speaker = np.full(T, -1, np.int64)
    sounding_obj = np.zeros(T, bool)
    active = np.zeros(n_samples, bool)
    turns: list[dict[str, object]] = []

    if kind == "talkers":
        t, prev = 0.3, -1
        while t < duration - 1.2:
            if prev != -2 and turns and rng.random() < 0.2:  # a turn of silence
                gap = float(rng.uniform(1.0, 2.0))
                turns.append({"talker": None, "start": t, "end": t + gap})
                t, prev = t + gap, -2
                continue
            k = int(rng.choice([i for i in range(n_talkers) if i != prev or n_talkers == 1]))
            x = _fit(_synth(voice_of[k], next_sentence(), seed), min(4.0, duration - 0.2 - t))
            a, b = _place(soundtrack, x, t)
            _place(lip_tracks[k], x, t)
            active[int(a * SAMPLE_RATE):int(b * SAMPLE_RATE)] = True
            own_turns[k].append((a, b))
            turns.append({"talker": k, "start": a, "end": b})
            t, prev = b + float(rng.uniform(0.15, 0.4)), k
        for k in range(n_talkers):
            speaker[_frame_label(own_turns[k], T, fps)] = k
        # the distractor: mouths other sentences (not in the soundtrack) while it is not speaking
        d = int(rng.integers(n_talkers))
        t = float(rng.uniform(0.2, 1.0))
        while t < duration - 1.0:
            busy = any(a - 0.2 < t < b + 0.2 for a, b in own_turns[d])
            if busy:
                t += 0.25
                continue
            x = _fit(_synth(voice_of[-1], next_sentence(), seed + 1), 2.5)
            nxt = min([a for a, _ in own_turns[d] if a > t] + [duration])
            x = x[: max(0, int((nxt - 0.2 - t) * SAMPLE_RATE))]
            if len(x) > 0.5 * SAMPLE_RATE:
                fake_turns[d].append(_place(lip_tracks[d], x, t))
            t += len(x) / SAMPLE_RATE + float(rng.uniform(0.3, 1.0))
        info["distractor"] = d
        snr = SNRS_DB[seed % len(SNRS_DB)]
        info["snr_db"] = snr
        if snr is not None:
            soundtrack = add_noise(soundtrack, active, snr, rng, ("pink", "white", "brown")[seed % 3])
    elif kind == "silence":
        soundtrack = (1e-4 * rng.standard_normal(n_samples)).astype(np.float32)
    elif kind == "noise":
        colour = ("pink", "white", "brown")[seed % 3]
        soundtrack = 0.05 * coloured_noise(n_samples, rng, colour)
        info["noise"] = colour
    elif kind == "offscreen":
        t = 0.3
        while t < duration - 1.0:
            x = _fit(_synth(voice_of[-1], next_sentence(), seed + 2), duration - 0.2 - t)
            a, b = _place(soundtrack, x, t)
            turns.append({"talker": "offscreen", "start": a, "end": b})
            t = b + float(rng.uniform(0.2, 0.8))
        if n_talkers and rng.random() < 0.7:  # one on-screen talker mouths other speech
            d = int(rng.integers(n_talkers))
            t = 0.5
            while t < duration - 1.0:
                x = _fit(_synth(voice_of[d], next_sentence(), seed + 3), min(3.0, duration - 0.2 - t))
                fake_turns[d].append(_place(lip_tracks[d], x, t))
                t += len(x) / SAMPLE_RATE + float(rng.uniform(0.3, 0.9))
            info["distractor"] = d
    elif kind == "static_object":
        # notes from a loudspeaker: sine chords with soft envelopes, a few short pauses
        t_ = np.arange(n_samples) / SAMPLE_RATE
        env = np.zeros(n_samples)
        x = np.zeros(n_samples)
        t = 0.2
        while t < duration - 0.3:
            dur = float(rng.uniform(0.3, 0.9))
            f0 = 220 * 2 ** (int(rng.integers(0, 12)) / 12)
            i0, i1 = int(t * SAMPLE_RATE), min(int((t + dur) * SAMPLE_RATE), n_samples)
            e = np.sin(np.linspace(0, np.pi, i1 - i0)) ** 0.5
            env[i0:i1] = np.maximum(env[i0:i1], e)
            x[i0:i1] += e * (np.sin(2 * np.pi * f0 * t_[i0:i1]) + 0.5 * np.sin(2 * np.pi * 1.5 * f0 * t_[i0:i1]))
            t += dur + (float(rng.uniform(0.4, 1.0)) if rng.random() < 0.25 else 0.02)
        soundtrack = (0.06 * x).astype(np.float32)
        frame_env = env[: T * (SAMPLE_RATE // fps)].reshape(T, -1).max(1)
        sounding_obj = frame_env > 0.1
    elif kind == "moving_object":
        # drum hits: a decaying low tone plus a noise burst; the drum jumps with the envelope
        env = np.zeros(n_samples)
        x = np.zeros(n_samples)
        t = 0.4
        while t < duration - 0.3:
            i0 = int(t * SAMPLE_RATE)
            n = min(int(0.5 * SAMPLE_RATE), n_samples - i0)
            tt = np.arange(n) / SAMPLE_RATE
            e = np.exp(-tt / 0.12)
            f0 = float(rng.uniform(70, 140))
            x[i0:i0 + n] += e * (np.sin(2 * np.pi * f0 * tt) + 0.4 * rng.standard_normal(n) * np.exp(-tt / 0.03))
            env[i0:i0 + n] = np.maximum(env[i0:i0 + n], e)
            t += float(rng.uniform(0.35, 0.9))
        soundtrack = (0.15 * x).astype(np.float32)
        frame_env = env[: T * (SAMPLE_RATE // fps)].reshape(T, -1).mean(1)
        sounding_obj = frame_env > 0.05
        info["drum_envelope"] = frame_env.astype(np.float32)

    # --- talkers: render, degrade, lay out ---
    layout = _layout(max(n_talkers, 1) + (1 if kind in ("static_object", "moving_object") else 0), w, h, rng, size_scale)
    obj_slot = int(rng.integers(len(layout))) if kind in ("static_object", "moving_object") else -1
    talker_slots = [i for i in range(len(layout)) if i != obj_slot][:n_talkers]
    talkers: list[_Talker] = []
    portraits = list(rng.permutation(len(PORTRAITS)))
    degrades = ["none", "blur0.8", "jpeg30", "h264_32", "blur1.6", "jpeg18"]
    for k in range(n_talkers):
        s, cx, top = layout[talker_slots[k]]
        portrait = PORTRAITS[portraits[k % len(portraits)]]
        frames_k, alpha, box = render_talker(portrait, s, lip_tracks[k], T, fps, rng)
        deg = degrades[(seed + k) % len(degrades)] if degrade else "none"
        frames_k = _degrade(frames_k, deg.replace("_", ""), rng)
        lm = _frame_label(own_turns[k] + fake_turns[k], T, fps)
        # head motion in compositing: slow sway (2-8 px), nods, breathing scale (+-2.5 %)
        tt = np.arange(T) / fps
        ph = rng.uniform(0, 2 * np.pi, 3)
        amp = rng.uniform(2, 8) * size_scale
        sx = amp * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * tt + ph[0])
        sy = 0.5 * amp * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * tt + ph[1])
        sc = 1 + 0.025 * np.sin(2 * np.pi * rng.uniform(0.15, 0.3) * tt + ph[2])
        talkers.append(_Talker(frames_k, alpha, box, lip_tracks[k], lm, cx - s / 2 + sx, top + sy, sc,
                               {"portrait": portrait, "render_size": s, "face_width_px": float(box[2] - box[0]),
                                "voice": voice_of[k], "degrade": deg}))

    # --- composite ---
    bg = _background(h, w, rng, flat_background)
    frames = np.empty((T, h, w, 3), np.uint8)
    masks = np.zeros((T, h, w), bool)
    boxes = np.zeros((T, n_talkers, 4), np.float32)
    lip_moving = np.zeros((T, n_talkers), bool)
    owner = np.empty((h, w), np.int16)
    disc = flat_background is None and kind != "silence"  # background motion: a drifting disc
    disc_r = int(rng.uniform(25, 45) * size_scale)
    disc_c = rng.uniform(60, 220, 3)
    disc_p = rng.uniform([disc_r, disc_r], [w - disc_r, h / 2])
    disc_v = rng.uniform(-60, 60, 2) * size_scale
    obj_rgb = obj_alpha = None
    if obj_slot >= 0:
        s, cx, _top = layout[obj_slot]
        make = _loudspeaker if kind == "static_object" else _drum
        obj_rgb, obj_alpha = make(int(rng.uniform(0.25, 0.4) * s + 40 * size_scale))
        obj_x = int(cx - obj_alpha.shape[1] / 2)
        obj_y = int(rng.uniform(0.25, 0.55) * h)
        info["object"] = "loudspeaker" if kind == "static_object" else "drum"
    yy, xx = np.mgrid[0:h, 0:w]
    for j in range(T):
        f = bg.copy()
        owner.fill(-1)
        if disc:
            p = disc_p + disc_v * j / fps
            p = np.abs((p - disc_r) % (2 * (np.array([w, h / 2]) - 2 * disc_r))
                       - (np.array([w, h / 2]) - 2 * disc_r)) + disc_r  # bounce inside the upper half
            f[(xx - p[0]) ** 2 + (yy - p[1]) ** 2 < disc_r ** 2] = disc_c.astype(np.uint8)
        for k, tk in enumerate(talkers):
            rgb, a = _transform(tk.image_frames[j], tk.alpha, float(tk.scale[j]))
            s0 = tk.alpha.shape[0]
            x0 = int(round(tk.x[j] + (s0 - a.shape[0]) / 2))
            y0 = int(round(tk.y[j] + (s0 - a.shape[0]) / 2))
            _paste(f, owner, rgb, a, x0, y0, k)
            bx = tk.face_box * (a.shape[0] / s0)
            boxes[j, k] = (bx[0] + x0, bx[1] + y0, bx[2] + x0, bx[3] + y0)
            lip_moving[j, k] = tk.lip_moving[j]
        if obj_rgb is not None and obj_alpha is not None:
            dy = 0
            if kind == "moving_object":
                dy = -int(round(0.35 * obj_alpha.shape[0] * float(info["drum_envelope"][j])))  # type: ignore[index]
            _paste(f, owner, obj_rgb, obj_alpha, obj_x, obj_y + dy, 100)
        frames[j] = f
        if speaker[j] >= 0:
            masks[j] = owner == speaker[j]
        elif sounding_obj[j]:
            masks[j] = owner == 100
    info["talkers"] = [tk.desc for tk in talkers]
    info["turns"] = turns
    info.pop("drum_envelope", None)
    return Scene(frames, soundtrack.astype(np.float32), fps, speaker, masks, boxes, lip_moving, kind, seed, info)


# --- cache and the test set ---------------------------------------------------------------------

def cache_dir() -> Path:
    root = os.environ.get("AVATAR_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "avatar-engine")
    return Path(root) / "perception-scenes" / f"v{GENERATOR_VERSION}"


def _write_frames(path: Path, frames: np.ndarray) -> None:
    import av

    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("ffv1", rate=FPS)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="bgr0")
            vf.pts, vf.time_base = i, Fraction(1, FPS)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def _read_frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)])


def save_scene(scene: Scene, folder: Path) -> None:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".partial-frames.mkv"
    _write_frames(tmp, scene.frames)
    np.savez_compressed(folder / ".partial-gt.npz", audio=scene.audio, speaker=scene.speaker,
                        masks=np.packbits(scene.masks, axis=-1), width=scene.masks.shape[2],
                        talker_boxes=scene.talker_boxes, lip_moving=scene.lip_moving, fps=scene.fps)
    (folder / "info.json").write_text(json.dumps({"kind": scene.kind, "seed": scene.seed, **scene.info}, default=str))
    os.replace(folder / ".partial-gt.npz", folder / "gt.npz")
    os.replace(tmp, folder / "frames.mkv")  # last: its presence means the entry is complete


def read_scene(folder: Path) -> Scene:
    import json

    info = json.loads((folder / "info.json").read_text())
    kind, seed = info.pop("kind"), info.pop("seed")
    with np.load(folder / "gt.npz") as z:
        masks = np.unpackbits(z["masks"], axis=-1, count=int(z["width"])).astype(bool)
        return Scene(_read_frames(folder / "frames.mkv"), z["audio"], int(z["fps"]), z["speaker"], masks,
                     z["talker_boxes"], z["lip_moving"], kind, seed, info)


def load_scene(kind: str, seed: int, *, cache: bool = True, **options: object) -> Scene:
    """`make_scene` through the on-disk cache (keyed by generator version, kind, seed, options)."""
    if not cache:
        return make_scene(kind, seed, **options)  # type: ignore[arg-type]
    key = f"{kind}-{seed}" + "".join(f"-{k}={options[k]}" for k in sorted(options)).replace(" ", "").replace("/", "_")
    folder = cache_dir() / key
    if (folder / "frames.mkv").exists():
        return read_scene(folder)
    scene = make_scene(kind, seed, **options)  # type: ignore[arg-type]
    save_scene(scene, folder)
    return scene


def test_set(seeds: tuple[int, ...] | list[int] | None = None, *, progress: bool = True,
             cache: bool = True) -> Iterator[Scene]:
    """The fixed test scenes, one at a time (memory stays at one scene), every kind covered."""
    from tqdm import tqdm

    chosen = [(k, s) for k, s in TEST_SCENES if seeds is None or s in seeds]
    unknown = set(seeds or ()) - {s for _, s in TEST_SCENES}
    if unknown:
        raise ValueError(f"not test-set seeds: {sorted(unknown)}; the test set is {list(TEST_SEEDS)}")
    for kind, seed in tqdm(chosen, desc="scenes", unit="scene", disable=not progress, file=sys.stderr):
        yield load_scene(kind, seed, cache=cache)


test_set.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


# --- looking at them ----------------------------------------------------------------------------

def contact_sheet(scenes: list[Scene], path: str | os.PathLike[str], per_scene: int = 4, width: int = 240) -> str:
    """A PNG: per scene a row of frames with the ground-truth mask tinted red and the talkers'
    face boxes (green: lips moving, grey: still; the speaker's box thick)."""
    from PIL import ImageDraw

    rows = []
    for sc in scenes:
        idx = np.linspace(0, sc.n_frames - 1, per_scene + 2)[1:-1].astype(int)
        cells = []
        for j in idx:
            f = sc.frames[j].astype(np.float32)
            m = sc.masks[j]
            f[m] = 0.45 * f[m] + 0.55 * np.array([255, 0, 0])
            im = Image.fromarray(f.astype(np.uint8))
            d = ImageDraw.Draw(im)
            for k in range(sc.n_talkers):
                col = (0, 255, 0) if sc.lip_moving[j, k] else (160, 160, 160)
                d.rectangle([float(v) for v in sc.talker_boxes[j, k]], outline=col, width=5 if sc.speaker[j] == k else 1)
            d.text((4, 4), f"{sc.kind} {sc.seed} t={j / sc.fps:.1f}s spk={sc.speaker[j]}", fill=(255, 255, 0))
            sc_h = round(im.height * width / im.width)
            cells.append(im.resize((width, sc_h)))
        row = Image.new("RGB", (width * per_scene, cells[0].height))
        for i, c in enumerate(cells):
            row.paste(c, (i * width, 0))
        rows.append(row)
    sheet = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    sheet.save(path)
    return os.fspath(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.evaluation.perception_scenes", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="*", help=f"test-set seeds (default all: {list(TEST_SEEDS)})")
    ap.add_argument("--sheet", help="write a contact sheet PNG here")
    ap.add_argument("--mp4", help="write each scene as MP4 into this folder")
    args = ap.parse_args(argv)
    kept = []
    for sc in test_set(args.seeds):
        print(f"{sc.kind:<14} seed {sc.seed}: {sc.n_frames} frames, {sc.n_talkers} talkers, "
              f"speaker frames {int((sc.speaker >= 0).sum())}, mask frames {int(sc.masks.any((1, 2)).sum())}, "
              f"distractor frames {int((sc.lip_moving & (sc.speaker[:, None] != np.arange(sc.n_talkers))).any(1).sum())}",
              flush=True)
        if args.mp4:
            os.makedirs(args.mp4, exist_ok=True)
            sc.to_mp4(os.path.join(args.mp4, f"{sc.kind}-{sc.seed}.mp4"))
        if args.sheet:
            sc.frames = sc.frames[np.linspace(0, sc.n_frames - 1, 6).astype(int)]  # keep only what the sheet shows
            idx = np.linspace(0, len(sc.speaker) - 1, 6).astype(int)
            sc.masks, sc.speaker = sc.masks[idx], sc.speaker[idx]
            sc.talker_boxes, sc.lip_moving = sc.talker_boxes[idx], sc.lip_moving[idx]
            kept.append(sc)
    if args.sheet and kept:
        print("wrote", contact_sheet(kept, args.sheet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
