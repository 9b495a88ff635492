"""`selbench select`: run one selector on a supernet checkpoint and print the genotype."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping, cast

from selbench.core.checks import check_device, check_writable
from selbench.core.files import atomic_write_json
from selbench.core.options import parse_assignments
from selbench.plugin.lookup import get_selector
from selbench.recipes.recipe import load_recipe
from selbench.select.run import select
from selbench.train.checkpoint import DartsOutputWarning, checkpoint_data, checkpoint_recipe, load_supernet

HELP = "select a discrete cell from a supernet checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("supernet", help="supernet checkpoint (selbench, DARTS or DARTS-PT format)")
    parser.add_argument("--selector", required=True, help="selector name (see `selbench plugins`)")
    parser.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="selector option; repeatable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--space", default=None, help="space of a foreign checkpoint (default: darts)")
    parser.add_argument("--alphas", type=Path, metavar="FILE", help="for DARTS's bare weights.pt: the captured stdout "
                        "of its train_search.py, whose last two printed softmax(α) tables give α (normal, reduce)")
    parser.add_argument("--ops", metavar="OP,OP,...", help="op order of a foreign checkpoint whose op set its shapes "
                        "cannot tell (e.g. max_pool_3x3 and avg_pool_3x3 swapped); default: DARTS's 8 ops or "
                        "DARTS-PT's 7, by the op count of α")
    parser.add_argument("--out", type=Path, help="write the selection (genotype, scores, counters) as JSON here")
    parser.add_argument("--recipe", help="recipe whose [data] rebuilds the supernet's splits, for selectors that need "
                        "data on checkpoints not written by `selbench train` (default: the checkpoint's own recipe)")


def run(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    if args.out:
        check_writable(args.out, directory=False)
    options: dict[str, Any] = parse_assignments(args.option)
    space_args = {"ops": [op.strip() for op in args.ops.split(",") if op.strip()]} if args.ops else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DartsOutputWarning)
        supernet = load_supernet(args.supernet, space=args.space, alphas=args.alphas, **space_args)
    for warning in caught:
        print(f"selbench: warning: {warning.message}", file=sys.stderr)
    data = None
    metadata = cast(Mapping[str, Any], supernet.metadata)  # attached by load_supernet
    recipe = load_recipe(args.recipe) if args.recipe else checkpoint_recipe(metadata)
    if get_selector(args.selector).needs_data:
        data = checkpoint_data(metadata, recipe=recipe, seed=args.seed, device=device)
    selection = select(supernet, args.selector, data=data, seed=args.seed, device=device,
                       search=recipe.search if recipe is not None else None, **options)
    print(selection.genotype if selection.genotype is not None else f"failed selection: {selection.failure}")
    if args.out:
        atomic_write_json(selection.to_dict(), args.out)
    return 0
