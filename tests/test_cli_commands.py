"""Claim: the documented command lines behave as README.md and docs/calls.md say, run as a
user runs them (real processes): `avatar voices` exits 0 and lists "joe" first, then the
espeak-ng voices (en-us, de, ...); `avatar serve --config settings.json` reads its settings
from the JSON file, AVATAR_* variables override the file, and a file with an unknown key or
bad JSON, or a bad AVATAR_* value, prints one line `avatar: error: ...` and exits 2 without
serving; `avatar render --audio --lookahead N` takes the documented look-aheads 0 to 120 ms
in steps of 20, and refuses 130 and -20 with one line and exit 2, writing nothing."""
from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from mediafile import decode

TIMEOUT = 180  # generous: the machine may be busy; a render here takes seconds


def _env(**overrides: str) -> dict[str, str]:
    """The test's environment without the caller's own AVATAR_* settings, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVATAR_")}
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return {**env, **overrides}


def _avatar(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "avatar", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, env=env or _env(), cwd=cwd)


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Exit 2, and stderr is exactly one line `avatar: error: ...`; that line."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("avatar: error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


# -- avatar voices ----------------------------------------------------------------------------

def test_voices_lists_joe_first_then_the_espeak_voices() -> None:
    proc = _avatar("voices")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    voices = proc.stdout.split()
    assert voices[0] == "joe", voices[:5]  # the natural voice, the default
    assert voices.count("joe") == 1
    assert {"en-us", "de", "fr"} <= set(voices[1:]), voices  # espeak-ng voices, as README names them
    assert len(voices) == len(set(voices)) and len(voices) > 50, len(voices)


# -- avatar serve --config / AVATAR_* ---------------------------------------------------------

@contextmanager
def _serve(*args: str, env: dict[str, str]) -> Iterator[str]:
    """`avatar serve --port 0 ARGS` until it says where it serves; yields its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "avatar", "serve", "--port", "0", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    log: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=TIMEOUT)
            assert line is not None, f"avatar serve exited with {proc.wait()}: {''.join(log)[-2000:]}"
            log.append(line)
            m = re.search(r"serving on (http://[^/\s]+)/", line)
            if m:
                yield m.group(1)
                return
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _serve_refused(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`avatar serve --port 0 ARGS` expected to refuse: its exit once it ends; a failure as
    soon as it says it is serving (instead of waiting for a timeout)."""
    proc = subprocess.Popen([sys.executable, "-m", "avatar", "serve", "--port", "0", *args], env=env or _env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    err: list[str] = []
    serving = threading.Event()

    def pump(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)
            if "serving on" in line:
                serving.set()

    readers = [threading.Thread(target=pump, args=(proc.stdout, out), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, err), daemon=True)]
    for t in readers:
        t.start()
    try:
        for _ in range(TIMEOUT * 10):
            if proc.poll() is not None or serving.wait(0.1):
                break
        if proc.poll() is None:
            pytest.fail(f"avatar serve {' '.join(args)} did not refuse: {''.join(out + err)[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for t in readers:
            t.join(10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(out), "".join(err))


def _readyz(base: str) -> dict[str, Any]:
    """/readyz's JSON, whatever its status (503 while engines are not loaded)."""
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        assert exc.code == 503, exc.code
        return json.loads(exc.read())


def _settings_file(d: Path, text: str) -> Path:
    path = d / "settings.json"
    path.write_text(text)
    return path


def test_serve_reads_its_settings_from_the_config_file(tmp_path: Path) -> None:
    config = _settings_file(tmp_path, json.dumps({"max_calls": 2, "preload": False}))
    with _serve("--config", str(config), env=_env()) as base:
        ready = _readyz(base)
    assert ready["max_calls"] == 2, ready  # default 4
    assert ready["engines_loaded"] is False and ready["ready"] is False, ready  # preload: false
    assert ready["calls"] == 0


def test_avatar_variables_are_seen_and_override_the_config_file(tmp_path: Path) -> None:
    with _serve(env=_env(AVATAR_MAX_CALLS="3", AVATAR_PRELOAD="false")) as base:
        alone = _readyz(base)
    config = _settings_file(tmp_path, json.dumps({"max_calls": 2, "preload": False}))
    with _serve("--config", str(config), env=_env(AVATAR_MAX_CALLS="3")) as base:
        over_file = _readyz(base)
    assert alone["max_calls"] == 3 and alone["engines_loaded"] is False, alone
    assert over_file["max_calls"] == 3, over_file  # the variable wins over the file's 2


BAD_FILES = {
    "unknown key": ('{"max_calls": 2, "max_callz": 3}', "setting max_callz"),
    "bad json": ('{"max_calls": 2,', "settings file"),
    "bad value": ('{"max_calls": 0}', "setting max_calls (AVATAR_MAX_CALLS, --config)"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_config_file_is_one_line_and_exit_2_without_serving(case: str, tmp_path: Path) -> None:
    text, expect = BAD_FILES[case]
    config = _settings_file(tmp_path, text)
    proc = _serve_refused("--config", str(config))
    line = _one_error_line(proc)
    assert expect in line, line
    assert "serving on" not in proc.stdout, proc.stdout


def test_a_config_file_that_is_not_a_json_object_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = _serve_refused("--config", str(_settings_file(tmp_path, "[1, 2]")))
    assert "settings file" in _one_error_line(proc)


@pytest.mark.parametrize("value", ["abc", "0"])
def test_a_bad_avatar_variable_is_one_line_and_exit_2_without_serving(value: str) -> None:
    proc = _serve_refused(env=_env(AVATAR_MAX_CALLS=value))
    line = _one_error_line(proc)
    assert "setting max_calls (AVATAR_MAX_CALLS, --config)" in line, line  # names what to fix, where
    assert "serving on" not in proc.stdout, proc.stdout


# -- avatar render --audio --lookahead --------------------------------------------------------

def _wav(d: Path) -> Path:
    """One second of a voiced-sounding tone, 16 kHz mono."""
    t = np.arange(16000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    path = d / "speech.wav"
    sf.write(path, x.astype(np.float32), 16000)
    return path


def _render(d: Path, lookahead: int) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = d / "out.mp4"
    proc = _avatar("render", "--audio", str(_wav(d)), "--size", "128", "--lookahead", str(lookahead),
                   "-o", str(out))
    return proc, out


@pytest.mark.parametrize("lookahead", [0, 120])
def test_render_takes_the_documented_lookahead_ends(lookahead: int, tmp_path: Path) -> None:
    proc, out = _render(tmp_path, lookahead)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"wrote {out}: 1.00 s, 25 frames, 128x128 @ 25 fps"), proc.stdout
    media = decode(str(out))
    assert (media.width, media.height) == (128, 128) and len(media.frames) == 25
    assert abs(media.video_seconds - media.audio_seconds) <= 1 / 25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "speech.wav"]  # no temp file left


@pytest.mark.parametrize("lookahead", [130, -20])
def test_render_refuses_a_lookahead_outside_0_to_120(lookahead: int, tmp_path: Path) -> None:
    proc, _ = _render(tmp_path, lookahead)
    line = _one_error_line(proc)
    assert "lookahead" in line and ("120" if lookahead > 0 else "0") in line, line
    assert proc.stdout == ""
    assert [p.name for p in tmp_path.iterdir()] == ["speech.wav"]  # nothing written


@pytest.fixture(scope="module")
def off_step(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    d = tmp_path_factory.mktemp("off_step")
    proc, _ = _render(d, 30)
    return proc, d


def test_render_refuses_a_lookahead_off_the_20_ms_step(off_step: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, d = off_step
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "avatar: error: --lookahead: look-ahead 30 ms not available; choose one of 0, 20, 40, 60, 80, 100, 120")
    assert "Traceback" not in proc.stderr
    assert [p.name for p in d.iterdir()] == ["speech.wav"]  # nothing written


def test_render_refuses_a_lookahead_off_the_step_in_one_line(off_step: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _one_error_line(off_step[0])
