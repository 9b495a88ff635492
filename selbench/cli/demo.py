"""`selbench demo`: `selbench run demo` with every registered selector and two supernet seeds."""
from __future__ import annotations

import argparse

from selbench.cli.run import add_grid_arguments, run_and_report

HELP = "run the demo grid (digits, every selector, 2 supernet seeds) and print its leaderboard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_grid_arguments(parser, default_seeds="0,1")


def run(args: argparse.Namespace) -> int:
    return run_and_report(["demo"], args)
