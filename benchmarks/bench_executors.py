"""Wall time of one small grid run by ``--executor local`` and by ``--executor processes:N``, and their ratio.

The grid is the demo recipe shrunk so that the local run takes a few minutes on 2 cores (2
supernet seeds, every selector, one retrain seed, fewer epochs, a digits subset).  Both runs
start from empty runs directories and must end with the same leaderboard (the script checks
the test accuracies); the ratio local / processes is printed, not asserted.

    python benchmarks/bench_executors.py [--workers 2] [--epochs 2] [--subset 600]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_grid(executor: str, runs: Path, args: argparse.Namespace) -> tuple[float, list[tuple[str, float]]]:
    command = [sys.executable, "-m", "selbench.cli", "run", "demo", "--seeds", "0,1", "--runs", str(runs),
               "--executor", executor, "--quiet", "--format", "json",
               "--set", f"search.epochs={args.epochs}", "--set", f"retrain.epochs={args.epochs}",
               "--set", f"data.subset={args.subset}"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{executor} failed:\n{done.stderr[-2000:]}")
    table = json.loads(done.stdout[done.stdout.index("["):])
    return seconds, sorted((row["selector"], row["test_acc_mean"]) for row in table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        local, local_rows = run_grid("local", Path(scratch) / "local", args)
        parallel, parallel_rows = run_grid(f"processes:{args.workers}", Path(scratch) / "processes", args)
    if local_rows != parallel_rows:
        sys.exit(f"the leaderboards differ: {local_rows} vs {parallel_rows}")
    print(f"local {local:.1f} s, processes:{args.workers} {parallel:.1f} s: {local / parallel:.2f}x "
          f"({os.cpu_count()} CPUs, OMP_NUM_THREADS=1 per worker)")


if __name__ == "__main__":
    main()
