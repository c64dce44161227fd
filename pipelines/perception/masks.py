"""The sounding object's pixels.

A speaking face: MediaPipe's person segmentation, kept to the person under that face (the
connected region touching its box, and nearer to it than to any other face). A sound made by
something else: patches whose motion energy rises and falls with the sound's energy over the
last second (training-free; a sounding object that does not move is invisible to it).
Silence, stationary noise and speech from off screen give no mask.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .faces import _solutions
from .types import Box
from pipelines.render.landmarks import _native_stderr_silenced

PATCH = 8  # pixels of the analysed frame per motion patch
MOTION_R = 0.7  # a patch sounds when its motion follows the sound's energy this well
MIN_PATCHES = 6  # and it is part of a connected group at least this large
MIN_SOUND_STD_DB = 3.0  # a sound whose level does not move (stationary noise) drives nothing
MIN_MOTION = 1.0  # mean grey-level change per pixel: a patch that does not move is not moving


class PersonSegmenter:
    def __init__(self) -> None:
        _, _, selfie = _solutions()
        with _native_stderr_silenced():
            self._seg = selfie.SelfieSegmentation(model_selection=1)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W) float32 person probability."""
        return self._seg.process(np.ascontiguousarray(rgb[..., :3])).segmentation_mask.astype(np.float32)


def person_of(prob: np.ndarray, face: Box, others: list[Box]) -> np.ndarray:
    """The person probability kept to the one whose face is `face`."""
    h, w = prob.shape
    fx, fy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    fw = max(1.0, face[2] - face[0])
    xs = np.arange(w, dtype=np.float32)
    keep = np.ones(w, bool)
    for o in others:  # nearer (in x) to this face than to any other
        ox = (o[0] + o[2]) / 2
        keep &= np.abs(xs - fx) <= np.abs(xs - ox)
    region = np.zeros((h, w), bool)
    y0 = int(max(0, face[1] - 0.6 * fw))  # hair above the box
    x0, x1 = int(max(0, fx - 2.2 * fw)), int(min(w, fx + 2.2 * fw))  # shoulders at most this wide
    region[y0:, x0:x1] = True
    region &= keep[None, :]
    fg = (prob >= 0.5) & region
    labels, n = ndimage.label(fg)
    if n == 0:
        return np.zeros((h, w), np.float32)
    fx0, fy0, fx1, fy1 = (int(max(0, face[0])), int(max(0, face[1])), int(min(w, face[2])), int(min(h, face[3])))
    touching = np.unique(labels[fy0:fy1, fx0:fx1])
    touching = touching[touching > 0]
    if not len(touching):
        return np.zeros((h, w), np.float32)
    return np.where(np.isin(labels, touching), prob, 0.0).astype(np.float32)


class MotionSoundMap:
    """Per-patch motion energy of the last second, correlated with the sound's energy."""

    def __init__(self) -> None:
        self._prev: np.ndarray | None = None
        self.energy: dict[int, np.ndarray] = {}  # frame index -> (ph, pw) mean |change|

    def push(self, index: int, rgb: np.ndarray) -> np.ndarray:
        """Record a frame's motion; returns its low-resolution grey (also the glance's view)."""
        h, w = rgb.shape[:2]
        if h < PATCH or w < PATCH:  # a tiny frame: one patch, edge-padded
            rgb = np.pad(rgb[..., :3], ((0, max(0, PATCH - h)), (0, max(0, PATCH - w)), (0, 0)), mode="edge")
            h, w = rgb.shape[:2]
        ph, pw = h // PATCH, w // PATCH
        g = rgb[: ph * PATCH, : pw * PATCH, :3].astype(np.float32).mean(axis=2)
        g = g.reshape(ph, PATCH, pw, PATCH).mean(axis=(1, 3))
        if self._prev is not None and self._prev.shape == g.shape:
            self.energy[index] = np.abs(g - self._prev)
        else:
            self.energy[index] = np.zeros_like(g)
        self._prev = g
        for k in [k for k in self.energy if k < index - 60]:
            del self.energy[k]
        return g

    def mask(self, frames: list[int], sound_db: np.ndarray, exclude: list[Box], shape: tuple[int, int]) -> np.ndarray | None:
        """(H, W) float mask of the patches whose motion follows the sound over `frames`, or None."""
        es = [self.energy.get(k) for k in frames]
        if any(e is None for e in es) or len(es) < 10 or float(np.std(sound_db)) < MIN_SOUND_STD_DB:
            return None
        e = np.stack(es)  # (n, ph, pw)
        moving = e.mean(axis=0) >= MIN_MOTION
        a = (sound_db - sound_db.mean()) / (sound_db.std() + 1e-6)
        ez = e - e.mean(axis=0)
        r = (ez * a[:, None, None]).mean(axis=0) / (ez.std(axis=0) + 1e-6)
        hot = (r >= MOTION_R) & moving
        for b in exclude:  # faces are the speaker logic's business
            hot[int(b[1]) // PATCH:int(np.ceil(b[3] / PATCH)) + 1, int(b[0]) // PATCH:int(np.ceil(b[2] / PATCH)) + 1] = False
        labels, n = ndimage.label(ndimage.binary_closing(hot, iterations=1))
        if n == 0:
            return None
        sizes = ndimage.sum(np.ones_like(labels), labels, index=np.arange(1, n + 1))
        big = np.flatnonzero(sizes >= MIN_PATCHES) + 1
        if not len(big):
            return None
        patches = np.isin(labels, big)
        patches = ndimage.binary_fill_holes(patches)
        h, w = shape
        full = np.zeros((h, w), np.float32)
        up = np.kron(patches.astype(np.float32), np.ones((PATCH, PATCH), np.float32))
        full[: up.shape[0], : up.shape[1]] = up[:h, :w]
        return full
