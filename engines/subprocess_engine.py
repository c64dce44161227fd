"""An engine run in a child process; the parent's side only sends inputs and receives outputs.

Why: one server process shares one GIL between the event loop (aiortc's per-packet Python,
the graph's stages), the codecs' threads and the engines' threads. The renderer runs ~100
small torch operators per frame, each taking the GIL back for a few microseconds of Python;
on the 2-core machine a server stopped scaling at ~1.3 cores with several calls. In a child
process that Python runs beside the loop instead of taking turns with it.

The parent's `EngineWorker` thread blocks in `run_batch` on the pipe (GIL released), so the
stages are unchanged. Inputs and outputs are dicts/lists of tensors, sent as numpy arrays
(a 512² I420 frame is 384 KiB: a copy, not a cost that matters next to rendering it). The
child builds its engine with `factory` (pickled: a module-level function or a partial of
one), loads and warms it, then serves until told to stop or the socket closes (the parent
died): it never outlives the server.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch

from .base import Engine, EngineDied


def _to_wire(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, dict):
        return {k: _to_wire(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_to_wire(v) for v in x)
    return x


def _from_wire(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, dict):
        return {k: _from_wire(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_from_wire(v) for v in x)
    return x


def _serve(conn: Any, factory: Callable[[], Engine[Any, Any]], torch_threads: int) -> None:
    torch.set_num_threads(torch_threads)
    try:
        engine = factory()
        engine.load()
        engine.warmup()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", engine.describe()))
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            if msg[0] == "stop":
                break
            try:
                conn.send(("ok", _to_wire(engine.run_batch(_from_wire(msg[1])))))
            except Exception as exc:  # noqa: BLE001 - one bad batch must not end the child
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        engine.close()


class SubprocessEngine(Engine[Any, Any]):
    def __init__(self, name: str, factory: Callable[[], Engine[Any, Any]], *, torch_threads: int = 1,
                 start_timeout_s: float = 120.0) -> None:
        self.name = name
        self.factory, self.torch_threads, self.start_timeout_s = factory, torch_threads, start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Any = None
        self._described: dict[str, object] = {}

    def load(self) -> None:
        # A fresh interpreter (`python -m engines.subprocess_engine FD`), not multiprocessing's
        # spawn: that re-imports the parent's __main__ (a CLI, a test runner), which a server
        # cannot promise is import-safe. Never fork: the parent runs threads and a loop.
        parent, child = socket.socketpair()
        self._proc = subprocess.Popen([sys.executable, "-m", "engines.subprocess_engine", str(child.fileno())],
                                      pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL)
        child.close()
        self._conn = Connection(parent.detach())
        self._conn.send((self.factory, self.torch_threads))
        if not self._conn.poll(self.start_timeout_s):
            self.close()
            raise RuntimeError(f"engine {self.name!r}: child process did not start in {self.start_timeout_s:.0f} s")
        try:
            kind, payload = self._conn.recv()
        except EOFError:
            self.close()
            raise RuntimeError(f"engine {self.name!r}: child process died while loading") from None
        if kind != "ready":
            self.close()
            raise RuntimeError(f"engine {self.name!r} failed to load in its process: {payload}")
        self._described = dict(payload or {})

    def describe(self) -> dict[str, object]:
        return {**self._described, "process": "child"}

    @property
    def pid(self) -> int | None:
        """The child process while it runs (for its CPU and memory figures)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def alive(self) -> bool:
        proc = self._proc
        return proc is None or proc.poll() is None  # not started yet counts as alive

    def run_batch(self, items: Sequence[Any]) -> list[Any]:
        if self._conn is None:
            raise RuntimeError(f"engine {self.name!r} used before load()")
        try:
            self._conn.send(("run", _to_wire(list(items))))
            kind, payload = self._conn.recv()
        except (EOFError, OSError):  # killed, crashed, out of memory: the parent can start another
            code = self._proc.poll() if self._proc is not None else None
            raise EngineDied(f"engine {self.name!r}: its process died (exit status {code})") from None
        if kind != "ok":
            raise RuntimeError(f"engine {self.name!r}: {payload}")
        return list(_from_wire(payload))

    def close(self) -> None:
        conn, proc = self._conn, self._proc
        self._conn = self._proc = None
        if conn is not None:
            try:
                conn.send(("stop",))
            except (OSError, ValueError):
                pass
            try:
                conn.close()
            except OSError:
                pass
        if proc is not None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _main(fd: int) -> None:
    # The parent decides when this process ends (a "stop", or EOF when it is gone). A stop
    # signal sent to the whole process group — systemd's default, `kill -- -PGID`, Ctrl-C in a
    # terminal — must not kill the renderer under calls that a draining parent keeps running.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    try:
        factory, threads = conn.recv()
    except EOFError:
        return
    _serve(conn, factory, threads)


if __name__ == "__main__":
    _main(int(sys.argv[1]))
