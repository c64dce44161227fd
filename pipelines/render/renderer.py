"""The warping renderer: reference portrait + motion parameters -> video frames.

Per frame, for a batch of parameter vectors:
  1. the rig moves the face's control points (mouth, jaw, lids, brows)        FaceRig
  2. a thin-plate spline spreads those moves into a dense forward field,
     one matmul on a coarse grid (stride 4 px), faded to zero at the ROI edge  tps_matrix
  3. the field is inverted by fixed-point iteration (we sample backwards)
  4. the head's rigid motion (sway, nod, tilt, breathing) is composed in,
     weighted by a soft head mask that fades over the neck
  5. grid_sample pulls the portrait's pixels through the field              (bilinear)
  6. closed lids fade in at the end of a blink (the warp cannot fold an eye)  EyeLids
  7. the mouth interior is composited inside the moved inner-lip contour    MouthInterior
Only a region of interest around the head is warped; everything outside it is the
reference, pixel for pixel, so the background cannot move. Same code on CPU and CUDA.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.motion.params import IDX

from . import face_mesh as fm
from . import ops
from .avatar import Avatar
from .appearance import analyse
from .eyelids import EyeLids, close_eyes, eye_boxes
from .mouth import MouthInterior, catmull_rom_matrix, close_reference_mouth
from .rig import FaceRig
from .teeth import teeth_strip
from .tps import tps_matrix

HEAD_AXES = (0.72, 0.70)  # head ellipse semi-axes, in face widths / heights (hair included)
HEAD_DEPTH = 0.55  # the head's depth at its middle, in face widths, over its outline
NOSE_DEPTH = 0.16  # the nose's extra depth, in face widths
HEAD_FADE = (1.0, 1.33)  # head weight falls from 1 to 0 between these ellipse radii
ROI_RADIUS = 1.38
INVERSION_STEPS = 3
HEAD_INVERSION_STEPS = 2  # the head's field is smooth: two steps invert it to ~0.1 px


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


class WarpRenderer(torch.nn.Module):
    def __init__(self, avatar: Avatar, *, stride: int = 4, output: str = "rgb24") -> None:
        super().__init__()
        if output not in ("rgb24", "yuv420p"):
            raise ValueError(f"unknown output format {output!r}")
        self.output = output
        lm = avatar.landmarks.astype(np.float64)
        size = avatar.size
        self.size = size
        self.rig = FaceRig(avatar.landmarks)
        g = self.rig.geom
        centre = g.face_centre - 0.12 * g.face_height * g.v  # hair above the face belongs to the head
        axes = np.array([HEAD_AXES[0] * g.face_width, HEAD_AXES[1] * g.face_height])

        # Region of interest: the head ellipse at ROI_RADIUS, plus the jaw's travel.
        corners = np.array([[sx, sy] for sx in (-1, 1) for sy in (-1, 1)]) * axes * ROI_RADIUS
        pts = centre + corners[:, :1] * g.u + corners[:, 1:] * g.v
        x0, y0 = np.floor(pts.min(0)).astype(int)
        x1, y1 = np.ceil(pts.max(0)).astype(int)
        # even bounds, so the region maps onto whole 2x2 chroma blocks in yuv420p
        x0, y0 = max(int(x0) // 2 * 2, 0), max(int(y0) // 2 * 2, 0)
        x1, y1 = min((int(x1) + 1) // 2 * 2, size), min((int(y1) + 1) // 2 * 2, size)
        self.roi = (x0, y0, x1, y1)
        h, w = y1 - y0, x1 - x0
        origin = np.array([x0, y0], dtype=np.float64)

        # Coarse grid spanning the ROI's pixel centres exactly (align_corners=True below).
        gw, gh = math.ceil((w - 1) / stride) + 1, math.ceil((h - 1) / stride) + 1
        gx, gy = np.meshgrid(np.linspace(0, w - 1, gw), np.linspace(0, h - 1, gh))
        grid = np.stack([gx, gy], -1).reshape(-1, 2)
        # Window: fields fade to exactly zero at the ROI border (and stay zero outside).
        margin = 0.12 * min(w, h)
        dist = np.minimum.reduce([gx, gy, (w - 1) - gx, (h - 1) - gy])
        window = _smoothstep(0.0, margin, dist)

        # TPS through the rig's control points plus zero-displacement anchors on the border.
        centres = self.rig.centres.astype(np.float64) - origin
        step = max(stride * 4, 16)
        border = np.array([(x, y) for x in np.arange(0, w, step) for y in (0, h - 1)]
                          + [(x, y) for y in np.arange(step, h - 1, step) for x in (0, w - 1)], dtype=np.float64)
        m = tps_matrix(np.vstack([centres, border]), grid, scale=g.face_width, smoothing=1e-4)
        m = m[:, : len(centres)] * window.reshape(-1, 1)  # (G, N)
        # The field is linear in the rig's displacements, and those are linear in the
        # parameters but for the inner-lip pairing: fold the spline into per-parameter fields
        # and per-lip-point fields, so a frame costs (12 + 36) x G instead of N x G.
        rig = self.rig
        v = rig.v.numpy().astype(np.float64)
        def field(d: np.ndarray) -> torch.Tensor:  # (..., N, 2) displacements -> (..., 2 * G) fields
            lead = d.shape[:-2]
            f = np.matmul(m, d.reshape(-1, *d.shape[-2:])).transpose(0, 2, 1)  # (K, 2, G)
            return torch.from_numpy(np.ascontiguousarray(f.reshape(*lead, -1), dtype=np.float32))

        self.register_buffer("field_rest", field(rig.rest_xy.numpy().astype(np.float64)))
        self.register_buffer("field_params", field(rig.A.numpy().astype(np.float64)))
        lips = m[:, rig.lips].T[:, None, :] * v[None, :, None]  # a unit v-move of each lip point
        self.register_buffer("field_lips", torch.from_numpy(lips.reshape(len(rig.lips), -1).astype(np.float32)))
        self.gh, self.gw, self.h, self.w = gh, gw, h, w

        # Head weight: 1 on the head, fading over the neck, 0 well before the ROI border.
        d = np.stack([gx, gy], -1) + origin - centre
        rho = np.hypot((d @ g.u) / axes[0], (d @ g.v) / axes[1])
        head_w = (1 - _smoothstep(HEAD_FADE[0], HEAD_FADE[1], rho)) * window
        self.register_buffer("head_w", torch.from_numpy(head_w.astype(np.float32))[None, None])
        # Depth of the head, for turning it: a paraboloid over the head ellipse (0 at its
        # outline, so the silhouette stays while the face turns inside it) plus the nose.
        # A turn moves each point sideways by sin(angle) x its depth: the middle of the face
        # and the nose most, the cheeks less, the outline not at all -- a 3D-aware warp that
        # never uncovers background, so nothing behind the head has to be invented.
        rho_d = np.hypot((d @ g.u) / (HEAD_AXES[0] * g.face_width), (d @ g.v) / (HEAD_AXES[1] * g.face_height))
        nose = np.stack([gx, gy], -1) + origin - lm[1]
        depth = (HEAD_DEPTH * g.face_width * np.clip(1 - rho_d**2, 0, None)
                 + NOSE_DEPTH * g.face_width * np.exp(-(nose**2).sum(-1) / (2 * (0.09 * g.face_width) ** 2)))
        self.register_buffer("depth", torch.from_numpy((depth * head_w).astype(np.float32))[None, None])
        self.register_buffer("coarse", torch.from_numpy(grid.astype(np.float32)).view(1, gh, gw, 2))
        self.register_buffer("origin", torch.tensor(origin, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor([2.0 / (w - 1), 2.0 / (h - 1)]))

        img = torch.from_numpy(avatar.image.copy())
        if size % 2 and output == "yuv420p":
            raise ValueError("yuv420p output needs an even frame size")
        self.register_buffer("base", img)  # (S, S, 3) uint8, everything outside the ROI
        self.register_buffer("yuv_k", torch.tensor([self._Y[0], self._U[0], self._V[0]]) * 255.0)  # on the device
        self.register_buffer("base_yuv", self._to_yuv(img.permute(2, 0, 1)[None].float() / 255.0)[0])
        closed_np = close_reference_mouth(avatar.image, lm[list(fm.LIPS_UPPER_INNER)], lm[list(fm.LIPS_LOWER_INNER)])
        closed = torch.from_numpy(closed_np)
        self.register_buffer("ref", (closed[y0:y1, x0:x1].permute(2, 0, 1)[None].float() / 255.0).contiguous())
        self.eyelids = EyeLids(close_eyes(closed_np, lm)[y0:y1, x0:x1], eye_boxes(lm, origin, (h, w)),
                               (IDX["blink_r"], IDX["blink_l"]))

        # Mouth interior box: around the lips, with room for the jaw's travel and head sway.
        W = g.mouth_width
        lips = lm[list(fm.LIPS_UPPER_OUTER + fm.LIPS_LOWER_OUTER)] - origin
        bx0 = max(int(lips[:, 0].min() - 0.2 * W), 0)
        bx1 = min(int(lips[:, 0].max() + 0.2 * W) + 1, w)
        by0 = max(int(lips[:, 1].min() - 0.15 * W), 0)
        by1 = min(int(lips[:, 1].max() + 0.45 * W) + 1, h)
        self.mouth_box = (bx0, by0, bx1, by1)
        look = analyse(avatar.image, lm)
        up_ref, lo_ref = lm[list(fm.LIPS_UPPER_INNER)], lm[list(fm.LIPS_LOWER_INNER)]
        strip, strip_half, strip_v0 = teeth_strip(avatar.image, up_ref, lo_ref, g.u, g.v, W, look)
        self.look = look
        self.mouth = MouthInterior(self.mouth_box, look, strip, strip_half, strip_v0, W)
        # the teeth strip's frame (centre, +1 px along u, +1 px along v), fixed to the skull
        t0 = 0.5 * (up_ref[0] + up_ref[-1]) - origin
        self.register_buffer("teeth_frame", torch.tensor(np.stack([t0, t0 + g.u, t0 + g.v]), dtype=torch.float32))
        slot = {int(i): k for k, i in enumerate(self.rig.indices)}
        self.register_buffer("i_inner_up", torch.tensor([slot[i] for i in fm.LIPS_UPPER_INNER]))
        self.register_buffer("i_inner_lo", torch.tensor([slot[i] for i in fm.LIPS_LOWER_INNER]))
        self.register_buffer("smooth", torch.from_numpy(catmull_rom_matrix(len(fm.LIPS_UPPER_INNER), 4)))
        self.register_buffer("centres_roi", torch.from_numpy(centres.astype(np.float32)))

    @staticmethod
    def _norm(xy: np.ndarray, w: int, h: int) -> np.ndarray:
        return xy * np.array([2.0 / (w - 1), 2.0 / (h - 1)]) - 1.0

    def _sample_field(self, field: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """Sample a coarse (B, 2, gh, gw) field at ROI pixel positions `at` (B, ..., 2)."""
        return ops.grid_sample(field, at * self.scale - 1.0, "zeros")

    def _head_field(self, params: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """(B, 2, gh, gw) forward displacement of the head at the coarse grid's points."""
        b = params.shape[0]
        aff = self.rig.head_affine(params, self.size)  # (B, 2, 3) forward, image coordinates
        rot, off = aff[:, :, :2], aff[:, :, 2] + (aff[:, :, :2] @ self.origin) - self.origin
        pts = grid.reshape(b, -1, 2)
        moved = pts @ rot.transpose(1, 2) + off[:, None, :]
        rigid = (moved - pts).view(b, self.gh, self.gw, 2).permute(0, 3, 1, 2) * self.head_w
        turn = self.rig.head_turn(params)  # (B, 2): sin(yaw) u + sin(pitch) v
        return rigid + turn.view(b, 2, 1, 1) * self.depth

    # Methods whose tensor shapes depend on the batch size only: a compiling backend
    # (engines/compiled.py) compiles these and leaves the rest eager. The eyelids and the
    # mouth interior work on a box that follows the lips frame by frame (data-dependent
    # shapes: every frame would be a new graph), and they are a small share of the time.
    static_parts = ("warp", "finish")

    @property
    def cache_tag(self) -> str:
        """What a compiled or exported copy depends on besides the buffers (engines/cache.py)."""
        return f"output={self.output} size={self.size} roi={self.roi} mouth={self.mouth_box}"

    def forward(self, params: torch.Tensor) -> torch.Tensor:
        """params (B, N_PARAMS) float32 -> frames (B, S, S, 3) uint8 (rgb24) or (B, S*3/2, S) (yuv420p)."""
        roi, where, head, correction = self.warp(params)
        self.eyelids(roi, where, params)  # blinks that close fully
        self._mouth_interior(roi, params, head, correction)
        return self.finish(roi)

    def warp(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The warped region of interest (B, 3, h, w) in [0, 1], its sampling grid, the head's
        coarse forward field and the lips' correction."""
        b = params.shape[0]
        correction = self.rig.lip_correction(params)
        fwd = (self.field_rest + params @ self.field_params + correction @ self.field_lips)
        fwd = fwd.view(b, 2, self.gh, self.gw)  # forward field of the face, coarse
        grid = self.coarse.expand(b, -1, -1, -1)
        back = -fwd
        for _ in range(INVERSION_STEPS):  # x = y - f(x): the source of target point y
            back = -self._sample_field(fwd, grid + back.permute(0, 2, 3, 1))

        # The head's forward motion on the coarse grid: its turn (depth-aware), then its
        # tilt, nod translation and breathing as an affine map faded over the neck;
        # inverted by the same fixed-point iteration.
        head = self._head_field(params, grid)
        head_back = -head
        for _ in range(HEAD_INVERSION_STEPS):
            head_back = -self._sample_field(head, grid + head_back.permute(0, 2, 3, 1))
        total = head_back + self._sample_field(back, grid + head_back.permute(0, 2, 3, 1))

        # Sampling positions are computed on the coarse grid and upsampled: bilinear
        # upsampling reproduces the identity part exactly, and it is one pass instead of three.
        coarse_where = ((grid.permute(0, 3, 1, 2) + total) * self.scale.view(1, 2, 1, 1) - 1.0).contiguous()
        where = ops.resize_bilinear(coarse_where, self.h, self.w).permute(0, 2, 3, 1)
        roi = ops.grid_sample(self.ref.expand(b, -1, -1, -1), where, "border")
        return roi, where, head, correction

    def _mouth_interior(self, roi: torch.Tensor, params: torch.Tensor, head: torch.Tensor,
                        correction: torch.Tensor) -> None:
        """The mouth interior inside the moved inner-lip contour (head motion applied to it too)."""
        b = params.shape[0]
        disp = self.rig.linear(params)
        disp[:, self.rig.i_lips] += correction[..., None] * self.rig.v
        moved = self.centres_roi + disp

        def to_target(p: torch.Tensor) -> torch.Tensor:  # (B, M, 2) points -> where the head takes them
            return p + self._sample_field(head, p[:, None]).squeeze(2).transpose(1, 2)

        k = len(self.i_inner_up)  # one sampling of the head's field for all the mouth's points
        pts = to_target(torch.cat([moved[:, self.i_inner_up], moved[:, self.i_inner_lo],
                                   self.teeth_frame.expand(b, -1, -1)], 1))
        up, lo = self.smooth @ pts[:, :k], self.smooth @ pts[:, k:2 * k]
        self.mouth(roi, up, lo, pts[:, 2 * k:], params[:, IDX["tongue"]])

    def finish(self, roi: torch.Tensor) -> torch.Tensor:
        """The region pasted into the reference frame, as uint8 RGB or I420."""
        b = roi.shape[0]
        x0, y0, x1, y1 = self.roi
        if self.output == "yuv420p":
            return self._paste_yuv(self._to_yuv(roi))
        out = self.base.expand(b, -1, -1, -1).clone()
        # round to uint8 and interleave to HWC in one copy (truncation of x + 0.5 = rounding)
        out[:, y0:y1, x0:x1].copy_(roi.mul(255.0).add_(0.5).clamp_(0.0, 255.0).permute(0, 2, 3, 1))
        return out

    # BT.601, limited range: what libav assumes for untagged yuv420p, so a decoder's RGB
    # matches the rgb24 output.
    _Y = ((0.257, 0.504, 0.098), 16.0)
    _U = ((-0.148, -0.291, 0.439), 128.0)
    _V = ((0.439, -0.368, -0.071), 128.0)

    def _to_yuv(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) float RGB in [0, 1] -> (B, h * 3 // 2, w) uint8 I420."""
        b, _, h, w = rgb.shape
        k = self.yuv_k.to(rgb.dtype)
        y = F.conv2d(rgb, k[:1, :, None, None]).add_(self._Y[1] + 0.5)
        # 2x2 mean as two strided adds: F.avg_pool2d takes 10x longer on CPU (1.5 ms at 512²).
        rows = rgb[..., ::2, :] + rgb[..., 1::2, :]
        half = (rows[..., ::2] + rows[..., 1::2]).mul_(0.25)
        uv = F.conv2d(half, k[1:, :, None, None]).add_(128.5)
        out = torch.empty(b, h * 3 // 2, w, dtype=torch.uint8, device=rgb.device)
        out[:, :h].copy_(y[:, 0].clamp_(0, 255))
        out[:, h:].copy_(uv.clamp_(0, 255).reshape(b, h // 2, w))  # U then V, each (h/2, w/2)
        return out

    def _paste_yuv(self, roi_yuv: torch.Tensor) -> torch.Tensor:
        b = roi_yuv.shape[0]
        s = self.size
        x0, y0, x1, y1 = self.roi
        h, w = y1 - y0, x1 - x0
        # luma and chroma pasted apart and joined, not written through a view of one buffer:
        # an ONNX export loses writes made through an aliasing view
        luma = self.base_yuv[:s].expand(b, -1, -1).clone()
        luma[:, y0:y1, x0:x1] = roi_yuv[:, :h]
        planes = self.base_yuv[s:].reshape(2, s // 2, s // 2).expand(b, -1, -1, -1).clone()
        planes[:, :, y0 // 2:y1 // 2, x0 // 2:x1 // 2] = roi_yuv[:, h:].view(b, 2, h // 2, w // 2)
        return torch.cat([luma, planes.reshape(b, s // 2, s)], 1)
