"""`selbench recipes`: the built-in recipes, one line each."""
from __future__ import annotations

import argparse

from tabulate import tabulate

from selbench.recipes.recipe import list_recipes

HELP = "list the built-in recipes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["plain", "github"], default="plain", help="table style")


def run(args: argparse.Namespace) -> int:
    rows = [(r.name, r.data["dataset"], r.search["mode"], r.search["epochs"], r.description) for r in list_recipes()]
    print(tabulate(rows, headers=["recipe", "dataset", "mode", "epochs", "description"], tablefmt=args.format))
    return 0
