"""The lip-press gain, chosen after training on voices the model was trained on, speaking
sentences it was not, with call-like degradation — never on the held-out evaluation voices.

The press head is trained with cross-entropy, so it outputs a probability of a closure; on
noisy audio a real closure often reads 0.5-0.7 and the lips stop short of touching. Inference
multiplies press by a gain (`calibrated` in audio_model.py). The gain kept is the one with the
best closure F1 (recall and precision as evaluate.py counts them) at the default look-ahead,
among those that keep the correlation of the visible lip opening with the target's within
0.01 of no gain: lips that close on b, p and m, without a mouth that looks half shut.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from pipelines.motion.audio_model import AudioToMotion, calibrated

from . import dataset as ds
from .augment import CALL
from .evaluate import closure_scores, to25

# Same make-up as dataset.HELD_OUT (accents, a female and a klatt voice, the piper voice),
# but voices that training uses.
CALIBRATION_VOICES = ("en-us+m1", "en-gb-x-rp+f2", "en-us+steph", "en-gb-scotland+m2", "en-029+klatt", "joe@1.07")
GAINS = tuple(round(1.0 + 0.1 * i, 2) for i in range(11))  # 1.0 ... 2.0
SALT = 1000  # other sentences and degradations than the evaluation set's


def calibration_set(cfg: ds.DataConfig, progress: Callable[[str, int, int], None]) -> list[ds.Example]:
    path = ds.cache_path(cfg, "calibration-call")
    if os.path.exists(path):
        return ds.load(path)
    progress("calibration data", 0, 1)
    examples = ds.build_eval_set(cfg, CALIBRATION_VOICES, CALL, salt=SALT)
    ds.save(examples, path)
    progress("calibration data", 1, 1)
    return examples


def press_gain_table(model: AudioToMotion, examples: list[ds.Example], lookahead_ms: int = 80,
                     gains: tuple[float, ...] = GAINS) -> list[dict[str, float]]:
    """Closure recall, precision, F1 and lip-opening r for each gain."""
    h = model.head_index(lookahead_ms)
    model.eval()
    with torch.inference_mode():
        runs = []
        for e in examples:
            f = torch.from_numpy(e.feats.astype(np.float32))[None]
            runs.append((model(f), f, e.targets.astype(np.float32)))
        rows = []
        for g in gains:
            rec = tot = prec = ptot = 0
            op_p, op_t = [], []
            for raw, f, targ in runs:
                p = calibrated(raw, f, g)[0, :, h].numpy()
                t = targ[: len(p), h]
                a, b, c, d = closure_scores(to25(p), to25(t))
                rec, tot, prec, ptot = rec + a, tot + b, prec + c, ptot + d
                op_p.append(p[:, 0] * (1 - p[:, 1]))
                op_t.append(t[:, 0] * (1 - t[:, 1]))
            r, pr = rec / max(tot, 1), prec / max(ptot, 1)
            rows.append({"gain": g, "closure_recall": r, "closure_precision": pr,
                         "f1": 2 * r * pr / max(r + pr, 1e-9),
                         "opening_r": float(np.corrcoef(np.concatenate(op_p), np.concatenate(op_t))[0, 1])})
    return rows


def choose_press_gain(rows: list[dict[str, float]], max_opening_loss: float = 0.01) -> float:
    base = next(r for r in rows if r["gain"] == 1.0)["opening_r"]
    ok = [r for r in rows if r["opening_r"] >= base - max_opening_loss]
    return float(max(ok, key=lambda r: r["f1"])["gain"])


def calibrate_press(model: AudioToMotion, cfg: ds.DataConfig, progress: Callable[[str, int, int], None],
                    lookahead_ms: int = 80) -> dict[str, object]:
    """Choose the gain, set it on the model's config, and say how it was chosen (manifest)."""
    examples = calibration_set(cfg, progress)
    progress("calibrate", 0, 1)
    rows = press_gain_table(model, examples, lookahead_ms)
    gain = choose_press_gain(rows)
    model.config.press_gain = gain
    progress("calibrate", 1, 1)
    return {"press_gain": gain, "voices": list(CALIBRATION_VOICES), "utterances": len(examples),
            "severity": CALL.name, "lookahead_ms": lookahead_ms,
            "rule": "best closure F1 with lip-opening r within 0.01 of gain 1.0", "table": rows}


def recalibrate_checkpoint(directory: str, progress: Callable[[str, int, int], None]) -> dict[str, object]:
    """Calibrate a trained checkpoint again (its weights, hence its hash, are unchanged) and
    re-evaluate it; the manifest is rewritten in place."""
    import json

    from engines.weights import verified_weights
    from pipelines.motion.audio_model import load_audio_model

    from .train import eval_set, evaluate_severities

    model, manifest = load_audio_model(directory)
    cfg = ds.DataConfig(**manifest["data"])  # type: ignore[arg-type]
    manifest["calibration"] = calibrate_press(model, cfg, progress)
    manifest["model"] = model.config.to_dict()
    sets = {sev.name: eval_set(cfg, sev, progress) for sev in ds.EVAL_SEVERITIES}
    progress("evaluate", 0, 1)
    manifest["evaluation"] = evaluate_severities(model, sets)
    progress("evaluate", 1, 1)
    path = os.path.join(directory, "audio2motion.json")
    with open(path + ".partial", "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(path + ".partial", path)
    verified_weights("audio2motion", directory)  # still loads
    return manifest
