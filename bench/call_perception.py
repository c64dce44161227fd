"""What perceiving the caller costs a call: the avatar's frame rate and late frames with and
without `call_perception`, and perception's own CPU per call.

    python -m bench.call_perception [--size 512] [--seconds 20] [--calls 1]

A fresh `avatar serve` per setting; callers send a 640x480 25 fps talking-face camera clip
(pipelines/evaluation/talking_clip.py, looped) with its speech as the microphone, in agent
mode. Figures: the capacity step's (avatar.capacity.step: fps received, late or dropped in
the server, server CPU in cores); perception's CPU per call is the difference of the server's
CPU with and without it (the caller's camera decoded, and perceived), per call. JSON to
bench/results/.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from avatar.capacity import _server, step
from pipelines.evaluation.talking_clip import talking_camera


async def measure(size: int, seconds: float, calls: int, camera: str, perception: bool) -> dict[str, Any]:
    env = {"AVATAR_CALL_PERCEPTION": "1" if perception else "0"}
    async with _server(size, max(4, calls), **env) as url:
        counts: dict[str, float] = {"n": 0, "with_face": 0}
        feed = asyncio.create_task(_count_faces(url, counts)) if perception else None
        try:
            r = await step(url, calls, "agent", seconds, None, camera=camera)
        finally:
            if feed is not None:
                feed.cancel()
        if feed is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await feed
    r["perception"] = perception
    if perception:  # proof that the caller's camera was perceived, not only received
        r["faces_records"] = counts["n"]
        r["faces_records_with_a_face"] = counts["with_face"]
        span = counts.get("t1", 0.0) - counts.get("t0", 0.0)
        r["perceived_fps"] = round((counts["n"] - 1) / span, 2) if span > 0 else 0.0
    return r


async def _count_faces(url: str, counts: dict[str, float]) -> None:
    """Counts the `faces` records on the server-wide perception feed (GET /v1/perception)."""
    async with aiohttp.ClientSession() as s, s.ws_connect(url.replace("http", "ws") + "/v1/perception") as ws:
        async for msg in ws:
            rec = json.loads(msg.data)
            if rec.get("type") == "faces":
                counts["n"] += 1
                counts.setdefault("t0", time.monotonic())
                counts["t1"] = time.monotonic()
                counts["with_face"] += bool(rec.get("faces"))


async def main_async(args: argparse.Namespace, cam: str) -> dict[str, Any]:
    out: dict[str, Any] = {"size": args.size, "seconds": args.seconds, "calls": args.calls, "runs": []}
    for i, perception in enumerate([False, True] * args.repeat):
        print(f"[{i + 1}/{2 * args.repeat}] perception {'on' if perception else 'off'}, {args.calls} call(s) "
              f"at {args.size}², {args.seconds:.0f} s", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        r = await measure(args.size, args.seconds, args.calls, cam, perception)
        r["wall_s"] = round(time.monotonic() - t0, 1)
        out["runs"].append(r)
        print(json.dumps({k: r[k] for k in ("perception", "min_fps", "late_share", "lost_share", "cpu_cores", "faces_records", "faces_records_with_a_face", "perceived_fps") if k in r}),
              flush=True)
    on = [r["cpu_cores"] for r in out["runs"] if r["perception"]]
    off = [r["cpu_cores"] for r in out["runs"] if not r["perception"]]
    out["perception_cpu_cores_per_call"] = round((sum(on) / len(on) - sum(off) / len(off)) / args.calls, 3)
    print(f"perception: {out['perception_cpu_cores_per_call']} cores per call (server CPU, on - off)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", default="bench/results/call-perception.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cam = str(talking_camera(Path(d) / "camera.mp4"))  # (it runs its own event loop)
        out = asyncio.run(main_async(args, cam))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
