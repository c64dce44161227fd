"""Command line: `avatar render ...`, `avatar voices`, `avatar serve`, `avatar client say ...`,
`avatar loadtest ...`.

Errors a user can cause print one line (`avatar: error: ...`) and exit with status 2;
nothing is left behind. `--debug` shows tracebacks for everything else.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

EXIT_USAGE = 2
EXIT_FAILURE = 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avatar", description="Streaming talking-head engine")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render a talking-head MP4 from text")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="what the avatar says (synthesized speech)")
    src.add_argument("--audio", help="an audio file the avatar speaks (lips from the audio-to-motion model)")
    r.add_argument("--lookahead", type=int, default=80, help="audio look-ahead of the lip model in ms (0-120, step 20)")
    r.add_argument("-o", "--output", required=True, help="MP4 file to write")
    r.add_argument("--image", help="portrait to animate (default: the built-in astronaut)")
    r.add_argument("--voice", default="joe", help="'joe' (natural, default) or an espeak-ng voice, e.g. en-us, de, en-us+f3")
    r.add_argument("--rate", type=float, default=1.0, help="speaking rate multiplier, 0.5-2.0")
    r.add_argument("--pitch", type=float, default=1.0, help="pitch multiplier, 0.5-2.0")
    r.add_argument("--size", type=int, default=512, help="frame width and height in pixels (even)")
    r.add_argument("--fps", type=int, default=25)
    r.add_argument("--seed", type=int, default=0, help="idle motion (blinks, sway) seed")
    r.add_argument("--realtime", action="store_true", help="pace the graph to the wall clock (live mode)")
    r.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    r.add_argument("--threads", type=int, help="torch intra-op threads")
    sub.add_parser("voices", help="list the voices")
    tr = sub.add_parser("train", help="train a model the project ships")
    tr.add_argument("what", choices=["motion"], help="motion: the audio-to-motion model")
    tr.add_argument("-o", "--output", default=None, help="folder for the checkpoint (default: the shipped weights)")
    tr.add_argument("--steps", type=int, default=None)
    tr.add_argument("--seed", type=int, default=None)
    pe = sub.add_parser("perceive", add_help=False, help=(
        "who is speaking and where in a video file: an events file (JSON Lines), an overlay video "
        "(`avatar perceive --help`)"))
    pe.add_argument("rest", nargs=argparse.REMAINDER)
    ev = sub.add_parser("eval", help="evaluate a model on held-out data (`avatar eval perception --help`: "
                                     "perception on generated scenes)")
    ev.add_argument("what", choices=["motion", "perception"])
    ev.add_argument("--weights", default=None, help="checkpoint folder (default: the shipped weights)")
    ev.add_argument("--json", action="store_true", help="print the figures as JSON")
    ca = sub.add_parser("calibrate", help="choose a trained model's inference calibration again")
    ca.add_argument("what", choices=["motion"], help="motion: the lip-press gain (on training voices), then eval")
    ca.add_argument("--weights", default=None, help="checkpoint folder (default: the shipped weights)")
    s = sub.add_parser("serve", help="run the server: WebRTC calls (/), websocket streams (/v1/stream), /metrics")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1, AVATAR_HOST)")
    s.add_argument("--config", help="JSON settings file (AVATAR_CONFIG); AVATAR_* variables and flags override it")
    s.add_argument("--port", type=int, help="port (default 8080, AVATAR_PORT; 0 picks a free one)")
    lt = sub.add_parser("loadtest", help="N concurrent WebRTC callers against a server; a table, JSON, a plot")
    lt.add_argument("--url", default="http://127.0.0.1:8080", help="the server's base URL")
    lt.add_argument("--callers", type=int, default=4, help="concurrent calls")
    lt.add_argument("--duration", type=float, default=30.0, help="seconds the calls last")
    lt.add_argument("--mode", choices=["mirror", "agent"], default="mirror",
                    help="mirror: the callers' speech moves the avatar's lips; agent: the avatar speaks (--say-every)")
    lt.add_argument("--say-every", type=float, default=0.0, help="seconds between `say` requests on every call (0: none)")
    lt.add_argument("--wav", help="the callers' microphone, looped (default: a sentence synthesized here)")
    lt.add_argument("--silent", action="store_true", help="callers send no audio (receive only)")
    lt.add_argument("--no-decode", action="store_true", help=(
        "count and time received video frames without decoding them (callers on the server's own "
        "machine stand in for remote browsers without taking its CPU)"))
    lt.add_argument("--json", help="write the report as JSON")
    lt.add_argument("--plot", help="write a PNG: fps over time, frame intervals, server latency histograms")
    lt.add_argument("--token", default=os.environ.get("AVATAR_TOKEN"), help="bearer token (AVATAR_TOKEN)")
    b = sub.add_parser("bench", help="benchmarks of this machine")
    bsub = b.add_subparsers(dest="bench_command", required=True)
    bc = bsub.add_parser("capacity", help="how many 25 fps sessions a server here carries without late frames")
    bc.add_argument("--kinds", nargs="+", choices=["agent", "mirror"], default=["agent", "mirror"],
                    help="agent: text-driven calls; mirror: audio-driven (the caller's voice moves the lips)")
    bc.add_argument("--max", type=int, default=8, help="the most sessions tried")
    bc.add_argument("--seconds", type=float, default=20.0, help="how long each step runs")
    bc.add_argument("--size", type=int, default=512, help="frame side")
    bc.add_argument("--json", help="write the report as JSON")
    bc.add_argument("--plot", help="write a PNG: lateness, frame interval and CPU against sessions")
    c = sub.add_parser("client", help="talk to a server's /v1/stream")
    csub = c.add_subparsers(dest="client_command", required=True)
    cs = csub.add_parser("say", help="say a text and record the stream into an MP4")
    cs.add_argument("text", help="what the avatar says")
    cs.add_argument("--url", default="ws://127.0.0.1:8080/v1/stream")
    cs.add_argument("-o", "--output", required=True, help="MP4 file to write")
    cs.add_argument("--voice", help="the server's default if omitted")
    cs.add_argument("--size", type=int, help="frame side (one the server offers)")
    cs.add_argument("--fps", type=int)
    cs.add_argument("--audio", choices=["opus", "pcm"], help="transport codec (the file is AAC either way)")
    cs.add_argument("--avatar", help="an avatar the server offers")
    cs.add_argument("--token", default=os.environ.get("AVATAR_TOKEN"), help="bearer token (AVATAR_TOKEN)")
    return p


# RenderRequest fields whose flag has another name
_FLAGS = {"lookahead_ms": "lookahead", "threads": "threads"}


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            flag = _FLAGS.get(loc, loc.replace("_", "-"))
            parts.append(f"--{flag}: {err['msg'].removeprefix('Value error, ')}")
        return "; ".join(parts)
    return " ".join(str(exc).split()) or type(exc).__name__


def _run_render(args: argparse.Namespace) -> int:
    from .render import render
    from .settings import RenderRequest

    req = RenderRequest(text=args.text, audio=args.audio, lookahead_ms=args.lookahead, output=args.output,
                        image=args.image, voice=args.voice,
                        rate=args.rate, pitch=args.pitch, size=args.size, fps=args.fps, seed=args.seed,
                        realtime=args.realtime, device=args.device, threads=args.threads)
    bar = _progress_bar()
    try:
        result = asyncio.run(render(req, on_event=bar.on_event if bar else None))
    finally:
        if bar:
            bar.close()
    speed = result.media_seconds / max(result.wall_seconds, 1e-9)
    print(f"wrote {result.path}: {result.media_seconds:.2f} s, {result.video_frames} frames, "
          f"{req.size}x{req.size} @ {req.fps} fps, in {result.wall_seconds:.2f} s ({speed:.1f}x real time)")
    return 0


class _progress_bar:  # noqa: N801 - used like a function
    """tqdm over seconds of media written, on a terminal only."""

    def __new__(cls) -> _progress_bar | None:  # type: ignore[misc]
        if not sys.stderr.isatty():
            return None
        return super().__new__(cls)

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=0.0, unit="s", unit_scale=False, desc="render", bar_format=(
            "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s of media [{elapsed}<{remaining}]"))
        self.total = 0.0
        self.done = 0.0

    def on_event(self, event: object) -> None:
        kind, data = getattr(event, "kind", ""), getattr(event, "data", {})
        if kind == "media_duration":
            self.total = data["seconds"]
            self.bar.total = self.total
            self.bar.refresh()
        elif kind == "utterance_started":
            self.total = data["media_time"] + data["duration"]
            self.bar.total = self.total
            self.bar.refresh()
        elif kind == "written" and data.get("stream") == "video":
            t = data["media_time"]
            if t > self.done:
                self.bar.update(t - self.done)
                self.done = t

    def close(self) -> None:
        self.bar.close()


def _run_voices(_: argparse.Namespace) -> int:
    from pipelines.speech.tts import available_voices

    for v in available_voices():
        print(v)
    return 0


class _Progress:
    """A tqdm bar per stage on a terminal; elsewhere a line every 10 s (logs, CI)."""

    def __init__(self) -> None:
        import time

        self._tty = sys.stderr.isatty()
        self._bar = None
        self._stage = ""
        self._last = 0.0
        self._time = time.monotonic

    def __call__(self, stage: str, done: int, total: int) -> None:
        base = stage.split(" (")[0]
        if self._tty:
            from tqdm import tqdm

            if self._bar is None or base != self._stage:
                if self._bar is not None:
                    self._bar.close()
                self._bar = tqdm(total=total, desc=base)
                self._stage = base
            self._bar.set_description(stage)
            self._bar.update(done - self._bar.n)
            return
        now = self._time()
        if base != self._stage or now - self._last >= 10 or done == total:
            print(f"{stage}: {done}/{total}", file=sys.stderr, flush=True)
            self._stage, self._last = base, now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _run_train(args: argparse.Namespace) -> int:
    from engines.weights import WEIGHTS_DIR
    from pipelines.motion.training.train import TrainConfig, train

    cfg = TrainConfig()
    if args.steps is not None:
        cfg.steps = args.steps
    if args.seed is not None:
        cfg.seed = cfg.data.seed = args.seed
    out = args.output or WEIGHTS_DIR
    progress = _Progress()
    try:
        manifest = train(cfg, out, progress)
    finally:
        progress.close()
    print(f"wrote {out}/{manifest['file']} ({manifest['bytes'] / 1e6:.1f} MB, {manifest['parameters']} parameters) "
          f"in {manifest['timing']['total_s'] / 60:.1f} min")  # type: ignore[index]
    _print_motion_figures(manifest["evaluation"])  # type: ignore[arg-type]
    return 0


def _print_motion_figures(figures: dict[str, object]) -> None:
    for severity, fig in figures.items():
        if not isinstance(fig, dict) or "voices" not in fig:
            continue
        print(f"[{severity}] held-out voices: {', '.join(fig['voices'])} ({fig['utterances']} utterances)")
        print(f"{'':24} {'jaw r':>7} {'closure recall':>15} {'precision':>10} {'lag ms':>7} {'rest jaw':>9}")
        for key, row in fig.items():
            if isinstance(row, dict) and "jaw_r" in row:
                print(f"{key:24} {row['jaw_r']:7.3f} {row['closure_recall']:15.3f} {row['closure_precision']:10.3f} "
                      f"{row['lag_ms']:7.0f} {row['rest_jaw']:9.3f}")


def _run_eval(args: argparse.Namespace) -> int:
    import json

    from pipelines.motion.audio_model import load_audio_model
    from pipelines.motion.training import dataset as ds
    from pipelines.motion.training.train import eval_set, evaluate_severities

    model, manifest = load_audio_model(args.weights)
    cfg = ds.DataConfig(**manifest["data"])  # type: ignore[arg-type]
    progress = _Progress()
    try:
        sets = {sev.name: eval_set(cfg, sev, progress) for sev in ds.EVAL_SEVERITIES}
        progress("evaluate", 0, 1)
        figures = evaluate_severities(model, sets)
        progress("evaluate", 1, 1)
    finally:
        progress.close()
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        _print_motion_figures(figures)
    return 0


def _run_calibrate(args: argparse.Namespace) -> int:
    from engines.weights import WEIGHTS_DIR
    from pipelines.motion.training.calibrate import recalibrate_checkpoint

    directory = args.weights or WEIGHTS_DIR
    progress = _Progress()
    try:
        manifest = recalibrate_checkpoint(directory, progress)
    finally:
        progress.close()
    cal = manifest["calibration"]
    print(f"{directory}: press gain {cal['press_gain']} (chosen on {', '.join(cal['voices'])})")  # type: ignore[index]
    for row in cal["table"]:  # type: ignore[index]
        print(f"  gain {row['gain']:.1f}: closure recall {row['closure_recall']:.3f}, precision "
              f"{row['closure_precision']:.3f}, F1 {row['f1']:.3f}, lip-opening r {row['opening_r']:.3f}")
    _print_motion_figures(manifest["evaluation"])  # type: ignore[arg-type]
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    # Two malloc arenas (glibc reads this once, at start-up): with its default of 8 per core
    # the server's memory creeps up over its first few hundred calls (docs/calls.md, "Memory").
    # Set here, not only in the Makefile or an image, so every way of starting it gets it.
    if "MALLOC_ARENA_MAX" not in os.environ and sys.platform == "linux" and sys.orig_argv:
        os.execve(sys.executable, sys.orig_argv, {**os.environ, "MALLOC_ARENA_MAX": "2"})
    from web.app import serve
    from web.settings import ServerSettings

    settings = ServerSettings.from_env(config_file=args.config, host=args.host, port=args.port)
    logging.getLogger().setLevel(logging.DEBUG if args.debug else logging.INFO)
    # Engine threads run many short torch ops, each taking the GIL back from the event loop;
    # at the default 5 ms switch interval each can wait that long (a 5 ms render took 50 ms
    # with four calls).
    sys.setswitchinterval(settings.gil_switch_interval_s)
    asyncio.run(serve(settings))
    return 0


def _run_client(args: argparse.Namespace) -> int:
    from web.stream.client import record_say
    from web.stream.protocol import Config

    from .render import check_output_path

    check_output_path(args.output)
    config = Config(size=args.size, fps=args.fps, audio=args.audio, avatar=args.avatar, voice=args.voice)
    rec = asyncio.run(record_say(args.url, args.text, args.output, token=args.token, config=config))
    print(f"wrote {rec.path}: {rec.media_seconds:.2f} s, {rec.video_frames} frames; first video "
          f"{_ms(rec.first_video_s)}, first audio {_ms(rec.first_audio_s)} after say")
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    from .capacity import main as capacity

    return capacity(args)


def _run_loadtest(args: argparse.Namespace) -> int:
    from .loadtest import main as loadtest

    return loadtest(args)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Perception's commands parse their own arguments (pipelines/perception/file.py,
    # pipelines/evaluation/perception_eval.py): handed over whole.
    if argv[:1] == ["perceive"]:
        from pipelines.perception.file import main as perceive_main
        return perceive_main(argv[1:])
    if argv[:2] == ["eval", "perception"]:
        from pipelines.evaluation.perception_eval import main as eval_main
        return eval_main(argv[2:])
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.debug:
        os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ logging
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        commands = {"render": _run_render, "voices": _run_voices, "train": _run_train, "eval": _run_eval, "calibrate": _run_calibrate,
                    "serve": _run_serve, "client": _run_client, "loadtest": _run_loadtest, "bench": _run_bench}
        return commands[args.command](args)
    except (ValueError, OSError) as exc:  # bad input: one line, no traceback
        if args.debug:
            raise
        print(f"avatar: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("avatar: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug, still one line unless --debug
        if args.debug:
            raise
        print(f"avatar: error: {type(exc).__name__}: {_one_line(exc)} (run with --debug for details)",
              file=sys.stderr)
        return EXIT_FAILURE
