"""`selbench worker`: compute units of a saved grid in one worker (started by the processes and Slurm executors)."""
from __future__ import annotations

import argparse
from pathlib import Path

from selbench.bench.claims import DEFAULT_STALE_AFTER
from selbench.bench.executors import run_worker
from selbench.bench.grid import STAGES, GridResult

HELP = "compute the units of a saved grid that no other worker has claimed (the executors start this)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", type=Path, help="a grid file written by `selbench run` (RUNS/grids/KEY.json)")
    parser.add_argument("--runs", type=Path, required=True, help="the runs directory the grid belongs to")
    parser.add_argument("--stage", choices=STAGES, default=None, help="only one unit: its stage ...")
    parser.add_argument("--slot", type=int, default=None, help="... and its slot in that stage")
    parser.add_argument("--stale-after", type=float, default=DEFAULT_STALE_AFTER, metavar="SECONDS")


def run(args: argparse.Namespace) -> int:
    outcome = run_worker(args.grid, args.runs, stale_after=args.stale_after, stage=args.stage, slot=args.slot)
    if isinstance(outcome, GridResult):
        return 1 if outcome.crashed else 0
    return 1 if outcome == "crashed" else 0
