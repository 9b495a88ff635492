"""`selbench run`: the benchmark grid for one or more recipes, resumable through the run store."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from selbench.bench.claims import DEFAULT_STALE_AFTER
from selbench.bench.executors import parse_executor, run_processes, summarize
from selbench.bench.grid import Grid, redo_selectors, run_stages
from selbench.bench.leaderboard import FORMATS, leaderboard
from selbench.bench.slurm import SlurmRun
from selbench.bench.store import RUNS_ENV, RunStore, default_runs_dir
from selbench.cli.train import recipe_overrides
from selbench.core.checks import check_device, check_writable
from selbench.core.errors import OptionError
from selbench.core.options import parse_assignments
from selbench.plugin.lookup import list_selectors
from selbench.recipes.recipe import load_recipe

EXIT_CRASHED = 1  # the grid ran, but some units crashed and were left for the next run

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
    parser.add_argument("--redo", default="", metavar="SELECTOR[,...]",
                        help="compute these selectors' selections and their retrains again (e.g. after a plugin's "
                             "code changed without a version bump); the old units are kept as <key>.replaced")
    parser.add_argument("--executor", default="local", metavar="local|processes:N|slurm",
                        help="where units run: this process (default), N worker processes on this machine (one GPU "
                             "each with --device cuda), or Slurm jobs through submitit (pip install 'selbench[slurm]')")
    parser.add_argument("--executor-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="Slurm job settings: partition, time (minutes), gpus, cpus, mem_gb, array_parallelism")
    parser.add_argument("--stale-after", type=float, default=DEFAULT_STALE_AFTER, metavar="SECONDS",
                        help="take over a unit whose worker sent no heartbeat for this long (a worker on another "
                             "host; a dead process on this host is noticed at once; default "
                             f"{DEFAULT_STALE_AFTER:.0f})")


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
    redo = [name.strip() for name in args.redo.split(",") if name.strip()]
    if args.stale_after <= 0:
        raise OptionError(f"--stale-after {args.stale_after:g}: expected a positive number of seconds")
    executor, workers = parse_executor(args.executor)
    if args.executor_opt and executor != "slurm":
        raise OptionError(f"--executor-opt applies to --executor slurm, not {args.executor}")
    executor_options = {key: value for recipe in recipes for key, value in recipe.executor.items()}
    executor_options.update(parse_assignments(args.executor_opt, "--executor-opt"))
    store = RunStore(runs, stale_after=args.stale_after)
    grid = Grid(tuple(recipes), tuple(selectors), tuple(args.seeds), tuple(args.retrain_seeds),
                selector_options(args.option), args.scorer, str(device), progress=not args.quiet)
    grid.check()
    slurm = SlurmRun(grid, store, executor_options) if executor == "slurm" else None  # its errors before any work
    redo_selectors(grid, store, redo)
    if slurm is not None:
        slurm.submit()
        slurm.wait()
    elif executor == "processes":
        run_processes(grid, runs, workers, stale_after=args.stale_after)
    else:
        run_stages(grid, store)
    result = summarize(grid, store)
    print(f"{result.supernets} supernets, {result.selections} selections ({result.failed_selections} failed), "
          f"{result.retrains} retrains in {runs}\n")
    print(leaderboard(runs, args.format))
    if result.crashed:
        print(f"selbench: {len(result.crashed)} unit(s) crashed ({'; '.join(result.crashed)}): the exception and "
              f"traceback are in their record.json under {runs}; run the same command again to retry them",
              file=sys.stderr)
        return EXIT_CRASHED
    return 0


def run(args: argparse.Namespace) -> int:
    return run_and_report(args.recipes, args)
