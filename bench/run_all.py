"""All benchmarks of BENCHMARKS.md, with progress; results also in bench/out/results.json."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import torch


def main() -> None:
    from . import render_speed, runtime_overhead

    results = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                           "torch": torch.__version__, "platform": platform.platform()}}
    n = 2 + len(SEPARATE)
    print(f"[1/{n}] runtime overhead", flush=True)
    sys.argv = [sys.argv[0]]
    results["runtime_overhead"] = runtime_overhead.main()
    print(f"[2/{n}] render speed", flush=True)
    results.update(render_speed.main())
    os.makedirs("bench/out", exist_ok=True)
    with open("bench/out/results.json", "w") as f:
        json.dump(results, f, indent=2)
    print("wrote bench/out/results.json")
    # The others run servers of their own and write their own bench/out/*.json.
    for i, module in enumerate(SEPARATE, start=3):
        print(f"[{i}/{n}] {module}", flush=True)
        subprocess.run([sys.executable, "-m", module], check=True)


SEPARATE = ["bench.motion_latency", "bench.ws_latency", "bench.call_latency", "bench.call_mode_cpu"]


if __name__ == "__main__":
    main()
