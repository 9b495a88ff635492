"""`selbench run`: the benchmark grid for one or more recipes, resumable through the run store."""
from __future__ import annotations

import argparse
from pathlib import Path

from selbench.bench.grid import run_grid
from selbench.bench.leaderboard import FORMATS, leaderboard
from selbench.bench.store import RUNS_ENV, RunStore, default_runs_dir
from selbench.cli.train import recipe_overrides
from selbench.core.checks import check_device, check_writable
from selbench.core.errors import OptionError
from selbench.core.options import parse_assignments
from selbench.plugin.lookup import list_selectors
from selbench.recipes.recipe import load_recipe

HELP = "train supernets, run selectors, retrain their cells (reusing finished units) and print the leaderboard"


def int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipes", nargs="+", help="recipe names or TOML paths")
    add_grid_arguments(parser, default_seeds="0")


def add_grid_arguments(parser: argparse.ArgumentParser, *, default_seeds: str) -> None:
    parser.add_argument("--selectors", default="all", help="'all' or a comma-separated list of selector names")
    parser.add_argument("--seeds", type=int_list, default=int_list(default_seeds), help="supernet seeds, e.g. 0,1")
    parser.add_argument("--retrain-seeds", type=int_list, default=[0], help="retrain seeds per selected cell")
    parser.add_argument("--runs", type=Path, default=None, help=f"runs directory (default: ${RUNS_ENV} or ./runs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--option", "-o", action="append", default=[], metavar="SELECTOR.KEY=VALUE",
                        help="selector option, e.g. -o perturbation.proj_intv=1; repeatable")
    parser.add_argument("--scorer", default="retrain",
                        help="how a selected cell is scored: retrain (default) or another registered scorer, "
                             "e.g. nb201-lookup (see `selbench plugins`)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--download", action="store_true", help="fetch missing official dataset files (MD5-checked)")
    parser.add_argument("--format", default="markdown", choices=FORMATS)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def selector_options(items: list[str]) -> dict[str, dict[str, str]]:
    options: dict[str, dict[str, str]] = {}
    for key, value in parse_assignments(items, "--option").items():
        selector, dot, name = key.partition(".")
        if not dot or not name:
            raise OptionError(f"--option {key}={value}: expected SELECTOR.KEY=VALUE, e.g. perturbation.proj_intv=1")
        options.setdefault(selector, {})[name] = value
    return options


def run_and_report(recipe_names: list[str], args: argparse.Namespace) -> int:
    device = check_device(args.device)
    runs = check_writable(args.runs or default_runs_dir(), directory=True, option="--runs")
    overrides = recipe_overrides(args)
    recipes = [load_recipe(name, overrides) for name in recipe_names]
    selectors = list_selectors() if args.selectors == "all" else [s.strip() for s in args.selectors.split(",")]
    result = run_grid(recipes, selectors, seeds=args.seeds, retrain_seeds=args.retrain_seeds, store=RunStore(runs),
                      device=device, options=selector_options(args.option), scorer=args.scorer,
                      progress=not args.quiet)
    print(f"{result.supernets} supernets, {result.selections} selections ({result.failed_selections} failed), "
          f"{result.retrains} retrains in {runs}\n")
    print(leaderboard(runs, args.format))
    return 0


def run(args: argparse.Namespace) -> int:
    return run_and_report(args.recipes, args)
