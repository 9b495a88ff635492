"""`selbench leaderboard`: aggregate a runs directory into one row per (recipe, selector)."""
from __future__ import annotations

import argparse
from pathlib import Path

from selbench.bench.leaderboard import FORMATS, REFERENCE_SELECTOR, leaderboard
from selbench.bench.store import RUNS_ENV, default_runs_dir

HELP = "print the leaderboard of a runs directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", nargs="?", type=Path, default=None, metavar="RUNS_DIR",
                        help=f"runs directory (default: ${RUNS_ENV} or ./runs)")
    parser.add_argument("--format", choices=FORMATS, default="markdown", help="output format (default: markdown)")
    parser.add_argument("--reference", default=None,
                        help="selector the p-values and shared fractions compare against "
                             f"(default: {REFERENCE_SELECTOR})")


def run(args: argparse.Namespace) -> int:
    print(leaderboard(args.runs_dir or default_runs_dir(), args.format, reference=args.reference or REFERENCE_SELECTOR,
                      require_reference=args.reference is not None))
    return 0
