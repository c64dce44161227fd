"""The inside of the mouth, drawn where the warped lips part.

A warp can only move pixels the portrait has; an opening mouth needs pixels it does not
(a closed-mouth photo has no teeth to show). So inside the target inner-lip contour we
composite an interior: a cavity, a tongue, lower teeth, and the upper teeth strip — the
portrait's own teeth where it shows them (`teeth.py`). Edges, grain and light are matched
to the photograph around the mouth (`appearance.py`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from .appearance import PhotoLook
from .teeth import teeth_light

BLUR_MATCH = 1.2  # the outline's blur, in units of the photo's measured point-spread


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


class MouthInterior(torch.nn.Module):
    """Composites the interior into an image, in place, inside a box that grows with the
    opening (a closed mouth costs a few rows, not the whole mouth region).

    Back to front: a cavity that darkens with depth and towards the corners; a tongue low in
    the opening, lit from above; lower teeth on wide openings; the upper teeth strip
    (`teeth.py`), fixed to the skull so the lips slide over it. Every edge is as soft as the
    photo's own point-spread, the photo's grain is added, and the colours follow the light
    on the face around the mouth (`appearance.py`)."""

    def __init__(self, box: tuple[int, int, int, int], look: PhotoLook, strip: np.ndarray,
                 strip_half: float, strip_v0: float, mouth_width: float) -> None:
        super().__init__()
        self.box = box  # the most the interior can ever cover, in image coordinates
        light = look.light_gain(1.1)
        lip = torch.as_tensor(look.lip)
        cavity = lip * torch.tensor([0.36, 0.14, 0.13]) * light
        crease = lip * 0.5  # where closed lips meet: a darker lip line
        tongue = lip * torch.tensor([0.62, 0.30, 0.31])
        wts = strip[3] ** 2  # the lower teeth match the upper ones' enamel, a shade darker
        enamel = (strip[:3] * wts).sum((1, 2)) / wts.sum() if wts.sum() > 1 else teeth_light(look)
        lower_teeth = torch.as_tensor(enamel, dtype=torch.float32) * 0.9
        self.register_buffer("palette", torch.stack([cavity, crease, tongue, lower_teeth]))  # (4, 3)
        self.register_buffer("tongue_tip", (lip * torch.tensor([0.9, 0.58, 0.58])).view(1, 3, 1, 1))  # lit, pinker
        strip = strip.copy()  # the biting edge over the dark behind it: as soft as the photo's edges
        strip[3] = gaussian_filter(strip[3], 1.4 * max(float(look.blur_sigma), 0.5), mode="nearest")
        self.register_buffer("strip", torch.as_tensor(strip)[None])  # (1, 4, R, C)
        self.strip_half, self.strip_v0 = float(strip_half), float(strip_v0)
        self.strip_rows = strip.shape[1]
        # A small mouth (a 128-px frame has a 19-px one) is all edge: softened as much as a
        # large one, its opening would blur away. Soften in proportion below 40 px.
        self.small = small = float(np.clip(mouth_width / 40.0, 0.5, 1.0))
        self.soft = max(float(look.blur_sigma), 0.6) * 1.25 * small  # edge ramp width, px (~ a blurred step's 10-90 %)
        bx0, by0, bx1, by1 = box
        g = torch.Generator().manual_seed(12)
        # the photo's grain, as a fixed pattern (grain does not flicker at 25 fps either)
        self.register_buffer("grain", torch.randn(1, 1, by1 - by0, bx1 - bx0, generator=g) * float(look.noise_sigma))
        self.W = mouth_width
        sigma = BLUR_MATCH * max(float(look.blur_sigma), 0.5) * small
        r = max(int(np.ceil(2.5 * sigma)), 1)
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
        self.blur_taps = [float(v) for v in k / k.sum()]  # python floats: no device, no dtype
        self.inset = 0.8 * sigma * small

    def forward(self, img: torch.Tensor, upper: torch.Tensor, lower: torch.Tensor,
                teeth_frame: torch.Tensor, tongue_tip: torch.Tensor) -> None:
        """img (B, 3, H, W) modified in place; upper/lower (B, K, 2) the target inner-lip
        contours, corner to corner, in img's pixel coordinates; teeth_frame (B, 3, 2): the
        teeth strip's centre, a point one px along its u axis and one along v, as moved by
        the head; tongue_tip (B,) 0..1: the tip at the front, under the upper teeth (th, l)."""
        b = img.shape[0]
        pts = torch.cat([upper, lower], 1)
        pad = 1 + len(self.blur_taps) // 2  # room for the blur around the opening
        lo_xy = (pts.amin((0, 1)) - pad).floor()
        hi_xy = (pts.amax((0, 1)) + pad + 1).ceil()
        bx0, by0, bx1, by1 = self.box
        k_mid = upper.shape[1] // 2
        widest = (lower[:, k_mid] - upper[:, k_mid]).norm(dim=-1).amax()
        lx, ly, hx, hy, widest_px, tip_max = torch.cat([lo_xy, hi_xy, widest.view(1), tongue_tip.amax().view(1)]).tolist()
        lx, ly, hx, hy = int(lx), int(ly), int(hx), int(hy)  # (one device sync for all of these)
        wide = widest_px > 0.15 * self.W  # tongue and lower teeth only exist in wider openings
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
        px = torch.arange(x0, x1, dtype=img.dtype, device=img.device).view(1, 1, -1)
        py = torch.arange(y0, y1, dtype=img.dtype, device=img.device).view(1, -1, 1)
        xs = px - origin[:, 0].view(b, 1, 1)
        ys = py - origin[:, 1].view(b, 1, 1)
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
        s = self.soft
        e = self.inset  # the blurred outline would eat into the lips: start it inside them
        inside = (_sat((pv - v_up - e) / s + 0.5) * _sat((v_lo - pv - e) / s + 0.5)
                  * _sat((pu + half) / s + 0.5) * _sat((half - pu) / s + 0.5))  # edges as soft as the photo's
        profile = (1 - (pu / half).clamp(-1, 1) ** 2).clamp_min(0).sqrt()
        W = self.W
        # The layers below the upper teeth are flat colours with a shade each: composite
        # their weights on one channel, then mix the colours in one step (4x fewer ops on RGB).
        # Back to front: cavity, tongue, the lips' wet inner side, lower teeth.
        # cavity: darkest deep inside and towards the corners
        depth = torch.minimum(torch.minimum(pv - v_up, v_lo - pv), half - pu.abs()).clamp_min(0)  # to the nearest lip
        cav = (0.55 + 0.45 * profile) * 0.8
        # tongue: a dome behind the lower teeth, visible once the jaw drops
        if wide:
            dome = (1 - (pu / (0.72 * half)) ** 2).clamp_min(0).sqrt()
            t_top = v_lo - (0.34 * gap).clamp_max(0.12 * W) * dome
            t_alpha = _sat((pv - t_top) / s + 0.3) * _sat((gap - 0.16 * W) / (0.1 * W)) * _sat(dome * 3)
            t_lit = 0.6 + 0.4 * torch.exp(-(pv - t_top).clamp_min(0) / (0.04 * W)) * dome
            cav, tongue = cav * (1 - t_alpha), t_alpha * t_lit
        else:
            tongue = torch.zeros_like(cav)
        # just inside the lips, their wet inner side (darker lip) before the dark; and a
        # nearly closed mouth shows only that, a lip crease, not a black line
        closed = _sat(1 - gap / (0.05 * W))
        band = (0.2 * gap).clamp_max(2.5 * s)  # a small opening is mostly dark: the band narrows with it
        wet = torch.exp(-(depth - band).clamp_min(0) / (0.15 * gap + 0.1).clamp_max(0.03 * W))
        crease = torch.maximum(closed, wet * self.small**2)  # (too small to see in a small mouth)
        keep = 1 - crease
        cav, tongue = cav * keep, tongue * keep
        # lower teeth: a band above the lower lip in wide openings, in the upper teeth's shadow
        if widest_px > 0.2 * W:
            lt_h = (0.15 * gap).clamp_max(0.05 * W) * profile
            lt = (_sat((pv - (v_lo - lt_h)) / s + 0.5) * _sat((gap - 0.26 * W) / (0.06 * W)) * _sat(profile * 3))
            seams = 0.86 + 0.14 * torch.cos(pu * (torch.pi / (0.065 * W))).abs().sqrt()  # faint separations
            keep = 1 - lt
            weights = torch.stack([cav * keep, crease * keep, tongue * keep, lt * (0.55 + 0.45 * profile) * seams], 1)
            colour = torch.einsum("bkhw,kc->bchw", weights, self.palette)
        else:
            colour = torch.einsum("bkhw,kc->bchw", torch.stack([cav, crease, tongue], 1), self.palette[:3])
        # upper teeth: the strip, in the skull's frame
        o, eu, ev = teeth_frame[:, 0], teeth_frame[:, 1] - teeth_frame[:, 0], teeth_frame[:, 2] - teeth_frame[:, 0]
        dx, dy = px - o[:, 0].view(b, 1, 1), py - o[:, 1].view(b, 1, 1)
        inv = torch.linalg.inv(torch.stack([eu, ev], -1))  # (B, 2, 2): image offsets -> strip (u, v)
        su = inv[:, 0, 0].view(b, 1, 1) * dx + inv[:, 0, 1].view(b, 1, 1) * dy
        sv = inv[:, 1, 0].view(b, 1, 1) * dx + inv[:, 1, 1].view(b, 1, 1) * dy
        where = torch.stack([su / self.strip_half, (sv - self.strip_v0) / ((self.strip_rows - 1) / 2) - 1], -1)
        teeth = F.grid_sample(self.strip.expand(b, -1, -1, -1), where, mode="bilinear",
                              padding_mode="zeros", align_corners=True)
        t_a = teeth[:, 3:] * _sat(gap / 2.0)[:, None]
        colour = colour + t_a * (teeth[:, :3] - colour)
        # the tongue tip (th, dh, l): in front of the upper teeth's edge, filling the lower part
        # of the opening in the middle, lit from the front
        if tip_max > 0:
            tip = (1 - (pu / (0.42 * half)) ** 2).clamp_min(0)
            tip_top = v_lo - (0.75 * gap).clamp_max(0.1 * W) * tip.sqrt()
            tip_a = tongue_tip.view(b, 1, 1) * _sat((pv - tip_top) / s + 0.5) * _sat(tip * 4)
            tip_lit = 0.8 + 0.25 * torch.exp(-(pv - tip_top).clamp_min(0) / (0.03 * W))
            colour = colour + tip_a[:, None] * (self.tongue_tip * tip_lit[:, None] - colour)
        # The outline goes through the photo's point-spread (the interior's own detail, the
        # photographed teeth, already has it): as soft as the camera made every other edge.
        alpha = self._blur(inside[:, None])
        colour = colour + self.grain[:, :, y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]
        region = img[:, :, y0:y1, x0:x1]
        region += alpha * (colour - region)

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur of (B, C, h, w), zero outside, as shifted weighted sums: on a
        mouth-sized tensor that is ~5x faster on CPU than a depthwise convolution."""
        k = self.blur_taps
        r = len(k) // 2
        h, w = x.shape[-2:]
        p = F.pad(x, (r, r, r, r))
        rows = sum(k[i] * p[..., :, i:i + w] for i in range(len(k)))
        return sum(k[i] * rows[..., i:i + h, :] for i in range(len(k)))


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
    _fill_dark_corners(out, upper, lower)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _fill_dark_corners(img: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> None:
    """A smile's corners are dark pockets outside the inner-lip contour; stretched by the warp
    they become dark spikes at the corners of an opening mouth. Fill them from the skin and
    lip around (repeated neighbour averaging), in place."""
    w_mouth = float(np.linalg.norm(upper[-1] - upper[0]))
    luma = img @ np.array([0.299, 0.587, 0.114])
    dark = np.zeros(luma.shape, bool)
    for corner in (upper[0], upper[-1]):
        r = 0.12 * w_mouth
        x0, y0 = int(max(corner[0] - r, 0)), int(max(corner[1] - r, 0))
        x1, y1 = int(min(corner[0] + r + 1, img.shape[1])), int(min(corner[1] + r + 1, img.shape[0]))
        patch = luma[y0:y1, x0:x1]
        if patch.size:
            dark[y0:y1, x0:x1] |= patch < 0.8 * np.median(patch)
    if not dark.any():
        return
    from scipy.ndimage import binary_dilation
    dark = binary_dilation(dark, iterations=1)
    ys, xs = np.nonzero(dark)
    for _ in range(60):
        acc = (img[np.clip(ys - 1, 0, None), xs] + img[np.minimum(ys + 1, img.shape[0] - 1), xs]
               + img[ys, np.clip(xs - 1, 0, None)] + img[ys, np.minimum(xs + 1, img.shape[1] - 1)])
        img[ys, xs] = acc / 4
