"""Claim: bad input to `avatar render` gets one line on stderr and exit status 2 — no traceback,
no output file left behind."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatar.cli import main


def _portrait_files(d: Path) -> dict[str, Path]:
    files = {}
    files["not_an_image"] = d / "notes.png"
    files["not_an_image"].write_text("this is text, not a PNG\n")
    Image.fromarray(np.full((300, 300, 3), 128, np.uint8)).save(d / "full.png")
    data = (d / "full.png").read_bytes()
    files["truncated"] = d / "truncated.png"
    files["truncated"].write_bytes(data[: len(data) // 2])
    x = np.linspace(0, 255, 256 * 256).reshape(256, 256).astype(np.uint8)
    files["no_face"] = d / "gradient.png"
    Image.fromarray(np.stack([x, x, x], -1)).save(files["no_face"])
    files["one_pixel"] = d / "dot.png"
    Image.new("RGB", (1, 1)).save(files["one_pixel"])
    files["bomb"] = d / "bomb.png"  # 100 megapixels that compress to a few kilobytes
    Image.new("1", (10_000, 10_000)).save(files["bomb"])
    return files


CASES = {
    "empty text": (["--text", "   "], "empty"),
    "text over the limit": (["--text", "word " * 2000], "over the limit"),
    "unknown voice": (["--text", "Hi.", "--voice", "klingon-9"], "voice"),
    "odd size": (["--text", "Hi.", "--size", "511"], "even"),
    "not an image": (["--text", "Hi.", "--image", "{not_an_image}"], "not an image"),
    "truncated png": (["--text", "Hi.", "--image", "{truncated}"], "cannot be decoded"),
    "no face": (["--text", "Hi.", "--image", "{no_face}"], "no face"),
    "1x1 image": (["--text", "Hi.", "--image", "{one_pixel}"], "1x1"),
    "decompression bomb": (["--text", "Hi.", "--image", "{bomb}"], "over the limit"),
    "missing image": (["--text", "Hi.", "--image", "{dir}/nope.png"], "does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_one_line_no_output(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _portrait_files(tmp_path)
    args, expect = CASES[case]
    args = [a.format(dir=tmp_path, **files) for a in args]
    out = tmp_path / "out" / "video.mp4"
    out.parent.mkdir()
    code = main(["render", *args, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("avatar: error:") and expect in lines[0], err
    assert "Traceback" not in err
    assert list(out.parent.iterdir()) == []  # no output, no partial file


@pytest.mark.parametrize("target", ["missing_dir", "is_a_dir"])
def test_unwritable_output(target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "no" / "such" / "dir" / "x.mp4" if target == "missing_dir" else tmp_path
    code = main(["render", "--text", "Hi.", "--voice", "en-us", "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("avatar: error: ")
    assert list(tmp_path.iterdir()) == []


def test_failure_during_render_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A stage failing mid-render (here: the encoder, after some frames) removes the temp file."""
    from pipelines.media import mp4

    real = mp4.Mp4Writer.write_video

    def failing(self, image, pts, fmt="rgb24"):  # type: ignore[no-untyped-def]
        if pts == 10:
            raise OSError("disk full (simulated)")
        real(self, image, pts, fmt)

    monkeypatch.setattr(mp4.Mp4Writer, "write_video", failing)
    out = tmp_path / "x.mp4"
    code = main(["render", "--text", "Hello there, how are you?", "--voice", "en-us", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "disk full" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_real_process_prints_only_one_line(tmp_path: Path) -> None:
    x = np.linspace(0, 255, 256 * 256).reshape(256, 256).astype(np.uint8)
    Image.fromarray(np.stack([x, x, x], -1)).save(tmp_path / "g.png")
    proc = subprocess.run([sys.executable, "-m", "avatar", "render", "--text", "Hi.", "--image",
                           str(tmp_path / "g.png"), "-o", str(tmp_path / "o.mp4")],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "avatar: error: no face was found in the portrait"
    assert not (tmp_path / "o.mp4").exists()
