"""`selbench select`: run one selector on a supernet checkpoint and print the genotype."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..checkpoint import load_supernet
from ..options import parse_assignments
from ..selection import select

HELP = "select a discrete cell from a supernet checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("supernet", help="supernet checkpoint (selbench, DARTS or DARTS-PT format)")
    parser.add_argument("--selector", required=True, help="selector name (see `selbench plugins`)")
    parser.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="selector option; repeatable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--space", default=None, help="space of a foreign checkpoint (default: darts)")
    parser.add_argument("--out", type=Path, help="write the selection (genotype, scores, counters) as JSON here")


def run(args: argparse.Namespace) -> int:
    options = parse_assignments(args.option)
    supernet = load_supernet(args.supernet, space=args.space)
    selection = select(supernet, args.selector, seed=args.seed, device=args.device or "cpu", **options)
    print(selection.genotype if selection.genotype is not None else f"failed selection: {selection.failure}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(selection.to_dict(), indent=2) + "\n")
    return 0
