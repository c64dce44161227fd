"""Closed eyelids, for blinks that close fully.

The warp can bring the upper lid most of the way down, but not all: squeezing the eye to
nothing is a fold, and a coarse, inverted field rounds folds off (a sliver of eye stays
open). So each eye also has a closed version of the photograph: the eye painted over with
the lid's own skin, column by column, and a soft lash line where the lids meet. Near the end
of a blink the renderer samples that version through the same field, inside the eye's box
only, and fades it in.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import face_mesh as fm

CLOSED_FROM, CLOSED_AT = 0.4, 0.9  # blink values over which the closed lids fade in


def close_eyes(image: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The portrait (uint8) with both eyes closed: lid skin between the lid contours, a lash
    line along the meeting curve (at the lower lid, where the closing upper lid ends)."""
    src = image.astype(np.float32)
    out = src.copy()
    painted = np.zeros(out.shape[:2], np.float32)
    h, w = out.shape[:2]
    luma = out @ np.array([0.299, 0.587, 0.114], np.float32)
    for upper_idx, lower_idx in ((fm.EYE_R_UPPER, fm.EYE_R_LOWER), (fm.EYE_L_UPPER, fm.EYE_L_LOWER)):
        up, lo = lm[list(upper_idx)], lm[list(lower_idx)]
        eye_w = float(np.linalg.norm(up[-1] - up[0]))
        xs = np.arange(int(np.floor(min(up[:, 0].min(), lo[:, 0].min()))) - 1,
                       int(np.ceil(max(up[:, 0].max(), lo[:, 0].max()))) + 2)
        ou, ol = np.argsort(up[:, 0]), np.argsort(lo[:, 0])
        top = np.interp(xs, up[ou, 0], up[ou, 1])
        bot = np.interp(xs, lo[ol, 0], lo[ol, 1])
        lift = max(3.0, 0.2 * eye_w)  # the lid skin is sampled this far above the lash line
        cover = max(1.5, 0.08 * eye_w)  # the open eye's own lashes are painted over too
        # the lashes' colour: the darkest tenth along the upper lid's edge
        edge = [luma[int(np.clip(y, 0, h - 1)), int(np.clip(x, 0, w - 1))] for x, y in zip(xs, top, strict=True)]
        lash_y = np.quantile(edge, 0.1)
        lash = out[int(np.clip(np.interp(xs[len(xs) // 2], xs, top), 0, h - 1)), int(np.clip(xs[len(xs) // 2], 0, w - 1))]
        lash = lash * (lash_y / max(float(lash @ np.array([0.299, 0.587, 0.114])), 1.0))
        for x, yt, yb in zip(xs, top, bot, strict=True):
            if not 0 <= x < w:
                continue
            y0, y1 = max(int(np.floor(yt - cover)), 0), min(int(np.ceil(yb + 1)), h - 1)
            if y1 <= y0:
                continue
            skin_up = out[max(int(yt - lift), 0), x].copy()
            skin_lo = out[min(int(yb + lift), h - 1), x].copy()
            ys = np.arange(y0, y1 + 1, dtype=np.float32)
            t = np.clip((ys - y0) / max(y1 - y0, 1), 0, 1)[:, None]
            col = ((1 - t) * skin_up + t * skin_lo) * 0.95  # a lid is in its brow's shadow
            meet = yb - 0.08 * (yb - yt)
            dark = np.exp(-0.5 * ((ys - meet) / max(1.0, 0.04 * eye_w)) ** 2)[:, None] * 0.85  # the lash line, soft
            out[y0:y1 + 1, x] = col + dark * (lash - col)
            painted[y0:y1 + 1, x] = 1.0
    # feathered into the photo around it, so the painted lid has no outline of its own
    from scipy.ndimage import gaussian_filter
    m = np.minimum(gaussian_filter(painted, 1.0) * 1.5, 1.0)[..., None]
    out = src + m * (out - src)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def eye_boxes(lm: np.ndarray, origin: np.ndarray, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) per eye in region-of-interest pixels: the eye and its lids, with room."""
    h, w = size
    out = []
    for idx in (fm.EYE_R_UPPER + fm.EYE_R_LOWER, fm.EYE_L_UPPER + fm.EYE_L_LOWER):
        pts = lm[list(idx)] - origin
        eye_w = float(pts[:, 0].max() - pts[:, 0].min())
        x0, y0 = np.floor(pts.min(0) - 0.25 * eye_w).astype(int)
        x1, y1 = np.ceil(pts.max(0) + 0.25 * eye_w).astype(int)
        out.append((max(int(x0), 0), max(int(y0), 0), min(int(x1), w), min(int(y1), h)))
    return out


class EyeLids(torch.nn.Module):
    def __init__(self, closed_roi: np.ndarray, boxes: list[tuple[int, int, int, int]], blink_idx: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("closed", torch.from_numpy(closed_roi).permute(2, 0, 1)[None].float().div(255.0).contiguous())
        self.boxes = boxes
        self.blink_idx = blink_idx

    def forward(self, roi: torch.Tensor, where: torch.Tensor, params: torch.Tensor) -> None:
        """roi (B, 3, h, w) modified in place; where (B, h, w, 2): the warp's sampling grid."""
        b = roi.shape[0]
        if not bool((params[:, list(self.blink_idx)] > CLOSED_FROM).any()):  # most frames: eyes open
            return
        for (x0, y0, x1, y1), k in zip(self.boxes, self.blink_idx, strict=True):
            t = ((params[:, k] - CLOSED_FROM) / (CLOSED_AT - CLOSED_FROM)).clamp(0.0, 1.0)
            wgt = (t * t * (3 - 2 * t)).view(b, 1, 1, 1)
            shut = F.grid_sample(self.closed.expand(b, -1, -1, -1), where[:, y0:y1, x0:x1], mode="bilinear",
                                 padding_mode="border", align_corners=True)
            part = roi[:, :, y0:y1, x0:x1]
            part += wgt * (shut - part)
