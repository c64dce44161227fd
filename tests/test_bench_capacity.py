"""Claim (BENCHMARKS.md, "Capacity"): `avatar bench capacity` starts a server, raises the number
of 25 fps sessions step by step and reports for each step what the sessions received and what
the server spent — a table with the answer, JSON and a plot."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(300)
def test_capacity_steps_up_agent_sessions_and_reports_them(tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "cap.json", tmp_path / "cap.png"
    done = subprocess.run([sys.executable, "-m", "avatar", "bench", "capacity", "--kinds", "agent", "--max", "2",
                           "--seconds", "6", "--size", "256", "--json", str(out_json), "--plot", str(out_png)],
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "capacity" in done.stderr  # the progress bar
    assert "agent: this server carries" in done.stdout, done.stdout
    report = json.loads(out_json.read_text())
    first = report["steps"][0]
    assert first["mode"] == "agent" and first["sessions"] == 1
    # the one session was received at about 25 fps, the server's CPU and its stages were read
    assert first["min_fps"] > 15 and first["cpu_cores"] > 0.05, first
    assert "render" in first["stage_p99_ms"] and first["say_first_frame_p99_ms"], first
    assert report["max_sessions"]["agent"] == sum(1 for s in report["steps"] if s["ok"])
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_capacity_refuses_an_odd_size() -> None:
    done = subprocess.run([sys.executable, "-m", "avatar", "bench", "capacity", "--size", "255"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().startswith("avatar: error:"), done.stderr
