"""Runtime overhead: microseconds per frame per stage, with stages that do nothing.

    python -m bench.runtime_overhead [--frames 20000] [--stages 1 4 8]
"""
from __future__ import annotations

import argparse
import asyncio
import time
from fractions import Fraction
from typing import Any

from realtime import Frame, Graph, LatePolicy, MapStage, Session, Stage, StageContext


class Source(Stage):
    inputs = ()

    def __init__(self, name: str, n: int) -> None:
        super().__init__(name)
        self.n = n

    async def run(self, ctx: StageContext) -> None:
        out, tb = ctx.output(), Fraction(1, 25)
        for k in range(self.n):
            await out.put(Frame(pts=k, time_base=tb))


class Pass(MapStage):
    async def process(self, frame: Any, ctx: StageContext):  # type: ignore[override]
        yield frame


class Sink(Stage):
    outputs = ()

    async def run(self, ctx: StageContext) -> None:
        async for _ in ctx.input():
            pass


def measure(n_frames: int, n_stages: int, capacity: int = 8) -> float:
    """Seconds per frame for a chain of `n_stages` pass-through stages."""
    g = Graph("overhead")
    names = [f"p{i}" for i in range(n_stages)]
    g.add(Source("src", n_frames), *[Pass(n) for n in names], Sink("sink"))
    chain = ["src", *names, "sink"]
    for a, b in zip(chain, chain[1:], strict=False):
        g.link(f"{a}.out", f"{b}.in", capacity=capacity, policy=LatePolicy.DROP)
    t0 = time.perf_counter()
    asyncio.run(Session(g, paced=False).run())
    return (time.perf_counter() - t0) / n_frames


def main() -> list[dict[str, float]]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--stages", type=int, nargs="+", default=[0, 1, 4, 8])
    args = ap.parse_args()
    rows = []
    for n in args.stages:
        per_frame = measure(args.frames, n)
        rows.append({"stages": n, "us_per_frame": per_frame * 1e6})
        print(f"  {n} pass-through stages: {per_frame * 1e6:7.1f} us per frame", flush=True)
    base = rows[0]["us_per_frame"]
    for r in rows[1:]:
        r["us_per_frame_per_stage"] = (r["us_per_frame"] - base) / r["stages"]
        print(f"  -> {r['us_per_frame_per_stage']:.1f} us per frame per stage ({r['stages']} stages)")
    return rows


if __name__ == "__main__":
    main()
