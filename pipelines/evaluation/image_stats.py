"""Image statistics for judging rendered frames against the reference portrait.

Everything works on RGB uint8 frames and boolean masks of the same height and width.
Luma is BT.601 on 0..255; energies are in luma levels squared, gradients in luma levels
per pixel. Regions come from landmarks (see face_reading) so no renderer internals are used.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.draw import polygon2mask
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipelines.render import face_mesh as fm

from . import face_reading as fr

HF_SIGMA = 1.5  # px: the high-pass keeps detail finer than ~3 px (lip lines, pores, aliasing)
CLIP_LEVEL = 254  # a channel at or above this is clipped (254 allows for rounding of 255)
# The head as a band around the face oval: hair above, ears at the sides, the neck below.
# Measured on the default portrait (short hair reaching ~1 face height above the brows):
# centre raised by a quarter face height, semi-axes 0.8 face widths x 0.75 face heights
# enclose the hair; the band adds a quarter on top of that.
HEAD_RAISE = 0.25
HEAD_AXES = (0.80, 0.75)
HEAD_BAND = 1.25


def luma(img: np.ndarray) -> np.ndarray:
    return np.asarray(img[..., :3], dtype=np.float64) @ np.array([0.299, 0.587, 0.114])


def polygon_mask(shape: tuple[int, ...], poly: np.ndarray) -> np.ndarray:
    """Pixels inside a polygon given as (K, 2) x, y points."""
    pts = np.asarray(poly, dtype=np.float64)
    return polygon2mask(shape[:2], pts[:, ::-1])


def dilate(mask: np.ndarray, px: float) -> np.ndarray:
    """Grow a mask by `px` pixels (a disc), e.g. to take in the edge pixels of a contour."""
    r = int(round(px))
    if r <= 0:
        return mask
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return ndimage.binary_dilation(mask, structure=(xx * xx + yy * yy) <= r * r)


def lip_ring_mask(shape: tuple[int, ...], lm: np.ndarray) -> np.ndarray:
    """The lips themselves: inside the outer lip contour, outside the inner one."""
    return polygon_mask(shape, fr.outer_lip_polygon(lm)) & ~polygon_mask(shape, fr.inner_lip_polygon(lm))


def mouth_mask(shape: tuple[int, ...], lm: np.ndarray, grow: float = 0.0) -> np.ndarray:
    """Lips and whatever shows between them: inside the outer lip contour, grown by `grow` IODs."""
    return dilate(polygon_mask(shape, fr.outer_lip_polygon(lm)), grow * fr.iod(lm))


def teeth_mask(shape: tuple[int, ...], lm: np.ndarray, grow: float = 0.02) -> np.ndarray:
    """Where teeth can show: inside the inner-lip contour the mesh reads on the frame, grown a
    little (2 % IOD, ~2 px) for the mesh's error on the contour. Read from the frame, not taken
    from the renderer, so a tooth drawn where the lips are not apart would not be excused."""
    return dilate(polygon_mask(shape, fr.inner_lip_polygon(lm)), grow * fr.iod(lm))


def face_mask(shape: tuple[int, ...], lm: np.ndarray) -> np.ndarray:
    return polygon_mask(shape, fr.face_oval_polygon(lm))


def head_band_mask(shape: tuple[int, ...], lm: np.ndarray, band: float = HEAD_BAND) -> np.ndarray:
    """The head with hair, and a band around it: an ellipse on the face's own axes."""
    lm = np.asarray(lm, dtype=np.float64)
    u, v = fr.face_axes(lm)
    oval = lm[list(fm.FACE_OVAL)]
    ou, ov = oval @ u, oval @ v
    fw, fh = ou.max() - ou.min(), ov.max() - ov.min()
    centre = (0.5 * (ou.max() + ou.min()) * u + 0.5 * (ov.max() + ov.min()) * v) - HEAD_RAISE * fh * v
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    d = np.stack([xx, yy], -1) - centre
    a, b = band * HEAD_AXES[0] * fw, band * HEAD_AXES[1] * fh
    return ((d @ u) / a) ** 2 + ((d @ v) / b) ** 2 <= 1.0


def background_mask(shape: tuple[int, ...], landmarks: Sequence[np.ndarray],
                    within: tuple[int, int, int, int] | None = None, band: float = HEAD_BAND) -> np.ndarray:
    """Background: outside the head band of every given face reading (pass the reference's and
    the frame's, so a head that moved is excluded where it was and where it is), optionally
    only inside a box (x0, y0, x1, y1): pixels a renderer copies unchanged would only dilute
    an error that lives near the head."""
    bg = np.ones(shape[:2], dtype=bool)
    for lm in landmarks:
        bg &= ~head_band_mask(shape, lm, band)
    if within is not None:
        x0, y0, x1, y1 = within
        box = np.zeros_like(bg)
        box[y0:y1, x0:x1] = True
        bg &= box
    return bg


def high_freq_energy(img: np.ndarray, mask: np.ndarray, sigma: float = HF_SIGMA) -> float:
    """Mean squared high-pass of luma (luma minus its Gaussian blur) over the mask.

    Filtered on the whole frame, then averaged inside the mask, so the region's border is not
    a filter border; a mean, not a sum, so regions of different size compare."""
    y = luma(img)
    hp = y - ndimage.gaussian_filter(y, sigma)
    return float(np.mean(hp[mask] ** 2)) if mask.any() else float("nan")


def gradient_magnitude(img: np.ndarray) -> np.ndarray:
    """|grad luma| by central differences, luma levels per pixel."""
    gy, gx = np.gradient(luma(img))
    return np.hypot(gx, gy)


def sharpest_edge(img: np.ndarray, mask: np.ndarray, length: int) -> float:
    """The gradient magnitude exceeded by only `length` pixels of the region: the steepest edge
    that is at least `length` pixels long.

    Not the maximum: one pixel of noise or of a JPEG block sets that. Not a percentile either:
    the 99.5th percentile of a 3000-pixel mouth is a 15-pixel edge, of a 30000-pixel face a
    150-pixel one, so regions of different size would be judged on edges of different length.
    A fixed count of pixels compares like with like."""
    g = gradient_magnitude(img)[mask]
    if g.size == 0:
        return float("nan")
    k = min(max(int(length), 1), g.size)
    return float(np.partition(g, g.size - k)[g.size - k])


def masked_psnr(reference: np.ndarray, img: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB over the mask's pixels (all channels); inf where they are identical."""
    if not mask.any():
        return float("nan")
    a, b = reference[mask], img[mask]
    if np.array_equal(a, b):
        return float("inf")
    return float(peak_signal_noise_ratio(a, b, data_range=255))


def ssim(reference: np.ndarray, img: np.ndarray, box: tuple[int, int, int, int] | None = None) -> float:
    """Mean SSIM (7x7 windows, per channel) over a box (x0, y0, x1, y1), or the whole frame."""
    if box is not None:
        x0, y0, x1, y1 = box
        reference, img = reference[y0:y1, x0:x1], img[y0:y1, x0:x1]
    return float(structural_similarity(reference, img, channel_axis=-1, data_range=255))


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of a mask's pixels."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def clipped_count(img: np.ndarray, mask: np.ndarray, level: int = CLIP_LEVEL) -> int:
    """Pixels of the mask with any channel at or above `level`."""
    return int(np.count_nonzero((np.asarray(img)[..., :3] >= level).any(-1) & mask))
