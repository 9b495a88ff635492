"""`selbench report`: a run store as one self-contained HTML page (leaderboard, cells, agreement, trajectories)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from selbench.bench.leaderboard import REFERENCE_SELECTOR
from selbench.bench.store import RUNS_ENV, default_runs_dir
from selbench.core.checks import check_writable
from selbench.report.html import write_report

HELP = "write a run store's leaderboard, cells, selector agreement and trajectories as one HTML page"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", nargs="?", type=Path, default=None, metavar="RUNS",
                        help=f"runs directory (default: ${RUNS_ENV} or ./runs)")
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file to write (default: "
                                                                               "report.html)")
    parser.add_argument("--reference", default=None,
                        help=f"selector the leaderboard compares against (default: {REFERENCE_SELECTOR})")


def run(args: argparse.Namespace) -> int:
    check_writable(args.out, directory=False)
    start = time.perf_counter()
    out = write_report(args.runs_dir or default_runs_dir(), args.out, reference=args.reference or REFERENCE_SELECTOR,
                       require_reference=args.reference is not None)
    print(f"report: {out} ({out.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)")
    return 0
