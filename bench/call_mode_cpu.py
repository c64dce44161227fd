"""Server CPU of one call per mode, with the caller's microphone sending speech.

    python -m bench.call_mode_cpu [--size 256] [--seconds 10]

One `avatar serve` process; an aiortc caller (espeak speech as its microphone) in agent mode,
then another in mirror mode; the server's process_cpu_seconds_total over `--seconds` each.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench.call_latency import metric, speech_wav  # noqa: E402
from callutil import CallClient, server_process  # noqa: E402


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    wav = speech_wav(Path("/tmp/bench-call-mode-mic.wav"), args.seconds + 10)
    size = args.size
    async with server_process(call_size=size, sizes=[size], size=size, voice="en-us") as http:
        for mode in ("agent", "mirror"):
            print(f"{mode} call at {size}², {args.seconds:.0f} s ...", flush=True)
            c = CallClient(http, wav=str(wav), mode=mode, keep_video=False)
            assert await c.start() == 201
            await asyncio.sleep(3)
            cpu0, t0 = await metric(http, "process_cpu_seconds_total"), time.monotonic()
            await asyncio.sleep(args.seconds)
            cores = (await metric(http, "process_cpu_seconds_total") - cpu0) / (time.monotonic() - t0)
            print(f"  {mode}: server {cores:.2f} cores", flush=True)
            await c.close()


if __name__ == "__main__":
    asyncio.run(main())
