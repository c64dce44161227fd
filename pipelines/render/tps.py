"""Thin-plate-spline interpolation, precomputed as one matrix.

The renderer moves a few hundred control points per frame and needs a dense, smooth field.
A TPS through fixed centres is linear in the displacements, so `tps_matrix` folds the solve
and the kernel evaluation into a (grid points x centres) matrix once per avatar; each frame
is then a single matmul.
"""
from __future__ import annotations

import numpy as np


def _kernel(r2: np.ndarray) -> np.ndarray:
    # U(r) = r^2 log r = 0.5 r^2 log r^2, with U(0) = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        k = 0.5 * r2 * np.log(r2)
    return np.nan_to_num(k, nan=0.0, posinf=0.0, neginf=0.0)


def tps_matrix(centres: np.ndarray, queries: np.ndarray, *, scale: float, smoothing: float = 1e-4) -> np.ndarray:
    """Matrix M (Q, N) such that M @ d interpolates displacements d (N, k) given at `centres`
    (N, 2) onto `queries` (Q, 2). `scale` normalises coordinates (conditioning); `smoothing`
    trades exactness at the centres for a gentler field."""
    c = centres.astype(np.float64) / scale
    q = queries.astype(np.float64) / scale
    n = len(c)
    k = _kernel(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)) + smoothing * np.eye(n)
    p = np.hstack([np.ones((n, 1)), c])
    lhs = np.zeros((n + 3, n + 3))
    lhs[:n, :n], lhs[:n, n:], lhs[n:, :n] = k, p, p.T
    # coefficients = inv(lhs)[:, :n] @ d ; evaluate kernel and affine part at the queries
    inv = np.linalg.solve(lhs, np.vstack([np.eye(n), np.zeros((3, n))]))
    kq = _kernel(((q[:, None, :] - c[None, :, :]) ** 2).sum(-1))
    pq = np.hstack([np.ones((len(q), 1)), q])
    return (np.hstack([kq, pq]) @ inv).astype(np.float32)
