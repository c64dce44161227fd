"""The inside of the mouth, drawn where the warped lips part.

A warp can only move pixels the portrait has; an opening mouth needs pixels it does not
(a closed-mouth photo has no teeth to show). So inside the target inner-lip contour we
composite a synthetic interior: a dark cavity, the tongue low down, upper teeth under the
upper lip and a hint of lower teeth, all with 1-pixel soft edges (anti-aliased). Colours
come from the portrait: its lips tint the cavity, its own teeth (if visible) the teeth.
"""
from __future__ import annotations

import numpy as np
import torch

DEFAULT_TEETH = np.array([0.92, 0.89, 0.82], dtype=np.float32)


def _sat(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0.0, 1.0)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Batched piecewise-linear interpolation: x (B, M), knots xp/fp (B, K), xp ascending."""
    k = xp.shape[1]
    i = torch.searchsorted(xp.contiguous(), x.contiguous()).clamp(1, k - 1)
    x0, x1 = xp.gather(1, i - 1), xp.gather(1, i)
    f0, f1 = fp.gather(1, i - 1), fp.gather(1, i)
    w = ((x - x0) / (x1 - x0).clamp_min(1e-4)).clamp(0.0, 1.0)
    return f0 + w * (f1 - f0)


def catmull_rom_matrix(k: int, per_segment: int) -> np.ndarray:
    """Matrix S ((k-1)*per_segment + 1, k): S @ points resamples a k-point polyline as a
    smooth Catmull-Rom curve through the same points (ends clamped)."""
    rows = []
    for seg in range(k - 1):
        for j in range(per_segment):
            t = j / per_segment
            w = np.array([-t + 2 * t**2 - t**3, 2 - 5 * t**2 + 3 * t**3,
                          t + 4 * t**2 - 3 * t**3, -(t**2) + t**3]) / 2
            row = np.zeros(k)
            for off, wt in zip((-1, 0, 1, 2), w, strict=True):
                row[min(max(seg + off, 0), k - 1)] += wt
            rows.append(row)
    last = np.zeros(k)
    last[-1] = 1
    rows.append(last)
    return np.array(rows, dtype=np.float32)


def portrait_colours(image: np.ndarray, upper: np.ndarray, lower: np.ndarray,
                     outer_upper: np.ndarray, outer_lower: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lip colour, teeth colour) in [0, 1] from the reference image and its lip contours."""
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    img = image.astype(np.float32) / 255.0

    def polygon_mask(poly: np.ndarray) -> np.ndarray:
        m = Image.new("L", (w, h), 0)
        ImageDraw.Draw(m).polygon([tuple(p) for p in poly], fill=1)
        return np.asarray(m, dtype=bool)

    lips = polygon_mask(np.vstack([outer_upper, outer_lower[::-1]]))
    inner = polygon_mask(np.vstack([upper, lower[::-1]]))
    lips &= ~inner
    lip = img[lips].mean(0) if lips.sum() > 10 else np.array([0.7, 0.4, 0.4], np.float32)
    teeth = DEFAULT_TEETH
    if inner.sum() >= 20:  # the portrait shows its teeth: use their colour
        px = img[inner]
        bright = px[px.sum(1) >= np.quantile(px.sum(1), 0.6)]
        sat = (bright.max(1) - bright.min(1)) / np.maximum(bright.max(1), 1e-3)
        if len(bright) and sat.mean() < 0.35 and bright.mean() > 0.45:
            teeth = np.clip(bright.mean(0) * 1.05, 0, 1)
    return lip.astype(np.float32), teeth.astype(np.float32)


class MouthInterior(torch.nn.Module):
    """Composites the interior into an image, in place, inside a box that grows with the
    opening (a closed mouth costs a few rows, not the whole mouth region)."""

    def __init__(self, box: tuple[int, int, int, int], lip: np.ndarray, teeth: np.ndarray,
                 mouth_width: float) -> None:
        super().__init__()
        self.box = box  # the most the interior can ever cover, in image coordinates
        lip_t = torch.as_tensor(lip).view(1, 3, 1, 1)
        self.register_buffer("cavity", lip_t * torch.tensor([0.30, 0.12, 0.12]).view(1, 3, 1, 1))
        self.register_buffer("tongue", lip_t * torch.tensor([0.80, 0.45, 0.45]).view(1, 3, 1, 1))
        self.register_buffer("teeth", torch.as_tensor(teeth).view(1, 3, 1, 1))
        self.W = mouth_width

    def forward(self, img: torch.Tensor, upper: torch.Tensor, lower: torch.Tensor) -> None:
        """img (B, 3, H, W) modified in place; upper/lower (B, K, 2) the target inner-lip
        contours, corner to corner, in img's pixel coordinates."""
        b = img.shape[0]
        pts = torch.cat([upper, lower], 1)
        lo_xy = (pts.amin((0, 1)) - 2).floor()
        hi_xy = (pts.amax((0, 1)) + 3).ceil()
        bx0, by0, bx1, by1 = self.box
        lx, ly, hx, hy = (int(v) for v in torch.cat([lo_xy, hi_xy]).tolist())  # one device sync, not four
        x0, y0 = max(lx, bx0), max(ly, by0)
        x1, y1 = min(hx, bx1), min(hy, by1)
        if x1 <= x0 or y1 <= y0:
            return
        c0, c1 = upper[:, 0], upper[:, -1]
        origin = 0.5 * (c0 + c1)
        axis = c1 - c0
        half = (axis.norm(dim=-1).clamp_min(1.0) / 2).view(b, 1, 1)
        a = axis / (2 * half.view(b, 1))
        n = torch.stack([-a[:, 1], a[:, 0]], -1)
        xs = torch.arange(x0, x1, dtype=img.dtype, device=img.device).view(1, 1, -1) - origin[:, 0].view(b, 1, 1)
        ys = torch.arange(y0, y1, dtype=img.dtype, device=img.device).view(1, -1, 1) - origin[:, 1].view(b, 1, 1)
        pu = xs * a[:, 0].view(b, 1, 1) + ys * a[:, 1].view(b, 1, 1)  # (B, h, w) along the mouth
        pv = xs * n[:, 0].view(b, 1, 1) + ys * n[:, 1].view(b, 1, 1)  # across it, + downwards

        def local(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            d = p - origin[:, None, :]
            return (d * a[:, None, :]).sum(-1), (d * n[:, None, :]).sum(-1)

        uu, uv = local(upper)
        lu, lv = local(lower)
        uu, lu = torch.cummax(uu, 1).values, torch.cummax(lu, 1).values  # knots must ascend
        flat = pu.reshape(b, -1)
        v_up = _interp(flat, uu, uv).view_as(pu)
        v_lo = _interp(flat, lu, lv).view_as(pu)
        gap = (v_lo - v_up).clamp_min(0.0)
        inside = (_sat(pv - v_up + 0.75) * _sat(v_lo - pv + 0.75)
                  * _sat(pu + half + 0.5) * _sat(half - pu + 0.5))  # soft 1-px edges
        profile = (1 - (pu / half).clamp(-1, 1) ** 2).sqrt()  # teeth recede towards the corners
        W = self.W
        # cavity: dark, a little lighter right behind the lips
        edge = torch.exp(-torch.minimum(pv - v_up, v_lo - pv).clamp_min(0) / 3.0)
        colour = self.cavity * (0.7 + 0.6 * edge[:, None])
        # tongue, low in a wide-open mouth
        t_alpha = _sat((pv - (v_lo - 0.35 * gap)) / 2.0) * _sat((gap - 0.08 * W) / (0.15 * W))
        colour = colour + t_alpha[:, None] * (self.tongue - colour)
        # upper teeth under the upper lip, a hint of lower teeth above the lower lip; no teeth
        # in a closed mouth's lip line
        teeth_on = _sat(profile * 4) * _sat(gap / 3.0)
        ut = _sat(v_up + (0.55 * gap).clamp_max(0.11 * W) * profile - pv + 0.5) * teeth_on
        lt = (0.8 * _sat(pv - (v_lo - (0.2 * gap).clamp_max(0.05 * W) * profile) + 0.5) * teeth_on
              * _sat((gap - 0.12 * W) / (0.05 * W)))
        shade = self.teeth * (0.72 + 0.28 * profile)[:, None]
        colour = colour + ut[:, None] * (shade - colour)
        colour = colour + lt[:, None] * (shade * 0.85 - colour)
        region = img[:, :, y0:y1, x0:x1]
        region += inside[:, None] * (colour - region)


def close_reference_mouth(image: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """The portrait with whatever shows between its lips (teeth, a dark gap) painted over by
    the lips' own colours, column by column.

    The rest pose closes the lips; the warp then squeezes the region between them into a
    thin seam, which would leave a line of teeth pixels. With that region painted as lip,
    the seam is lip, and the interior we composite supplies teeth when the mouth opens.
    """
    out = image.astype(np.float32).copy()
    h = image.shape[0]
    xs = np.arange(int(np.floor(min(upper[:, 0].min(), lower[:, 0].min()))),
                   int(np.ceil(max(upper[:, 0].max(), lower[:, 0].max()))) + 1)
    ou, ol = np.argsort(upper[:, 0]), np.argsort(lower[:, 0])
    top = np.interp(xs, upper[ou, 0], upper[ou, 1])
    bot = np.interp(xs, lower[ol, 0], lower[ol, 1])
    for x, yt, yb in zip(xs, top, bot, strict=True):
        if yb - yt < 0.5 or not 0 <= x < image.shape[1]:
            continue
        y0, y1 = max(int(np.floor(yt)) - 1, 0), min(int(np.ceil(yb)) + 1, h - 1)
        above, below = out[max(y0 - 2, 0), x].copy(), out[min(y1 + 2, h - 1), x].copy()
        t = np.linspace(0.0, 1.0, y1 - y0 + 1)[:, None]
        out[y0:y1 + 1, x] = (1 - t) * above + t * below
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
