"""The upper teeth as a texture strip attached to the skull, not to the lips.

Teeth do not stretch when the mouth opens or the lips spread: the lips slide over them. So
the upper teeth are a fixed strip, columns along the mouth (1 px each, centred on the mouth)
and rows down the face, starting TOP_ROWS above where the reference's upper lip meets them
(those rows are the part the upper lip normally hides). The renderer samples it at each
pixel of the opening; wherever the lips part, you see the part of the strip that is there.

Where the portrait shows its own teeth, the strip is cut from the photograph (its own
shape, shade, blur and grain). Otherwise it is drawn: incisors, laterals, canines and
premolars at typical widths for the mouth, off-white in the face's own light, shaded
towards the corners and under the upper lip, with faint separations and a translucent
biting edge, then blurred with the photo's point-spread. Channels: RGB + alpha (alpha 0
shows the cavity behind).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

from .appearance import LUMA, PhotoLook, polygon_mask

TOP_ROWS = 6  # rows of tooth above the reference's upper-lip line (revealed when it lifts)
CLEAN_FROM = 0.045  # below the lip line, in mouth widths: where the photo's teeth are clear of the lip's blur and the gum
TEETH_BASE = np.array([0.90, 0.87, 0.80], dtype=np.float32)  # enamel in neutral light
MAX_TEETH = 0.93  # never brighter than this: a clipped white reads as paint
# Visible widths of the upper teeth from the midline outwards, in mouth widths.
TOOTH_WIDTHS = (0.115, 0.09, 0.085, 0.075, 0.07, 0.07)


def _interp_line(u: np.ndarray, pts_u: np.ndarray, pts_v: np.ndarray) -> np.ndarray:
    order = np.argsort(pts_u)
    return np.interp(u, pts_u[order], pts_v[order])


def teeth_light(look: PhotoLook) -> np.ndarray:
    """Enamel colour in this photo's light: the skin's brightness relative to typical lit
    skin, and a third of its colour cast."""
    gain = look.light_gain(1.05)
    cast = look.skin / max(float(look.skin.mean()), 1e-3)
    colour = TEETH_BASE * gain * (0.7 + 0.3 * cast)
    return np.clip(colour, 0.0, MAX_TEETH).astype(np.float32)


def own_teeth_visible(image: np.ndarray, upper: np.ndarray, lower: np.ndarray, mouth_width: float) -> bool:
    """Does the portrait show its upper teeth? Enough bright, unsaturated pixels between the
    lips, over a gap that is more than a line."""
    inner = polygon_mask(image.shape[:2], np.vstack([upper, lower[::-1]]))
    if inner.sum() < 0.01 * mouth_width**2:
        return False
    px = image[inner].astype(np.float32) / 255.0
    luma = px @ LUMA
    sat = (px.max(1) - px.min(1)) / np.maximum(px.max(1), 1e-3)
    return float(((luma > 0.45) & (sat < 0.35)).mean()) > 0.3


def teeth_strip(image: np.ndarray, upper: np.ndarray, lower: np.ndarray, u_axis: np.ndarray,
                v_axis: np.ndarray, mouth_width: float, look: PhotoLook) -> tuple[np.ndarray, float, float]:
    """(4, rows, cols) float32 RGBA strip, its half-width in px and the row 0's offset in px.

    upper / lower: the reference's inner-lip contours (image px), corner to corner. The strip
    is laid out in the mouth's own frame: column c is c - half px along u from the mouth's
    centre (the inner corners' midpoint), row r is r + v0 px along v from it."""
    W = mouth_width
    centre = 0.5 * (upper[0] + upper[-1])
    uu, uv = (upper - centre) @ u_axis, (upper - centre) @ v_axis
    lu, lv = (lower - centre) @ u_axis, (lower - centre) @ v_axis
    half = float(np.ceil(0.5 * abs(uu[-1] - uu[0]) + 2))
    height = float(np.ceil(0.16 * W))
    cols = np.arange(-half, half + 1)
    top = _interp_line(cols, uu, uv)
    v0 = float(np.floor(top.min()) - TOP_ROWS)
    vs = np.arange(v0, np.ceil(top.max()) + height + 1)
    t = vs[:, None] - top[None, :]  # (R, C) px below the reference's upper-lip line
    profile = np.sqrt(np.clip(1 - (cols / half) ** 2, 0, 1))
    if own_teeth_visible(image, upper, lower, W):
        strip = _photographed(image, centre, u_axis, v_axis, cols, t, top, _interp_line(cols, lu, lv), CLEAN_FROM * W)
    else:
        strip = _drawn(cols, t, profile, W, look)
    return strip, half, v0


def _photographed(image: np.ndarray, centre: np.ndarray, u_axis: np.ndarray, v_axis: np.ndarray,
                  cols: np.ndarray, t: np.ndarray, top: np.ndarray, bottom: np.ndarray, clean: float) -> np.ndarray:
    img = image.astype(np.float32) / 255.0
    gap = np.maximum(bottom - top, 0.0)
    pos = centre + cols[None, :, None] * u_axis + (top[None, :] + t)[..., None] * v_axis  # (R, C, 2) x, y
    rgb = np.stack([map_coordinates(img[..., c], [pos[..., 1], pos[..., 0]], order=1, mode="nearest")
                    for c in range(3)])
    luma = np.tensordot(LUMA, rgb, 1)
    sat = (rgb.max(0) - rgb.min(0)) / np.maximum(rgb.max(0), 1e-3)
    toothness = np.clip((luma - 0.3) / 0.2, 0, 1) * np.clip((0.45 - sat) / 0.15, 0, 1)
    # below the reference's gap is its lower lip, not tooth; fade out over the last 1.5 px
    inside = np.clip((gap[None, :] - 1.0 - t) / 1.5, 0, 1) * (t >= clean)
    alpha = toothness * inside
    # Above the first clean rows (blurred with the lip's edge in the photo) the tooth goes on
    # under the lip: each column's tooth colour, weighted by how tooth-like its pixels are,
    # darkening upwards into the lip's shadow.
    wts = alpha**4  # the most tooth-like pixels of the column (not the lip-blurred ends)
    col_rgb = (rgb * wts[None]).sum(1) / np.maximum(wts.sum(0), 1e-6)
    col_a = alpha.max(0)
    hidden = t < clean
    shadow = np.clip(1 + 0.025 * (t - clean), 0.8, 1.0)
    rgb = np.where(hidden[None], col_rgb[:, None, :] * shadow[None], rgb)
    alpha = np.where(hidden, col_a[None, :], alpha)
    rgb = np.minimum(rgb, MAX_TEETH)
    return np.concatenate([rgb, alpha[None]]).astype(np.float32)


def _drawn(cols: np.ndarray, t: np.ndarray, profile: np.ndarray, W: float, look: PhotoLook) -> np.ndarray:
    colour = teeth_light(look)
    # tooth boundaries from the midline outwards; each tooth's crown is rounded at its edge
    edges = np.cumsum((0.0,) + TOOTH_WIDTHS) * W
    a = np.abs(cols)
    k = np.clip(np.searchsorted(edges, a, side="right") - 1, 0, len(TOOTH_WIDTHS) - 1)
    left, right = edges[k], edges[np.minimum(k + 1, len(edges) - 1)]
    within = np.clip((a - left) / np.maximum(right - left, 1e-3), 0, 1)  # 0..1 across the tooth
    # incisal edge: centrals longest, the rest shorter; a rounded corner at each tooth's sides
    length = (0.15 - 0.012 * k) * W * (0.8 + 0.2 * profile)
    corner = 0.05 * W * (1 - np.sqrt(np.clip(1 - (2 * within - 1) ** 2, 0, 1)))
    bottom = length - corner  # (C,) px below the lip line
    r = t
    alpha = np.clip(bottom[None, :] - r + 0.5, 0, 1)
    # shading: convex crowns (darker at each tooth's sides), receding towards the corners,
    # the upper lip's shadow at the top, a greyer translucent biting edge
    crown = 0.92 + 0.08 * np.sin(np.pi * within) ** 0.5
    recede = 0.68 + 0.32 * profile
    lip_shadow = 1 - 0.35 * np.exp(-np.maximum(r + TOP_ROWS * 0.3, 0) / (0.03 * W + 1))
    translucent = 1 - 0.18 * np.clip((r - (bottom[None, :] - 0.035 * W)) / (0.035 * W + 1e-3), 0, 1)
    gap_line = 1 - 0.12 * np.exp(-((within * (right - left)) ** 2) / 0.8) \
        - 0.12 * np.exp(-(((1 - within) * (right - left)) ** 2) / 0.8)
    shade = (crown * recede * gap_line)[None, :] * lip_shadow * translucent
    rgb = colour[:, None, None] * shade[None]
    rgb[2] *= 1 - 0.06 * np.clip((r - bottom[None, :] + 0.06 * W) / (0.06 * W), 0, 1)  # biting edge a touch blue-grey
    s = look.blur_sigma
    rgba = np.concatenate([rgb * alpha[None], alpha[None]])
    rgba = np.stack([gaussian_filter(ch, s, mode="nearest") for ch in rgba])  # premultiplied, then blurred
    a_out = rgba[3:]
    rgb = rgba[:3] / np.maximum(a_out, 1e-3)
    rgb = np.where(a_out > 1e-3, rgb, colour[:, None, None] * 0.5)
    return np.concatenate([np.minimum(rgb, MAX_TEETH), a_out]).astype(np.float32)
