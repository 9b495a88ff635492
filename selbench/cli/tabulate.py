"""`selbench tabulate`: train every cell of a recipe's space into a truth table, or check a table (--verify)."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from selbench.bench.store import RUNS_ENV, RunStore, default_runs_dir
from selbench.cli.run import int_list
from selbench.core.checks import check_device, check_writable
from selbench.recipes.recipe import Recipe, load_recipe
from selbench.truth.build import DEFAULT_SEEDS, tabulate
from selbench.truth.catalog import table_for
from selbench.truth.noise import NoiseSummary
from selbench.truth.table import TableError, TruthTable, read_table, write_table
from selbench.truth.verify import DEFAULT_SAMPLE, verify_table

HELP = "train every cell of a recipe's space (3 seeds) into a truth table, or --verify a table by re-training cells"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="built-in recipe name or TOML path; its space must list its cells (e.g. nb201)")
    parser.add_argument("--seeds", type=int_list, default=list(DEFAULT_SEEDS), help="training seeds per cell (0,1,2)")
    parser.add_argument("--runs", type=Path, default=None,
                        help=f"run store for the cell trainings (default: ${RUNS_ENV} or ./runs)")
    parser.add_argument("--out", type=Path, default=None, help="table file to write (default: tables/RECIPE.json)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--verify", action="store_true",
                        help="re-train --sample cells of the recipe's table (in a fresh store) and compare")
    parser.add_argument("--sample", type=int,
                        default=DEFAULT_SAMPLE, help=f"cells --verify re-trains (default {DEFAULT_SAMPLE})")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of --verify's choice of cells")
    parser.add_argument("--table", type=Path, default=None,
                        help="the table --verify checks (default: the known table of the recipe)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    recipe = load_recipe(args.recipe, args.overrides)
    if args.verify:
        return _verify(recipe, args, device)
    runs = check_writable(args.runs or default_runs_dir(), directory=True, option="--runs")
    out = check_writable(args.out or Path("tables") / f"{recipe.name}.json", directory=False)
    counts = {"computing": 0, "reused": 0}
    with _bar(args.quiet) as progress:
        table = tabulate(recipe, RunStore(runs, log=_counting_log(counts)), seeds=args.seeds, device=device,
                         progress=progress)
    write_table(table, out)
    print(f"{len(table.cells)} cells × {len(table.seeds)} seeds of {recipe.name} ({counts['computing']} trained now, "
          f"{counts['reused']} reused; {table.build_seconds / 60:.1f} min of training in all) -> {out}")
    print(describe_noise(table.noise))
    return 0


def _verify(recipe: Recipe, args: argparse.Namespace, device) -> int:
    table: TruthTable = read_table(args.table) if args.table else table_for(recipe)
    if args.sample < 1:
        raise TableError(f"--sample must be at least 1, got {args.sample}")
    with tempfile.TemporaryDirectory(prefix="selbench-verify-") as scratch, _bar(args.quiet) as progress:
        checks = verify_table(table, recipe, RunStore(scratch, log=_counting_log({})), sample=args.sample,
                              seed=args.sample_seed, device=device, progress=progress)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.cell}: table {100 * check.table_mean:.2f} %, "
              f"re-trained {100 * check.new_mean:.2f} % (allowed ± {100 * check.tolerance:.2f})")
    failed = [check.cell for check in checks if not check.ok]
    if failed:
        raise TableError(f"the {table.recipe} table disagrees with re-training on {len(failed)} of {len(checks)} cells "
                         f"(beyond the seed noise it records): {', '.join(failed)}")
    print(f"the {table.recipe} table agrees with re-training on {len(checks)} of {len(checks)} cells")
    return 0


def describe_noise(noise: NoiseSummary) -> str:
    """Seed noise against cell spread in words (percentage points)."""
    if noise.seed_std is None or noise.mean_se is None or noise.separation is None:
        return f"cell means spread from Q1 {100 * noise.q1:.2f} % to Q3 {100 * noise.q3:.2f} %; one seed: no noise"
    return (f"seed-to-seed std {100 * noise.seed_std:.2f} pp (std error of a cell mean {100 * noise.mean_se:.2f} pp); "
            f"std of the cell means {100 * (noise.cell_std or 0):.2f} pp, quartiles {100 * noise.q1:.2f} % and "
            f"{100 * noise.q3:.2f} %: {noise.separation:.1f} standard errors apart; "
            f"{100 * (noise.pairs_separated or 0):.0f} % of top-vs-bottom-quartile pairs differ by more than 2")


def _counting_log(counts: dict[str, int]) -> Callable[[str], None]:
    """The run store's log: reuse and computation lines are counted, anything else (a problem) is printed."""
    def log(message: str) -> None:
        word = message.split(" ", 1)[0]
        if word in ("computing", "reused"):
            counts[word] = counts.get(word, 0) + 1
        else:
            print(f"selbench: {message}", flush=True)
    return log


class _bar:
    """A tqdm bar over (cell, seed) trainings as a ``progress(done, total)`` callback; nothing when quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tqdm: tqdm | None = None

    def __enter__(self) -> Callable[[int, int], None] | None:
        return None if self.quiet else self.update

    def update(self, done: int, total: int) -> None:
        if self.tqdm is None:
            self.tqdm = tqdm(total=total, desc="cells × seeds", unit="training", dynamic_ncols=True)
        self.tqdm.update(done - self.tqdm.n)

    def __exit__(self, *exc: object) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
