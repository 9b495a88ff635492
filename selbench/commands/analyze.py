"""`selbench analyze`: per-edge α and cost trajectories of a supernet training run, as a table and a plot."""
from __future__ import annotations

import argparse
from pathlib import Path

from tabulate import tabulate

from ..analysis import QUANTITIES, has_cost_records, load_run, summary_headers, summary_rows
from ..errors import SelbenchError

HELP = "summarise and plot how a supernet run's α and op costs evolved per edge"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="a `selbench train --out` directory, a supernet directory of a run "
                                               "store, or its supernet.json")
    parser.add_argument("--plot", choices=list(QUANTITIES),
                        help="draw this quantity per edge over the epochs (needs matplotlib: selbench[plot])")
    parser.add_argument("--out", type=Path, help="PNG to write (default: QUANTITY.png in the run directory)")
    parser.add_argument("--format", choices=["plain", "github"], default="plain", help="table style")


def run(args: argparse.Namespace) -> int:
    if args.out is not None and args.plot is None:
        raise SelbenchError("--out names the plot's file; add --plot alphas or --plot costs")
    training = load_run(args.run)
    if args.plot is not None:
        from ..plots import plot_trajectories, pyplot

        pyplot()  # a missing matplotlib is reported before any work is done
        trajectories = QUANTITIES[args.plot](training)
    print(training.title)
    for quantity in [args.plot] if args.plot else QUANTITIES:
        if quantity == "costs" and not has_cost_records(training):
            continue
        print(f"\n{quantity}: first and last epoch, per edge group")
        rows = summary_rows(training, quantity, trajectories if quantity == args.plot else None)
        print(tabulate(list(rows), headers=summary_headers(quantity), tablefmt=args.format))
    if args.plot is not None:
        out = args.out or training.directory / f"{args.plot}.png"
        plot_trajectories(training, args.plot, trajectories, out)
        print(f"\nplot: {out}")
    return 0
