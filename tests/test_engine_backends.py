"""Engine backends (engines/backends.py, engines/module_engine.py): each backend available
here renders what eager renders, to the documented tolerance (<= 1 grey level per pixel, on
the decoded frame's planes); one not installed is reported as missing, never faked; exported
and compiled artifacts are cached on disk and rebuilt when the model or a library version
changes; the autotune measures the backends it can build and keeps the fastest."""
from __future__ import annotations

import ast
import dataclasses
import pathlib

import numpy as np
import pytest
import torch

from engines import backends
from engines.cache import ArtifactCache, library_versions
from engines.module_engine import ModuleEngine
from pipelines.motion.idle import IdleMotion
from pipelines.motion.params import IDLE, IDX, N_PARAMS
from pipelines.motion.visemes import mouth_params
from pipelines.render.avatar import default_avatar
from pipelines.render.renderer import WarpRenderer
from pipelines.speech.types import Phoneme

ROOT = pathlib.Path(__file__).resolve().parent.parent
SIZE = 128
TOLERANCE = 1  # grey levels, any pixel: float rounding across backends moves a value by one


@pytest.fixture(scope="module")
def avatar():
    return default_avatar(SIZE)


@pytest.fixture(scope="module")
def motion() -> list[dict[str, torch.Tensor]]:
    """Speech-like motion: an open mouth, a blink, head sway (every part of the renderer)."""
    n = 12
    p = np.zeros((n, N_PARAMS), np.float32)
    p[:, :5] = mouth_params([Phoneme("AA", 0, 200), Phoneme("OW", 200, 300), Phoneme("M", 300, 480)], n, 25)
    p[:, IDLE] = IdleMotion(3).params(np.arange(n) / 25 + 2.0)
    p[5, [IDX["blink_l"], IDX["blink_r"]]] = 1.0  # the eyes closed
    return [{"params": torch.from_numpy(row)} for row in p]


def _engine(avatar, backend: str, output: str, cache: ArtifactCache | None = None, **kw) -> ModuleEngine:
    e = ModuleEngine(f"renderer-{backend}", lambda dev: WarpRenderer(avatar, output=output),
                     example={"params": torch.zeros(N_PARAMS)}, backend=backend, cache=cache, **kw)
    e.load()
    return e


def _frames(engine: ModuleEngine, motion) -> np.ndarray:
    # batches of 1, 3, and 8 (8: the largest bucket, from sessions' frames batched together)
    out = engine.run_batch(motion[:1]) + engine.run_batch(motion[1:4]) + engine.run_batch(motion[4:12])
    return torch.stack(out).numpy().astype(np.int16)


def test_report_names_every_backend_and_why_one_is_missing() -> None:
    rep = {b.name: b for b in backends.report("cpu")}
    assert list(rep) == ["eager", "compile", "onnxruntime", "tensorrt"]
    assert rep["eager"].available and rep["onnxruntime"].available
    assert "CPUExecutionProvider" in rep["onnxruntime"].detail
    if not rep["tensorrt"].available:  # never installed on this CPU machine
        assert "not installed" in rep["tensorrt"].detail or "CUDA" in rep["tensorrt"].detail


def test_missing_backend_is_an_error_not_a_stand_in(avatar) -> None:
    if backends.report("cpu")[3].available:
        pytest.skip("torch-tensorrt is installed here")
    with pytest.raises(backends.BackendUnavailable, match="torch-tensorrt"):
        _engine(avatar, "tensorrt", "yuv420p")


@pytest.mark.parametrize("output", ["yuv420p", "rgb24"])
def test_onnxruntime_renders_what_eager_renders(avatar, motion, output, tmp_path) -> None:
    eager = _frames(_engine(avatar, "eager", output), motion)
    ort = _frames(_engine(avatar, "onnxruntime", output, ArtifactCache(tmp_path)), motion)
    assert eager.shape == ort.shape
    assert np.abs(eager - ort).max() <= TOLERANCE
    assert eager.std() > 10  # a picture, not a blank that would match anything


def test_compile_renders_what_eager_renders(avatar, motion, tmp_path) -> None:
    if not backends.report("cpu")[1].available:
        pytest.skip(backends.report("cpu")[1].detail)
    eager = _frames(_engine(avatar, "eager", "yuv420p"), motion)
    # one bucket (8): every batch is padded to it, so one graph is compiled (the slow part)
    compiled = _frames(_engine(avatar, "compile", "yuv420p", ArtifactCache(tmp_path), buckets=(8,)), motion)
    assert np.abs(eager - compiled).max() <= TOLERANCE


def test_exported_graphs_are_cached_and_rebuilt_when_a_version_changes(avatar, motion, tmp_path) -> None:
    first = ArtifactCache(tmp_path)
    frames = _frames(_engine(avatar, "onnxruntime", "yuv420p", first), motion)
    stored = sorted(tmp_path.glob("*.onnx"))
    assert len(stored) == 2 and first.misses == 2 and first.hits == 0  # warp and finish, exported
    stamps = [p.stat().st_mtime_ns for p in stored]

    again = ArtifactCache(tmp_path)
    assert (_frames(_engine(avatar, "onnxruntime", "yuv420p", again), motion) == frames).all()
    assert again.hits == 2 and again.misses == 0
    assert [p.stat().st_mtime_ns for p in stored] == stamps  # read, not written again

    newer = ArtifactCache(tmp_path, {**library_versions(), "onnxruntime": "99.0"})
    _engine(avatar, "onnxruntime", "yuv420p", newer)
    assert newer.hits == 0 and len(list(tmp_path.glob("*.onnx"))) == 4  # not loaded: rebuilt

    # another portrait (the same one, brightened): another model, so nothing is loaded
    other = dataclasses.replace(avatar, image=np.clip(avatar.image.astype(np.int16) + 20, 0, 255).astype(np.uint8))
    changed = ArtifactCache(tmp_path)
    _engine(other, "onnxruntime", "yuv420p", changed)
    assert changed.hits == 0
    # the same portrait in the other output format: its own graphs too
    rgb = ArtifactCache(tmp_path)
    _engine(avatar, "onnxruntime", "rgb24", rgb)
    assert rgb.hits == 0
    assert not list(tmp_path.glob(".*.tmp"))  # no partial entries left


def test_autotune_times_the_candidates_and_keeps_the_fastest(avatar, motion, tmp_path) -> None:
    cache = ArtifactCache(tmp_path)
    e = _engine(avatar, "auto", "yuv420p", cache, candidates=("eager", "onnxruntime", "tensorrt"))
    d = e.describe()
    t = d["autotune_ms_per_item"]
    assert set(t) == {"eager", "onnxruntime", "tensorrt"}
    timed = {k: sum(v.values()) for k, v in t.items() if isinstance(v, dict)}
    assert set(timed) >= {"eager", "onnxruntime"}
    assert d["backend"] == min(timed, key=timed.get)
    assert isinstance(t["tensorrt"], str) and t["tensorrt"].startswith("unavailable")
    frames = _frames(e, motion)
    # the second start reads the choice: only the chosen backend is built
    again = _engine(avatar, "auto", "yuv420p", ArtifactCache(tmp_path), candidates=("eager", "onnxruntime", "tensorrt"))
    assert again.describe()["backend"] == d["backend"] and again.describe()["autotune_ms_per_item"].get("cached")
    assert np.abs(_frames(again, motion) - frames).max() <= TOLERANCE


def test_web_does_not_import_torch() -> None:
    """Devices and replicas are the engine layer's business (engines/devices.py)."""
    for path in (ROOT / "web").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "torch" or n.startswith("torch.") for n in names), path
