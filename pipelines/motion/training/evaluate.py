"""How well the audio-to-motion model does, on voices it never heard, with call-like
degradation — and how a plain loudness envelope does on the same audio.

Figures per look-ahead (all at the model's 50 Hz token rate unless said):
  jaw_r            Pearson r of predicted vs target jaw_open
  closure_recall   share of target bilabial closures (target lip_press >= 0.9, at 25 fps)
                   where the predicted lips are closed (see `closed`) within one video frame
  closure_precision share of predicted closures (at 25 fps) that fall within one frame of a
                   target closure (so "always closed" cannot score)
  lag_ms           lag of the peak cross-correlation of predicted vs target jaw (+ = late)
  rest_jaw         mean predicted jaw_open over target silence (stability at rest)
"""
from __future__ import annotations

import numpy as np
import torch

from pipelines.motion.audio_model import AudioToMotion

from .dataset import Example

CLOSED_OPENING, TARGET_PRESS = 0.08, 0.9


def closed(params: np.ndarray) -> np.ndarray:
    """Lips closed: the inner-lip opening the renderer draws, jaw_open * (1 - lip_press), is
    under 8 % of a full jaw drop (about 2 px at 512x512)."""
    return params[:, 0] * (1 - params[:, 1]) <= CLOSED_OPENING


def _events(mask: np.ndarray) -> list[tuple[int, int]]:
    ev, start = [], None
    for i, m in enumerate(np.append(mask, False)):
        if m and start is None:
            start = i
        elif not m and start is not None:
            ev.append((start, i - 1))
            start = None
    return ev


def closure_scores(pred25: np.ndarray, targ25: np.ndarray) -> tuple[int, int, int, int]:
    """(recalled, target events, predicted events near a target, predicted events)."""
    t_ev = _events(targ25[:, 1] >= TARGET_PRESS)
    p_closed = closed(pred25)
    speaking = np.convolve(targ25[:, 0] > 0.15, np.ones(25), "same") > 0  # ignore long silences
    p_ev = _events(p_closed & speaking)
    near_t = np.zeros(len(targ25), bool)
    for s, e in t_ev:
        near_t[max(s - 1, 0): e + 2] = True
    recalled = sum(bool(p_closed[max(s - 1, 0): e + 2].any()) for s, e in t_ev)
    precise = sum(bool(near_t[s: e + 1].any()) for s, e in p_ev)
    return recalled, len(t_ev), precise, len(p_ev)


def to25(x: np.ndarray) -> np.ndarray:
    """Token-rate (50 Hz) series -> video frames at 25 fps (mean of each pair)."""
    n = len(x) // 2
    return x[: 2 * n].reshape(n, 2, *x.shape[1:]).mean(1)


def xcorr_lag(a: np.ndarray, b: np.ndarray, max_lag: int = 10) -> int:
    best, arg = -2.0, 0
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[lag:], b[: len(b) - lag]) if lag >= 0 else (a[:lag], b[-lag:])
        if len(x) > 10 and x.std() > 0 and y.std() > 0:
            r = float(np.corrcoef(x, y)[0, 1])
            if r > best:
                best, arg = r, lag
    return arg


def loudness_tokens(audio16: np.ndarray, n_tokens: int) -> np.ndarray:
    """RMS loudness in dB per 20 ms token, aligned with the model's token centres."""
    from pipelines.motion.audio_model import token_centre

    centres = token_centre(np.arange(n_tokens))
    out = np.empty(n_tokens)
    for k, c in enumerate(centres):
        a, b = int((c - 0.0125) * 16000), int((c + 0.0125) * 16000)
        seg = audio16[max(a, 0): max(b, 1)]
        out[k] = 10 * np.log10(np.mean(seg.astype(np.float64) ** 2) + 1e-10)
    return out


class LoudnessBaseline:
    """jaw = a * loudness_dB + b (clipped), fitted by least squares on training audio; the
    lips count as closed when that jaw is below the same threshold as the model's."""

    def __init__(self, a: float = 0.02, b: float = 1.0) -> None:
        self.a, self.b = a, b

    def fit(self, examples: list[tuple[np.ndarray, np.ndarray]]) -> LoudnessBaseline:
        xs, ys = [], []
        for audio, targets in examples:
            loud = loudness_tokens(audio, len(targets))
            rel = np.maximum(loud - loud.max(), -60)
            xs.append(rel)
            ys.append(targets[:, 0])
        x, y = np.concatenate(xs), np.concatenate(ys)
        self.a, self.b = np.polyfit(x, y, 1)
        return self

    def predict(self, audio16: np.ndarray, n_tokens: int) -> np.ndarray:
        loud = loudness_tokens(audio16, n_tokens)
        jaw = np.clip(self.a * np.maximum(loud - loud.max(), -60) + self.b, 0, 1)
        out = np.zeros((n_tokens, 5), np.float32)
        out[:, 0] = jaw
        return out


def _figures(preds: list[np.ndarray], targs: list[np.ndarray]) -> dict[str, float]:
    jp, jt = np.concatenate([p[:, 0] for p in preds]), np.concatenate([t[:, 0] for t in targs])
    lags = [xcorr_lag(p[:, 0], t[:, 0]) for p, t in zip(preds, targs, strict=True)]
    rec = tot = prec = ptot = 0
    for p, t in zip(preds, targs, strict=True):
        a, b, c, d = closure_scores(to25(p), to25(t))
        rec, tot, prec, ptot = rec + a, tot + b, prec + c, ptot + d
    rest = jt < 0.01
    return {"jaw_r": float(np.corrcoef(jp, jt)[0, 1]), "closure_recall": rec / max(tot, 1),
            "closure_precision": prec / max(ptot, 1), "closures": tot,
            "lag_ms": float(np.median(lags) * 20), "rest_jaw": float(jp[rest].mean()) if rest.any() else 0.0}


def evaluate_all(model: AudioToMotion, eval_set: list[Example], train_set: list[Example] | None = None,
                 baseline: LoudnessBaseline | None = None) -> dict[str, object]:
    """Figures per look-ahead for the model, and for the loudness baseline (look-ahead 0)."""
    model.eval()
    heads = model.config.lookaheads_ms
    out: dict[str, object] = {"voices": sorted({e.voice for e in eval_set}), "utterances": len(eval_set)}
    with torch.inference_mode():
        raw = [model.predict(torch.from_numpy(e.feats.astype(np.float32))[None])[0].numpy() for e in eval_set]
    for h, la in enumerate(heads):
        preds = [r[:, h] for r in raw]
        targs = [e.targets.astype(np.float32)[: len(r), h] for e, r in zip(eval_set, raw, strict=True)]
        out[f"model_lookahead_{la}ms"] = _figures(preds, targs)
    if baseline is None:
        fit_on = [(e.audio, e.targets[:, 0].astype(np.float32)) for e in eval_set if e.audio is not None]
        baseline = LoudnessBaseline().fit(fit_on[: len(fit_on) // 2]) if fit_on else LoudnessBaseline()
    audio_ex = [e for e in eval_set if e.audio is not None]
    if audio_ex:
        preds = [baseline.predict(e.audio, len(e.targets)) for e in audio_ex]
        targs = [e.targets.astype(np.float32)[:, 0] for e in audio_ex]
        out["loudness_baseline"] = _figures(preds, targs)
        out["loudness_baseline"]["fit"] = {"a": float(baseline.a), "b": float(baseline.b)}  # type: ignore[index]
    return out
