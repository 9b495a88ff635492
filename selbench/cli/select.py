"""`selbench select`: run one selector on a supernet checkpoint and print the genotype."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping, cast

from selbench.core.options import parse_assignments
from selbench.plugin.lookup import get_selector
from selbench.recipes.recipe import load_recipe
from selbench.select.run import select
from selbench.train.checkpoint import checkpoint_data, load_supernet

HELP = "select a discrete cell from a supernet checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("supernet", help="supernet checkpoint (selbench, DARTS or DARTS-PT format)")
    parser.add_argument("--selector", required=True, help="selector name (see `selbench plugins`)")
    parser.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="selector option; repeatable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--space", default=None, help="space of a foreign checkpoint (default: darts)")
    parser.add_argument("--out", type=Path, help="write the selection (genotype, scores, counters) as JSON here")
    parser.add_argument("--recipe", help="recipe whose [data] rebuilds the supernet's splits, for selectors that need "
                        "data on checkpoints not written by `selbench train` (default: the checkpoint's own recipe)")


def run(args: argparse.Namespace) -> int:
    options: dict[str, Any] = parse_assignments(args.option)
    supernet = load_supernet(args.supernet, space=args.space)
    data = None
    if get_selector(args.selector).needs_data:
        recipe = load_recipe(args.recipe) if args.recipe else None
        metadata = cast(Mapping[str, Any], supernet.metadata)  # attached by load_supernet
        data = checkpoint_data(metadata, recipe=recipe, seed=args.seed, device=args.device)
    selection = select(supernet, args.selector, data=data, seed=args.seed, device=args.device, **options)
    print(selection.genotype if selection.genotype is not None else f"failed selection: {selection.failure}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(selection.to_dict(), indent=2) + "\n")
    return 0
