"""`avatar train motion`: generate data, train the audio-to-motion model, evaluate it on the
held-out voices, write the checkpoint (safetensors) and its manifest. Seeded, CPU."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from safetensors.torch import save_file

from pipelines.audio.features import LOG_FLOOR, N_MELS
from pipelines.motion.audio_model import AudioToMotion, ModelConfig

from . import dataset as ds

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    steps: int = 5000
    batch: int = 24
    seq_tokens: int = 150  # 3 s crops
    lr: float = 1.5e-3
    warmup: int = 150
    weight_decay: float = 0.01
    seed: int = 1234
    threads: int = 2
    press_weight: float = 4.0  # a closure weighs 1 + 2 * 4 = 9x in the gesture loss (2.0: jaw r 0.796, BENCHMARKS.md)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: ds.DataConfig = field(default_factory=ds.DataConfig)


def _batch(examples: list[ds.Example], rng: np.random.Generator, b: int, t: int,
           n_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    feats = np.full((b, 2 * t, N_MELS), math.log(LOG_FLOOR), np.float32)  # padding = silence
    targ = np.zeros((b, t, n_heads, 5), np.float32)  # ... whose target is rest
    for i in range(b):
        e = examples[int(rng.integers(len(examples)))]
        n = len(e.targets)
        start = int(rng.integers(0, max(n - t, 0) + 1))
        k = min(t, n - start)
        feats[i, : 2 * k] = e.feats[2 * start: 2 * (start + k)]
        targ[i, :k] = e.targets[start: start + k]
    return torch.from_numpy(feats), torch.from_numpy(targ)


def loss_fn(pred: torch.Tensor, target: torch.Tensor, press_weight: float) -> torch.Tensor:
    """Squared error on the continuous parameters (jaw, round, spread) and weighted binary
    cross-entropy on the all-or-nothing gestures (press, tuck).

    Not L1: its optimum is the median, and the gestures are zero most of the time, so an L1
    model learns never to close the lips (the first model did: closure recall 0.2)."""
    cont = [0, 2, 3]
    mse = ((pred[..., cont] - target[..., cont]) ** 2).mean()
    gest = [1, 4]
    p = pred[..., gest].clamp(1e-5, 1 - 1e-5)
    t = target[..., gest]
    weight = 1.0 + (press_weight * 2.0) * t  # closures are rare and short: count them more
    bce = (weight * -(t * torch.log(p) + (1 - t) * torch.log(1 - p))).mean()
    dp, dt = pred[:, 1:] - pred[:, :-1], target[:, 1:] - target[:, :-1]  # match motion, not only pose
    return mse + 0.25 * bce + 2.0 * ((dp - dt) ** 2).mean()


def get_data(cfg: ds.DataConfig, progress: Callable[[str, int, int], None]
             ) -> tuple[list[ds.Example], dict[str, list[ds.Example]]]:
    """The training set and one evaluation set per severity, cached by configuration."""
    path = ds.cache_path(cfg, "train")
    if os.path.exists(path):
        train = ds.load(path)
    else:
        train = ds.build_training_set(cfg, lambda i, n: progress("data", i, n))
        ds.save(train, path)
    return train, {sev.name: eval_set(cfg, sev, progress) for sev in ds.EVAL_SEVERITIES}


def eval_set(cfg: ds.DataConfig, severity: ds.Severity, progress: Callable[[str, int, int], None]) -> list[ds.Example]:
    path = ds.cache_path(cfg, f"eval-{severity.name}")
    if os.path.exists(path):
        return ds.load(path)
    progress(f"eval data ({severity.name})", 0, 1)
    ev = ds.build_eval_set(cfg, severity=severity)
    ds.save(ev, path)
    progress(f"eval data ({severity.name})", 1, 1)
    return ev


def evaluate_severities(model: AudioToMotion, sets: dict[str, list[ds.Example]]) -> dict[str, object]:
    from .evaluate import evaluate_all

    return {name: evaluate_all(model, examples) for name, examples in sets.items()}


def train(cfg: TrainConfig, out_dir: str, progress: Callable[[str, int, int], None]) -> dict[str, object]:
    t_start = time.time()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    cfg.model.lookaheads_ms = list(cfg.data.lookaheads_ms)
    train_set, eval_sets = get_data(cfg.data, progress)
    t_data = time.time() - t_start
    model = AudioToMotion(cfg.model)
    allf = np.concatenate([e.feats for e in train_set[:: max(1, len(train_set) // 500)]]).astype(np.float32)
    model.feat_mean.copy_(torch.from_numpy(allf.mean(0)))
    model.feat_std.copy_(torch.from_numpy(allf.std(0) + 1e-3))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup)
                                              * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    rng = np.random.default_rng(cfg.seed)
    n_heads = len(cfg.model.lookaheads_ms)
    model.train()
    losses = []
    for step in range(cfg.steps):
        x, y = _batch(train_set, rng, cfg.batch, cfg.seq_tokens, n_heads)
        loss = loss_fn(model(x), y, cfg.press_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        progress(f"train (loss {np.mean(losses[-50:]):.4f})", step + 1, cfg.steps)
    model.eval()
    t_train = time.time() - t_start - t_data
    from .calibrate import calibrate_press

    calibration = calibrate_press(model, cfg.data, progress)  # sets model.config.press_gain
    progress("evaluate", 0, 1)
    figures = evaluate_severities(model, eval_sets)
    progress("evaluate", 1, 1)
    return write_checkpoint(model, cfg, figures, out_dir, {"data_s": round(t_data, 1), "train_s": round(t_train, 1),
                                                           "total_s": round(time.time() - t_start, 1),
                                                           "final_loss": float(np.mean(losses[-100:]))},
                            calibration)


def write_checkpoint(model: AudioToMotion, cfg: TrainConfig, figures: dict[str, object], out_dir: str,
                     timing: dict[str, float], calibration: dict[str, object] | None = None) -> dict[str, object]:
    os.makedirs(out_dir, exist_ok=True)
    weights = os.path.join(out_dir, "audio2motion.safetensors")
    tmp = weights + ".partial"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, weights)
    with open(weights, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    manifest = {
        "name": "audio2motion",
        "file": os.path.basename(weights),
        "sha256": digest,
        "bytes": os.path.getsize(weights),
        "parameters": model.n_parameters(),
        "model": model.config.to_dict(),
        "training": {k: v for k, v in asdict(cfg).items() if k not in ("model", "data")},
        "data": asdict(cfg.data),
        "held_out_voices": list(ds.HELD_OUT),
        "calibration": calibration,
        "evaluation": figures,
        "timing": timing,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "command": "avatar train motion",
    }
    path = os.path.join(out_dir, "audio2motion.json")
    with open(path + ".partial", "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(path + ".partial", path)
    return manifest
