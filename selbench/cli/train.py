"""`selbench train`: train a recipe's supernet; killed and run again, it resumes where it stopped."""
from __future__ import annotations

import argparse
from pathlib import Path

from selbench.core.checks import check_device, check_writable
from selbench.core.files import read_json
from selbench.recipes.recipe import Recipe, load_recipe
from selbench.train.driver import train_supernet
from selbench.train.record import RECORD_FILE, TRAIN_SECTIONS

HELP = "train a recipe's supernet (resumes an interrupted run)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="built-in recipe name (see `selbench recipes`) or path to a TOML file")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split, the initialisation and every shuffle")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value, e.g. --set search.epochs=10; repeatable")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/supernets/RECIPE-seedN-HASH)")
    parser.add_argument("--download", action="store_true", help="fetch missing official dataset files (MD5-checked)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def recipe_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides, plus ``data.download=true`` for ``--download``."""
    return list(args.overrides) + (["data.download=true"] if args.download else [])


def default_out_dir(recipe: Recipe, seed: int) -> Path:
    return Path("runs") / "supernets" / f"{recipe.name}-seed{seed}-{recipe.config_hash(*TRAIN_SECTIONS)[:10]}"


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, recipe_overrides(args))
    device = check_device(args.device)
    out_dir = check_writable(args.out or default_out_dir(recipe, args.seed), directory=True)
    checkpoint = train_supernet(recipe, seed=args.seed, device=device, out_dir=out_dir, progress=not args.quiet)
    record_path = checkpoint.with_name(RECORD_FILE)
    history = read_json(record_path, f"delete {record_path.parent} to train again")["epochs"]
    accuracy = history[-1].get("valid_accuracy") if history else None
    shown = f"{accuracy:.4f}" if isinstance(accuracy, float) else "n/a"
    print(f"supernet {checkpoint} (recipe {recipe.name}, seed {args.seed}, {len(history)} epochs, "
          f"valid accuracy {shown})")
    return 0
