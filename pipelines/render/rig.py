"""From motion parameters to where the face's control points go.

The rig is built once per avatar from its landmarks (numpy), then evaluated per frame in
torch on a batch of parameter vectors, on whatever device the renderer lives on.
Displacements are expressed in the face's own axes (u: towards the subject's left eye,
v: down the face) and scaled by the avatar's mouth width W and face height H, so the same
parameters mean the same articulation on any portrait.

Mouth model, per frame (all in pixels of the framed avatar):
  rest      the reference's parted lips are closed (parameters all zero = closed, relaxed)
  jaw_open  lower lip, chin and jaw line drop by up to 0.36 W; the upper lip lifts a little
  spread    lip points move outwards in proportion to their position along the mouth
  round     lip points move inwards, the opening becomes an "o", the lips get fuller
  tuck      the lower lip rises to the upper teeth (f, v); the upper lip lifts to show them
  press     each inner upper/lower pair meets in the middle (p, b, m): gap exactly zero
and the lips never cross (a negative gap collapses to the midline).
"""
from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np
import torch

from pipelines.motion.params import IDX, N_PARAMS

from . import face_mesh as fm

JAW_DROP = 0.36  # inner lower lip travel at jaw_open = 1, in mouth widths
# Closing the reference's lips moves their outer edges this much with the inner ones, so the
# lips keep their thickness (the upper a little less: the skin above it is held by the nose).
REST_OUTER_UPPER, REST_OUTER_LOWER = 0.7, 1.2
UPPER_LIFT = 0.055  # the upper lip hangs from the skull: it lifts little (or bares the gum)
SPREAD = 0.10
ROUND_IN = 0.17
ROUND_OPEN = 0.05
TUCK_SHOW = 0.08  # upper teeth showing above the tucked lower lip (f, v), in mouth widths
ROUND_HOLE = 0.6  # a rounded opening spans this share of the (rounded) mouth
ROUND_UNSMILE = 0.8  # share of a smile's sag that rounding takes out
OPEN_UNSAG = 0.4  # share of the smile's sag the upper lip loses as the jaw opens (it arches)
BROW_LIFT = 0.045  # in face heights
LID_UPPER = 0.6  # upper-lid travel, in eye openings; further, the inverted warp tears (the closed-lid layer does the rest)
GAZE_X, GAZE_Y = 0.14, 0.06  # iris travel at gaze = 1, in eye widths (a glance aside, not a roll)
HEAD_REACH = 0.10  # translation per radian of yaw/pitch, in face widths/heights (the rest is depth)
BREATH_PX = 0.004  # in frame sizes


@dataclass(frozen=True)
class FaceGeometry:
    u: np.ndarray  # unit vector along the face (image right)
    v: np.ndarray  # unit vector down the face
    mouth_width: float
    face_width: float
    face_height: float
    face_centre: np.ndarray
    neck: np.ndarray  # pivot of head rotation


def face_geometry(lm: np.ndarray) -> FaceGeometry:
    eye_r = lm[list(fm.EYE_R_UPPER + fm.EYE_R_LOWER)].mean(0)
    eye_l = lm[list(fm.EYE_L_UPPER + fm.EYE_L_LOWER)].mean(0)
    u = (eye_l - eye_r) / np.linalg.norm(eye_l - eye_r)
    v = np.array([-u[1], u[0]])
    oval = lm[list(fm.FACE_OVAL)]
    ou, ov = oval @ u, oval @ v
    centre = oval.mean(0)
    face_h = float(ov.max() - ov.min())
    chin = lm[152]
    return FaceGeometry(u=u, v=v, mouth_width=float(np.linalg.norm(lm[291] - lm[61])),
                        face_width=float(ou.max() - ou.min()), face_height=face_h,
                        face_centre=centre, neck=chin + 0.15 * face_h * v)


def _interp_v(at_u: np.ndarray, pts_u: np.ndarray, pts_v: np.ndarray) -> np.ndarray:
    order = np.argsort(pts_u)
    return np.interp(at_u, pts_u[order], pts_v[order])


class FaceRig(torch.nn.Module):
    """Control points of the warp and their displacement for a batch of parameters."""

    def __init__(self, lm: np.ndarray) -> None:
        super().__init__()
        g = self.geom = face_geometry(lm)
        W, H = g.mouth_width, g.face_height
        groups: dict[str, tuple[int, ...]] = {
            "up_in": fm.LIPS_UPPER_INNER[1:-1], "lo_in": fm.LIPS_LOWER_INNER[1:-1],
            "up_out": fm.LIPS_UPPER_OUTER[1:-1], "lo_out": fm.LIPS_LOWER_OUTER[1:-1],
            "corner_in": (78, 308), "corner_out": (61, 291),
            "eye_r_up": fm.EYE_R_UPPER[1:-1], "eye_r_lo": fm.EYE_R_LOWER[1:-1],
            "eye_l_up": fm.EYE_L_UPPER[1:-1], "eye_l_lo": fm.EYE_L_LOWER[1:-1],
            "brow": fm.BROW_R + fm.BROW_L,
            "iris_r": fm.IRIS_R_POINTS, "iris_l": fm.IRIS_L_POINTS,
        }
        used = {i for idx in groups.values() for i in idx}
        groups["jaw"] = tuple(i for i in fm.JAW + fm.CHIN if i not in used)
        used |= set(groups["jaw"])
        groups["cheek"] = tuple(i for i in fm.CHEEKS_LOW if i not in used)
        used |= set(groups["cheek"])
        groups["static"] = tuple(i for i in dict.fromkeys(fm.STATIC + fm.EYE_R_UPPER[::8] + fm.EYE_L_UPPER[::8])
                                 if i not in used)
        order = [i for name in groups for i in groups[name]]
        self.indices = np.array(order)
        self.centres = lm[self.indices].astype(np.float32)  # (N, 2) source positions
        n = len(order)
        pos = {name: np.array([order.index(i) for i in idx], dtype=np.int64) for name, idx in groups.items()}
        self.slots = pos

        local = (self.centres - lm[[78, 308]].mean(0)) @ np.stack([g.u, g.v], 1)  # (N, 2) u, v
        ur = np.clip(local[:, 0] / (W / 2), -1.5, 1.5)

        # Rest closure: how far each lip point must travel for the reference's lips to meet.
        inner_u = lambda name: local[pos[name], 0]  # noqa: E731
        up_v = lambda at: _interp_v(at, inner_u("up_in"), local[pos["up_in"], 1])  # noqa: E731
        lo_v = lambda at: _interp_v(at, inner_u("lo_in"), local[pos["lo_in"], 1])  # noqa: E731
        gap = np.clip(lo_v(local[:, 0]) - up_v(local[:, 0]), 0, None)
        a_up = 0.3  # share of the closing done by the upper lip
        rest = np.zeros(n, np.float32)
        rest[pos["up_in"]] = a_up * gap[pos["up_in"]]
        rest[pos["lo_in"]] = -(1 - a_up) * gap[pos["lo_in"]]
        rest[pos["up_out"]] = REST_OUTER_UPPER * a_up * gap[pos["up_out"]]
        rest[pos["lo_out"]] = -REST_OUTER_LOWER * (1 - a_up) * gap[pos["lo_out"]]

        # How much each point follows the jaw: lower lip fully, chin/jaw line by depth below
        # the mouth corners (the jaw hinges near the ears), cheeks a little.
        wj = np.zeros(n, np.float32)
        # The lower lip drops most in the middle: an open mouth is a lens, not a box.
        wj[pos["lo_in"]] = 0.45 + 0.55 * (1 - np.clip(ur[pos["lo_in"]], -1, 1) ** 2)
        wj[pos["lo_out"]] = 0.9 * (0.45 + 0.55 * (1 - np.clip(ur[pos["lo_out"]], -1, 1) ** 2))
        wj[pos["corner_in"]], wj[pos["corner_out"]] = 0.45, 0.4
        depth = np.clip(local[:, 1] / max(float(local[pos["jaw"], 1].max()), 1.0), 0, 1)
        wj[pos["jaw"]] = 0.9 * depth[pos["jaw"]] ** 1.2
        wj[pos["cheek"]] = 0.35 * depth[pos["cheek"]]
        # The chin stays: closing the reference's lips is the lips' work, so the rest pose
        # keeps the portrait's face (identity) everywhere but between the lips.

        wu = np.zeros(n, np.float32)  # upper-lip lift
        wu[pos["up_in"]] = 0.5 + 0.5 * (1 - np.clip(ur[pos["up_in"]], -1, 1) ** 2)
        wu[pos["up_out"]] = 0.5 + 0.5 * (1 - np.clip(ur[pos["up_out"]], -1, 1) ** 2)  # the whole lip lifts: it keeps its thickness
        wu[pos["corner_in"]], wu[pos["corner_out"]] = 0.3, 0.3
        wh = np.zeros(n, np.float32)  # horizontal (spread/round) participation
        for name in ("up_in", "lo_in", "up_out", "lo_out", "corner_in", "corner_out"):
            wh[pos[name]] = 1.0
        wh[pos["cheek"]], wh[pos["jaw"]] = 0.3, 0.05
        # The smile's sag: how far the closed lips' meeting line bows below the straight line
        # between the corners. It belongs to the portrait's expression, not to the sound: an
        # "oo" or a wide "aa" from a smiling portrait must not keep the crescent.
        c_r, c_l = local[pos["corner_in"][0]], local[pos["corner_in"][1]]
        meet_v = lambda at: up_v(at) + a_up * np.clip(lo_v(at) - up_v(at), 0, None)  # noqa: E731
        lip_u = np.clip(local[:, 0], min(c_r[0], c_l[0]), max(c_r[0], c_l[0]))
        chord = c_r[1] + (lip_u - c_r[0]) * (c_l[1] - c_r[1]) / max(c_l[0] - c_r[0], 1e-3)
        sag = np.zeros(n, np.float32)
        for name in ("up_in", "lo_in", "up_out", "lo_out"):
            sag[pos[name]] = meet_v(lip_u[pos[name]]) - chord[pos[name]]
        # Rounding releases the smile by bringing the corners down to the middle's level
        # (the middle stays: lifting it would bare the gum).
        sag_c = float(meet_v(np.array([0.5 * (c_r[0] + c_l[0])]))[0] - chord[pos["up_in"]].mean())
        unsmile = np.zeros(n, np.float32)
        for name in ("up_in", "lo_in", "up_out", "lo_out", "corner_in", "corner_out"):
            unsmile[pos[name]] = max(sag_c, 0.0) - sag[pos[name]]
        unsmile[pos["cheek"]] = 0.3 * max(sag_c, 0.0)
        bulge = np.zeros(n, np.float32)  # rounding opens the inner lips, fattens the outer
        bell = 1 - np.clip(ur, -1, 1) ** 2
        # (mostly the lower lip: the upper one hangs from the skull, over the teeth)
        bulge[pos["up_in"]] = -0.5 * ROUND_OPEN * W * bell[pos["up_in"]]
        bulge[pos["lo_in"]] = 1.5 * ROUND_OPEN * W * bell[pos["lo_in"]]
        bulge[pos["up_out"]] = -0.5 * ROUND_OPEN * W * bell[pos["up_out"]]  # the whole lip moves: it keeps its thickness
        bulge[pos["lo_out"]] = 1.5 * ROUND_OPEN * W * bell[pos["lo_out"]]

        # Eyelids: each upper lid point closes onto the lower lid below it.
        lid = np.zeros(n, np.float32)
        for side in ("r", "l"):
            upper, lower = pos[f"eye_{side}_up"], pos[f"eye_{side}_lo"]
            below = _interp_v(local[upper, 0], local[lower, 0], local[lower, 1])
            lid[upper] = LID_UPPER * (below - local[upper, 1])
            lid[lower] = -0.08 * (_interp_v(local[lower, 0], local[upper, 0], local[upper, 1]) - local[lower, 1])

        # Everything but the inner-lip pairing is linear in the parameters: precompute it as
        # displacement = rest + p @ A, with A (N_PARAMS, N, 2).
        du = np.zeros((N_PARAMS, n), np.float32)
        dv = np.zeros((N_PARAMS, n), np.float32)
        k = IDX
        upper = np.zeros(n, np.float32)
        upper[pos["up_in"]] = upper[pos["up_out"]] = 1.0
        dv[k["jaw_open"]] = JAW_DROP * W * wj - UPPER_LIFT * W * wu - OPEN_UNSAG * sag * upper
        dv[k["lip_tuck"]] = -1.5 * UPPER_LIFT * W * wu  # f, v bare the upper teeth
        du[k["lip_round"]] = -ROUND_IN * W * ur * wh
        dv[k["lip_round"]] = bulge + ROUND_UNSMILE * unsmile
        du[k["lip_spread"]] = SPREAD * W * ur * wh
        dv[k["lip_spread"]] = -0.02 * W * np.clip(ur, -1, 1) ** 2 * wh
        for side, name in (("r", "blink_r"), ("l", "blink_l")):
            idx = np.concatenate([pos[f"eye_{side}_up"], pos[f"eye_{side}_lo"]])
            dv[k[name], idx] = lid[idx]
        dv[k["brow_raise"], pos["brow"]] = -BROW_LIFT * H
        eye_w = float(np.linalg.norm(lm[133] - lm[33]) + np.linalg.norm(lm[263] - lm[362])) / 2
        irises = np.concatenate([pos["iris_r"], pos["iris_l"]])
        du[k["gaze_x"], irises] = GAZE_X * eye_w
        dv[k["gaze_y"], irises] = GAZE_Y * eye_w
        a = du[..., None] * g.u + dv[..., None] * g.v  # (P, N, 2)
        t = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32))  # noqa: E731
        self.register_buffer("u", t(g.u))
        self.register_buffer("v", t(g.v))
        self.register_buffer("rest_xy", t(rest[:, None] * g.v))  # (N, 2)
        self.register_buffer("A", t(a))
        # The pairing acts on the v-components of the inner lips; the outer lips follow it.
        self.lips = np.concatenate([pos["up_in"], pos["lo_in"], pos["up_out"], pos["lo_out"]])
        self.n_pair = len(pos["up_in"])
        assert len(pos["lo_in"]) == len(pos["up_out"]) == len(pos["lo_out"]) == self.n_pair
        pair = np.concatenate([pos["up_in"], pos["lo_in"]])
        self.register_buffer("pair_base_v", t(self.centres[pair] @ g.v + rest[pair]))  # (2K,)
        self.register_buffer("pair_av", t(dv[:, pair]))  # (P, 2K): linear v-motion of the pair
        self.register_buffer("i_lips", torch.as_tensor(self.lips))
        pair_u = np.clip(ur[pos["up_in"]], -1, 1)
        self.register_buffer("round_keep", t(np.sqrt(np.clip(1 - (pair_u / ROUND_HOLE) ** 2, 0, 1))))
        self.register_buffer("pair_bell", t(np.clip(1 - (pair_u / 0.8) ** 2, 0, 1)))  # the teeth's extent
        self.register_buffer("neck", t(g.neck))
        self.W, self.H = W, H
        self.n = n

    def linear(self, p: torch.Tensor) -> torch.Tensor:
        """(B, N, 2): the displacement before the inner lips are paired."""
        return self.rest_xy + (p @ self.A.view(p.shape[1], -1)).view(p.shape[0], self.n, 2)

    def lip_correction(self, p: torch.Tensor) -> torch.Tensor:
        """(B, 4K) v-corrections for the points `self.lips` (inner upper, inner lower, outer
        upper, outer lower): tuck lifts the lower lip to the teeth, press makes each inner
        upper/lower pair (the mesh pairs them column-wise) meet, and lips never cross."""
        k = self.n_pair
        press = p[:, IDX["lip_press"], None]
        tuck = p[:, IDX["lip_tuck"], None]
        rnd = p[:, IDX["lip_round"], None]
        v = self.pair_base_v + p @ self.pair_av  # (B, 2K) positions along v
        up0, lo = v[:, :k], v[:, k:]
        up = up0
        # f, v: the lower lip comes up under the upper teeth, a band of them showing above it
        new_lo = lo + tuck * (up + TUCK_SHOW * self.W * self.pair_bell - lo)
        # rounding purses the lips: the opening shrinks to a small round hole in the middle
        purse = rnd * (1 - self.round_keep)
        mid = 0.5 * (up + new_lo)
        up = up + purse * (mid - up)
        new_lo = new_lo + purse * (mid - new_lo)
        mid = 0.5 * (up + new_lo)
        new_up = up + press * (mid - up)
        new_lo = new_lo + press * (mid - new_lo)
        mid = 0.5 * (new_up + new_lo)
        crossed = new_lo < new_up
        new_up = torch.where(crossed, mid, new_up)
        new_lo = torch.where(crossed, mid, new_lo)
        c_up, c_lo = new_up - up0, new_lo - lo
        return torch.cat([c_up, c_lo, 0.5 * c_up, 0.7 * c_lo], 1)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        """Displacements (B, N, 2) in image pixels for parameters p (B, N_PARAMS)."""
        disp = self.linear(p).clone()
        disp[:, self.i_lips] += self.lip_correction(p)[..., None] * self.v
        return disp

    def head_turn(self, p: torch.Tensor) -> torch.Tensor:
        """(B, 2): image displacement per pixel of depth for the head's yaw and pitch."""
        yaw = p[:, IDX["head_yaw"]] * (math.pi / 180.0)
        pitch = p[:, IDX["head_pitch"]] * (math.pi / 180.0)
        return torch.sin(yaw)[:, None] * self.u + torch.sin(pitch)[:, None] * self.v

    def head_affine(self, p: torch.Tensor, frame_size: int) -> torch.Tensor:
        """Forward head motion as (B, 2, 3) affine maps of image points (rotation about the neck)."""
        g = self.geom
        yaw = p[:, IDX["head_yaw"]] * (math.pi / 180.0)
        pitch = p[:, IDX["head_pitch"]] * (math.pi / 180.0)
        roll = p[:, IDX["head_roll"]] * (math.pi / 180.0)
        t = (torch.sin(yaw)[:, None] * HEAD_REACH * g.face_width * self.u
             + torch.sin(pitch)[:, None] * HEAD_REACH * g.face_height * self.v
             - p[:, IDX["breath"], None] * BREATH_PX * frame_size * self.v)
        c, s = torch.cos(roll), torch.sin(roll)
        rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (B, 2, 2)
        offset = self.neck - (rot @ self.neck) + t  # x' = R (x - n) + n + t
        return torch.cat([rot, offset[..., None]], -1)
