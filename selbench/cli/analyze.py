"""`selbench analyze`: per-edge α (and observed, e.g. cost) trajectories of a supernet run, as a table and a plot."""
from __future__ import annotations

import argparse
from pathlib import Path

from tabulate import tabulate

from selbench.core.checks import check_writable
from selbench.core.errors import SelbenchError
from selbench.report.trajectories import (
    EDGES,
    TrainingRun,
    edge_count_rows,
    edge_counts,
    has_records,
    load_run,
    quantities,
    quantity_named,
    signed_quantity,
    summary_headers,
    summary_rows,
    trajectories,
)

HELP = "summarise and plot how a supernet run's α and observed quantities (e.g. op costs) evolved per edge"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="a `selbench train --out` directory, a supernet directory of a run "
                                               "store, or its supernet.json")
    parser.add_argument("--plot", metavar="QUANTITY",
                        help="draw this quantity per edge over the epochs: alphas, or one an installed plugin's "
                             "training observer declares, e.g. costs; or edges: per cell type, the number of edges "
                             "whose costs are below zero (kept) over the epochs (needs matplotlib: selbench[plot])")
    parser.add_argument("--out", type=Path, help="PNG to write (default: QUANTITY.png in the run directory)")
    parser.add_argument("--format", choices=["plain", "github"], default="plain", help="table style")


def run(args: argparse.Namespace) -> int:
    if args.out is not None and args.plot is None:
        raise SelbenchError("--out names the plot's file; add --plot alphas or --plot costs")
    training = load_run(args.run)
    # an unknown quantity (or, for edges, a run without a signed one) is reported before any work is done
    counted = signed_quantity(training) if args.plot == EDGES else None
    if args.plot is not None:
        from selbench.report.plots import pyplot

        if counted is None:
            quantity_named(args.plot)
        pyplot()  # so is a missing matplotlib
        check_writable(args.out or training.directory / f"{args.plot}.png", directory=False)  # and an unwritable place
    print(training.title)
    if counted is not None:
        return _plot_edges(training, counted, args)
    shown = [args.plot] if args.plot else [name for name, (observer, _) in quantities().items()
                                           if has_records(training, observer)]
    built = {}
    for name in shown:
        quantity = quantity_named(name)[1]
        built[name] = trajectories(training, name)
        print(f"\n{name}: first and last epoch, per edge group")
        rows = summary_rows(training, quantity, built[name])
        print(tabulate(list(rows), headers=summary_headers(quantity), tablefmt=args.format))
    if args.plot is not None:
        from selbench.report.plots import plot_trajectories

        out = args.out or training.directory / f"{args.plot}.png"
        plot_trajectories(training, quantity_named(args.plot)[1], built[args.plot], out)
        print(f"\nplot: {out}")
    return 0


def _plot_edges(training: TrainingRun, name: str, args: argparse.Namespace) -> int:
    from selbench.report.plots import plot_edge_counts

    counts = edge_counts(training.layout, trajectories(training, name))
    headers, rows = edge_count_rows(counts)
    print(f"\nedges with {name} < 0 per epoch: all (input + intermediate), of {len(training.layout.edges)} per cell")
    print(tabulate(rows, headers=headers, tablefmt=args.format))
    out = plot_edge_counts(training, quantity_named(name)[1], counts, args.out or training.directory / f"{EDGES}.png")
    print(f"\nplot: {out}")
    return 0
