"""The audio-to-motion model: a small causal transformer from log-mel features to the mouth
parameters, with several look-ahead heads.

Tokens are 20 ms of audio (two 10 ms log-mel frames, see pipelines/audio/features.py).
Attention is causal over a sliding window of `window` tokens with a learned relative
position bias, so a stream can be processed token by token with a bounded cache and give
exactly what the whole sequence gives (`StreamingAudioToMotion`).

Look-ahead: token k's audio ends at `token_end(k)`; head h predicts the mouth at
`token_centre(k) - lookahead[h]`, i.e. with `lookahead[h]` of audio after the moment it
describes. One network, one head per look-ahead (0, 20, ..., 120 ms): the look-ahead is a
runtime choice, and the latency it adds is exactly that much.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipelines.audio.features import HOP, N_MELS, SAMPLE_RATE, WINDOW

if TYPE_CHECKING:
    from .streaming_onnx import OnnxStep

FRAMES_PER_TOKEN = 2
TOKEN_S = FRAMES_PER_TOKEN * HOP / SAMPLE_RATE  # 0.02
N_MOUTH = 5


def token_end(k: np.ndarray | int) -> np.ndarray:
    """Seconds of audio needed before token k can be computed."""
    return ((np.asarray(k) * FRAMES_PER_TOKEN + FRAMES_PER_TOKEN - 1) * HOP + WINDOW) / SAMPLE_RATE


def token_centre(k: np.ndarray | int) -> np.ndarray:
    """The instant token k's audio is centred on."""
    first = np.asarray(k) * FRAMES_PER_TOKEN * HOP
    last = first + (FRAMES_PER_TOKEN - 1) * HOP + WINDOW
    return (first + last) / 2 / SAMPLE_RATE


@dataclass
class ModelConfig:
    d_model: int = 160
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 480
    window: int = 64  # tokens of context (1.28 s)
    lookaheads_ms: list[int] = field(default_factory=lambda: [0, 20, 40, 60, 80, 100, 120])
    dropout: float = 0.1
    press_gain: float = 1.0  # inference only (see `calibrated`); set by calibration after training

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class _Block(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.c = c
        self.n1 = nn.LayerNorm(c.d_model)
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.proj = nn.Linear(c.d_model, c.d_model)
        self.n2 = nn.LayerNorm(c.d_model)
        self.ff = nn.Sequential(nn.Linear(c.d_model, c.d_ff), nn.GELU(), nn.Linear(c.d_ff, c.d_model))
        self.drop = nn.Dropout(c.dropout)
        self.rel_bias = nn.Parameter(torch.zeros(c.n_heads, c.window))  # by distance 0..window-1
        self._bias_cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def _bias(self, tq: int, tk: int, device: torch.device) -> torch.Tensor:
        """(1, H, Tq, Tk) additive attention bias: relative position, causal, windowed.
        Streaming asks for the same few shapes over and over: cached while not training."""
        key = (tq, tk, device)
        if not self.training and key in self._bias_cache:
            return self._bias_cache[key]
        qpos = torch.arange(tk - tq, tk, device=device)
        dist = qpos[:, None] - torch.arange(tk, device=device)[None, :]
        allowed = (dist >= 0) & (dist < self.c.window)
        bias = self.rel_bias[:, dist.clamp(0, self.c.window - 1)].masked_fill(~allowed, float("-inf"))[None]
        if not self.training:
            self._bias_cache[key] = bias.detach()
        return bias

    def train(self, mode: bool = True) -> _Block:
        self._bias_cache.clear()  # the bias changes while training
        return super().train(mode)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, d = x.shape
        h = self.c.n_heads
        q, k, v = self.qkv(self.n1(x)).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k = torch.cat([cache[0], k], 2)
            v = torch.cat([cache[1], v], 2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=self._bias(t, k.shape[2], x.device))
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        x = x + self.drop(self.ff(self.n2(x)))
        keep = self.c.window - 1  # a future query needs at most window-1 past keys
        return x, (k[:, :, -keep:], v[:, :, -keep:])


class AudioToMotion(nn.Module):
    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or ModelConfig()
        self.register_buffer("feat_mean", torch.zeros(N_MELS))
        self.register_buffer("feat_std", torch.ones(N_MELS))
        self.inp = nn.Linear(FRAMES_PER_TOKEN * N_MELS, c.d_model)
        self.blocks = nn.ModuleList(_Block(c) for _ in range(c.n_layers))
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, len(c.lookaheads_ms) * N_MOUTH)

    def tokens(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, F, N_MELS) log-mel -> (B, F // 2, 2 * N_MELS) normalised token inputs."""
        b, f, _ = feats.shape
        f = f - f % FRAMES_PER_TOKEN
        x = (feats[:, :f] - self.feat_mean) / self.feat_std
        return x.reshape(b, f // FRAMES_PER_TOKEN, FRAMES_PER_TOKEN * N_MELS)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, F, N_MELS) -> (B, T, n_heads, N_MOUTH) in [0, 1], T = F // 2."""
        out, _ = self.step(self.tokens(feats), None)
        return out

    def step(self, tokens: torch.Tensor, caches: list[tuple[torch.Tensor, torch.Tensor]] | None,
             ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        x = self.inp(tokens)
        new = []
        for i, blk in enumerate(self.blocks):
            x, c = blk(x, None if caches is None else caches[i])
            new.append(c)
        y = torch.sigmoid(self.head(self.norm(x)))
        return y.view(*y.shape[:2], len(self.config.lookaheads_ms), N_MOUTH), new

    @torch.inference_mode()
    def predict(self, feats: torch.Tensor) -> torch.Tensor:
        """forward() plus what inference adds (see `calibrated`)."""
        return calibrated(self(feats), feats, self.config.press_gain)

    def head_index(self, lookahead_ms: int) -> int:
        try:
            return self.config.lookaheads_ms.index(lookahead_ms)
        except ValueError:
            raise ValueError(f"look-ahead {lookahead_ms} ms not available; choose one of "
                             f"{self.config.lookaheads_ms}") from None

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


JAW_DEADBAND = 0.04  # the model's jaw at rest sits a little above 0 (a squared-error bias)
SILENCE_LOGMEL = -13.5  # mean log-mel of a token this low is digital silence (floor: -13.8)


def calibrated(y: torch.Tensor, feats: torch.Tensor, press_gain: float = 1.0) -> torch.Tensor:
    """What inference adds to the network's outputs.

    - A still, closed mouth where there is nothing to hear: subtract the jaw's small resting
      bias, and gate everything to rest on digital silence (muted microphones, padding).
    - Lip press times `press_gain` (clipped at 1): the press head is trained as a probability
      (cross-entropy), and on noisy audio it says "probably closed" (0.6) where the lips
      should close; the gain turns that probability into a press amount. It is chosen after
      training on voices seen in training but sentences that were not (`calibrate.py`),
      never on the held-out evaluation voices.
    Per token, from that token's own features: streaming and whole-signal agree."""
    b, t = y.shape[:2]
    f = feats[:, : 2 * t].reshape(b, t, -1).mean(-1)  # (B, T) mean log-mel of each token
    gate = ((f - SILENCE_LOGMEL) / 0.3).clamp(0.0, 1.0)[..., None, None]
    jaw = ((y[..., :1] - JAW_DEADBAND) / (1 - JAW_DEADBAND)).clamp_min(0.0)
    press = (y[..., 1:2] * press_gain).clamp_max(1.0)
    return torch.cat([jaw, press, y[..., 2:]], -1) * gate  # no in-place write: exports to ONNX cleanly


class StreamingAudioToMotion:
    """Feed 16 kHz audio in chunks of any size; get mouth parameters for each completed token
    as (times, params) — time = the instant the parameters describe. Holds the log-mel tail,
    an odd leftover feature frame and each layer's key/value cache (window - 1 tokens).

    With `step` (an `OnnxStep` of the same model) the transformer runs in onnxruntime, ~3x
    cheaper per chunk than eager torch (see streaming_onnx.py); without it, in torch."""

    def __init__(self, model: AudioToMotion, lookahead_ms: int, step: OnnxStep | None = None) -> None:
        from pipelines.audio.features import StreamingLogMel

        self.model = model
        self.head = model.head_index(lookahead_ms)
        self.lookahead_s = lookahead_ms / 1000
        self.mel = StreamingLogMel()
        self._pending = np.zeros((0, N_MELS), np.float32)
        self._caches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._step = step
        if step is not None:
            self._past_k, self._past_v, self._key_pad = step.empty_cache()
        self.tokens_out = 0

    @torch.inference_mode()
    def push(self, samples_16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feats = np.concatenate([self._pending, self.mel.push(samples_16k)])
        n = len(feats) - len(feats) % FRAMES_PER_TOKEN
        self._pending = feats[n:]
        if n == 0:
            return np.zeros(0), np.zeros((0, N_MOUTH), np.float32)
        if self._step is not None:
            y_all, self._past_k, self._past_v = self._step.run(feats[:n], self._past_k, self._past_v, self._key_pad)
            y = y_all[:, self.head]
            seen = min(self.tokens_out + len(y), self._step.past)
            self._key_pad[self._step.past - seen:] = 0.0  # those cache slots now hold real tokens
        else:
            f = torch.from_numpy(feats[:n])[None].to(self.model.feat_mean.device)
            yt, self._caches = self.model.step(self.model.tokens(f), self._caches)
            y = calibrated(yt, f, self.model.config.press_gain)[0, :, self.head].cpu().numpy()
        k = np.arange(self.tokens_out, self.tokens_out + len(y))
        self.tokens_out += len(y)
        return token_centre(k) - self.lookahead_s, y


def infer(model: AudioToMotion, samples_16k: np.ndarray, lookahead_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Whole-signal inference: (times, params (T, 5))."""
    from pipelines.audio.features import log_mel

    feats = torch.from_numpy(log_mel(samples_16k))[None].to(model.feat_mean.device)
    y = model.predict(feats)[0, :, model.head_index(lookahead_ms)].cpu().numpy()
    return token_centre(np.arange(len(y))) - lookahead_ms / 1000, y


def count_parameters_m(config: ModelConfig) -> float:
    return AudioToMotion(config).n_parameters() / 1e6


__all__ = ["AudioToMotion", "ModelConfig", "StreamingAudioToMotion", "infer", "token_centre", "token_end",
           "TOKEN_S", "N_MOUTH", "math"]


def load_audio_model(directory: str | None = None) -> tuple[AudioToMotion, dict[str, object]]:
    """The shipped (or a given directory's) audio-to-motion model, hash-checked."""
    from safetensors.torch import load_file

    from engines.weights import verified_weights

    path, manifest = verified_weights("audio2motion", directory)
    model = AudioToMotion(ModelConfig(**manifest["model"]))  # type: ignore[arg-type]
    model.load_state_dict(load_file(path))
    return model.eval(), manifest
