"""All benchmarks of BENCHMARKS.md, with progress; results also in bench/out/results.json."""
from __future__ import annotations

import json
import os
import platform
import sys

import torch


def main() -> None:
    from . import render_speed, runtime_overhead

    results = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                           "torch": torch.__version__, "platform": platform.platform()}}
    print("[1/2] runtime overhead", flush=True)
    sys.argv = [sys.argv[0]]
    results["runtime_overhead"] = runtime_overhead.main()
    print("[2/2] render speed", flush=True)
    results.update(render_speed.main())
    os.makedirs("bench/out", exist_ok=True)
    with open("bench/out/results.json", "w") as f:
        json.dump(results, f, indent=2)
    print("wrote bench/out/results.json")


if __name__ == "__main__":
    main()
