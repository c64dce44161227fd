"""The audio-to-motion model's streaming step as one ONNX Runtime graph.

Why: a live stream feeds the model two 20 ms tokens at a time. For so little data, eager
PyTorch spends its time dispatching ~130 small operators (≈ 20 µs each on this CPU), not
computing: 2–3 ms per 40 ms of audio. The same step exported once to ONNX and run by
onnxruntime (already a dependency: the piper voice runs on it) costs a fraction of that.

The graph has fixed-size caches so it can be exported once: each layer keeps the keys and
values of the last `window - 1` tokens, and a key mask says which of those slots hold real
tokens (none at the start of a stream). Masked slots get -inf attention, so a fresh stream
gives exactly what the eager step with an empty cache gives (tested against whole-signal
inference).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .audio_model import FRAMES_PER_TOKEN, N_MOUTH, AudioToMotion, calibrated


class _Step(nn.Module):
    """feats (1, 2T, N_MELS), past_k/past_v (L, H, P, dh), key_pad (P,) additive
    -> params (T, n_heads, N_MOUTH) after `calibrated`, new past_k, new past_v."""

    def __init__(self, model: AudioToMotion) -> None:
        super().__init__()
        self.m = model
        c = model.config
        self.P = c.window - 1
        self.W = c.window
        self.H = c.n_heads
        self.dh = c.d_model // c.n_heads

    def forward(self, feats: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor,
                key_pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m, P, H, dh = self.m, self.P, self.H, self.dh
        x = m.inp(m.tokens(feats))[0]  # (T, D)
        t = x.shape[0]
        dist = (torch.arange(t)[:, None] + P) - torch.arange(P + t)[None, :]  # (T, P+T)
        allowed = (dist >= 0) & (dist < self.W)
        idx = dist.clamp(0, self.W - 1)
        pad = torch.cat([key_pad, torch.zeros(t, dtype=key_pad.dtype)])[None, None]  # (1, 1, P+T)
        scale = 1.0 / math.sqrt(dh)
        ks, vs = [], []
        for i, blk in enumerate(m.blocks):
            q, k, v = blk.qkv(blk.n1(x)).view(t, 3, H, dh).permute(1, 2, 0, 3)  # (H, T, dh) each
            k = torch.cat([past_k[i], k], 1)
            v = torch.cat([past_v[i], v], 1)
            bias = blk.rel_bias[:, idx].masked_fill(~allowed, float("-inf")) + pad  # (H, T, P+T)
            a = torch.softmax(q @ k.transpose(1, 2) * scale + bias, -1) @ v  # (H, T, dh)
            x = x + blk.proj(a.transpose(0, 1).reshape(t, H * dh))
            x = x + blk.ff(blk.n2(x))
            ks.append(k[:, -P:])
            vs.append(v[:, -P:])
        y = torch.sigmoid(m.head(m.norm(x)))
        y = calibrated(y.view(1, t, len(m.config.lookaheads_ms), N_MOUTH), feats, m.config.press_gain)[0]
        return y, torch.stack(ks), torch.stack(vs)


def export_step(model: AudioToMotion) -> bytes:
    """The step as an ONNX model (bytes). Takes about a second; done once per loaded model."""
    c = model.config
    P, H, dh = c.window - 1, c.n_heads, c.d_model // c.n_heads
    step = _Step(model).eval()
    feats = torch.zeros(1, 2 * FRAMES_PER_TOKEN, model.feat_mean.shape[0])
    past = torch.zeros(c.n_layers, H, P, dh)
    buf = io.BytesIO()
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(step, (feats, past, past, torch.zeros(P)), buf, dynamo=False, opset_version=17,
                          input_names=["feats", "past_k", "past_v", "key_pad"],
                          output_names=["params", "new_k", "new_v"],
                          dynamic_axes={"feats": {1: "frames"}, "params": {0: "tokens"}})
    return buf.getvalue()


@dataclass
class OnnxStep:
    """One onnxruntime session for a model's streaming step; shared by every stream (its
    `run` is thread-safe), each stream holding its own caches."""

    session: object
    layers: int
    heads: int
    past: int
    head_dim: int

    @classmethod
    def build(cls, model: AudioToMotion) -> OnnxStep:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(export_step(model), opts, providers=["CPUExecutionProvider"])
        c = model.config
        return cls(sess, c.n_layers, c.n_heads, c.window - 1, c.d_model // c.n_heads)

    def empty_cache(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        z = np.zeros((self.layers, self.heads, self.past, self.head_dim), np.float32)
        return z, z.copy(), np.full(self.past, -np.inf, np.float32)

    def run(self, feats: np.ndarray, past_k: np.ndarray, past_v: np.ndarray, key_pad: np.ndarray,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y, k, v = self.session.run(None, {"feats": feats[None], "past_k": past_k, "past_v": past_v,  # type: ignore[attr-defined]
                                          "key_pad": key_pad})
        return y, k, v
