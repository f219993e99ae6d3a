"""Print how long the Dagster code location takes to load, in a fresh interpreter each time.

Usage: .venv/bin/python benchmarks/code_location_load.py [runs]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

PROBE = "import orchestration.definitions as d; d.defs.resolve_asset_graph()"


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", PROBE], check=True)
        seconds.append(time.perf_counter() - started)
    print(
        f"code location load over {runs} fresh interpreters: "
        f"median {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s"
    )
    print(
        f"load_median_s={statistics.median(seconds):.3f} load_max_s={max(seconds):.3f} runs={runs}"
    )


if __name__ == "__main__":
    main()
