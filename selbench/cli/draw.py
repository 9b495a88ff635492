"""`selbench draw`: one genotype's cells drawn as a graph, into an SVG or PNG file."""
from __future__ import annotations

import argparse
from pathlib import Path

from selbench.cli.retrain import read_genotype
from selbench.report.cells import save_drawing

HELP = "draw a genotype's cells (nodes in order, edges labelled with their ops) as SVG or PNG"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("genotype", help="JSON file (genotype or `selbench select --out` selection), a text file "
                                         "holding one, DARTS text 'Genotype(...)' or NAS-Bench-201 string")
    parser.add_argument("--out", type=Path, default=Path("cell.svg"),
                        help="file to write, .svg or .png (default: cell.svg)")
    parser.add_argument("--title", default=None, help="a title above the drawing")


def run(args: argparse.Namespace) -> int:
    out = save_drawing(read_genotype(args.genotype), args.out, args.title)
    print(f"drawing: {out}")
    return 0
