"""What the photograph looks like around the mouth: the statistics anything we draw there
has to match so that it reads as part of the same picture.

A synthetic mouth interior gives itself away by being cleaner than the photo around it:
sharper edges, no grain, a white that ignores the light on the face. So, once per avatar,
we measure the portrait itself: its point-spread (how soft its edges are), its grain (noise
in smooth skin), the light and colour cast on the skin around the mouth, and the colour of
its lips. Everything is measured from pixels of the reference, nothing is assumed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from . import face_mesh as fm

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class PhotoLook:
    blur_sigma: float  # px, the Gaussian point-spread that explains the photo's edges
    noise_sigma: float  # grain: std of the high-pass residual in smooth skin, in [0, 1] units
    skin: np.ndarray  # (3,) mean skin colour around the mouth, [0, 1]
    lip: np.ndarray  # (3,) mean lip colour

    @property
    def skin_luma(self) -> float:
        return float(self.skin @ LUMA)

    def light_gain(self, cap: float) -> float:
        """How lit the skin around the mouth is against typical lit skin (luma 0.62), for
        what we draw there; clipped to [0.35, cap]."""
        return float(np.clip(self.skin_luma / 0.62, 0.35, cap))


def polygon_mask(shape: tuple[int, int], poly: np.ndarray) -> np.ndarray:
    m = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(m).polygon([tuple(map(float, p)) for p in poly], fill=1)
    return np.asarray(m, dtype=bool)


def _gradients(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gy, gx = np.gradient(luma)
    lap = (np.roll(luma, 1, 0) + np.roll(luma, -1, 0) + np.roll(luma, 1, 1) + np.roll(luma, -1, 1) - 4 * luma)
    return np.hypot(gx, gy), lap


def blur_sigma(luma: np.ndarray, mask: np.ndarray) -> float:
    """Point-spread of the photo, from its strongest edges inside `mask`.

    Across a step edge blurred by a Gaussian of width s, the gradient profile is that
    Gaussian: its peak is step / (s sqrt(2 pi)) and its integral the step. We take the
    strongest edges (top 2 % of gradient magnitude) and, for each, compare the peak gradient
    with the luma step across it (measured 4 s further out, iterated). Robust to texture,
    which has small steps relative to its gradients."""
    mag, _ = _gradients(luma)
    ys, xs = np.nonzero(mask & (mag >= np.quantile(mag[mask], 0.98)))
    if len(ys) < 10:
        return 1.0
    gy, gx = np.gradient(luma)
    nx, ny = gx[ys, xs] / np.maximum(mag[ys, xs], 1e-6), gy[ys, xs] / np.maximum(mag[ys, xs], 1e-6)
    h, w = luma.shape
    s = 1.2
    for _ in range(3):  # the step is measured at +-2.5 s, which depends on s
        r = 2.5 * s
        def at(k: float) -> np.ndarray:
            yy = np.clip(np.round(ys + k * ny).astype(int), 0, h - 1)
            xx = np.clip(np.round(xs + k * nx).astype(int), 0, w - 1)
            return luma[yy, xx]
        step = np.abs(at(r) - at(-r))
        ok = step > 1e-3
        est = np.median(step[ok] / (mag[ys, xs][ok] * np.sqrt(2 * np.pi))) if ok.any() else 1.0
        s = float(np.clip(est, 0.5, 4.0))
    return s


def analyse(image: np.ndarray, lm: np.ndarray) -> PhotoLook:
    img = image.astype(np.float32) / 255.0
    luma = img @ LUMA
    shape = luma.shape
    outer = np.vstack([lm[list(fm.LIPS_UPPER_OUTER)], lm[list(fm.LIPS_LOWER_OUTER)][::-1]])
    inner = np.vstack([lm[list(fm.LIPS_UPPER_INNER)], lm[list(fm.LIPS_LOWER_INNER)][::-1]])
    lips = polygon_mask(shape, outer) & ~polygon_mask(shape, inner)
    face = polygon_mask(shape, lm[list(fm.FACE_OVAL)])
    W = float(np.linalg.norm(lm[291] - lm[61]))
    centre = 0.5 * (lm[61] + lm[291])
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    near = np.hypot(xx - centre[0], yy - centre[1]) < 0.9 * W
    around = face & near & ~polygon_mask(shape, outer)
    skin = img[around].mean(0) if around.sum() > 20 else img[face].mean(0)
    lip = img[lips].mean(0) if lips.sum() > 10 else np.array([0.7, 0.4, 0.4], np.float32)
    # grain: the median absolute Laplacian in the smoothest half of the skin near the mouth
    mag, lap = _gradients(luma)
    smooth = around & (mag <= np.quantile(mag[around], 0.5)) if around.sum() > 20 else face
    noise = float(1.4826 * np.median(np.abs(lap[smooth])) / np.sqrt(20.0))  # Laplacian gain: sqrt(20)
    return PhotoLook(blur_sigma=blur_sigma(luma, face), noise_sigma=float(np.clip(noise, 0.0, 0.05)),
                     skin=skin.astype(np.float32), lip=lip.astype(np.float32))
