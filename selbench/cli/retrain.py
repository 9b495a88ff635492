"""`selbench retrain`: train one genotype from scratch with a recipe's [retrain] section and score it."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from selbench.core.checks import check_device, check_writable
from selbench.core.errors import GenotypeError
from selbench.core.genotype import Genotype
from selbench.recipes.recipe import load_recipe
from selbench.retrain.identity import retrain_key
from selbench.retrain.scoring import score_genotype

HELP = "retrain a genotype from scratch and report its test accuracy, parameters and multiply-adds"


def read_genotype(text: str) -> Genotype:
    """A genotype from a JSON file (genotype, selection JSON, or the record.json of a run store's selection or
    retrain unit), a text file holding DARTS text or an NAS-Bench-201 string, DARTS text, or an NAS-Bench-201
    string."""
    if text.lstrip().startswith(("Genotype(", "|", "{")):
        return Genotype.parse(text)
    path = Path(text)
    if path.suffix == ".json":
        if not path.is_file():
            raise GenotypeError(f"genotype file {path}: no such file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise GenotypeError(f"genotype file {path} is not UTF-8 JSON ({exc})") from None
        except OSError as exc:
            raise GenotypeError(f"genotype file {path} cannot be read ({exc.strerror or exc})") from None
        if isinstance(data, dict) and isinstance(data.get("result"), dict):  # a unit record of a run store
            data = data["result"]
        return Genotype.from_json(data.get("genotype", data) if isinstance(data, dict) else data)
    if path.is_file():
        try:
            return Genotype.parse(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise GenotypeError(f"genotype file {path} is not UTF-8 text ({exc})") from None
    return Genotype.parse(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("genotype", help="JSON file, DARTS text 'Genotype(...)' or NAS-Bench-201 string")
    parser.add_argument("--recipe", required=True, help="recipe whose [data] and [retrain] sections to use")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="directory for the network and resume state")


def run(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    genotype = read_genotype(args.genotype)
    recipe = load_recipe(args.recipe, args.overrides)
    key = retrain_key(genotype, recipe, args.seed)  # another genotype, recipe or seed: another directory
    out_dir = args.out or Path("runs") / "retrains" / f"{recipe.name}-seed{args.seed}-{key}"
    check_writable(out_dir, directory=True)
    result = score_genotype("retrain", genotype, recipe, seed=args.seed, device=device, out_dir=out_dir,
                            progress=lambda label, done, total: print(f"{label}: epoch {done}/{total}", flush=True))
    print(json.dumps({k: v for k, v in result.items() if k != "artifacts"}, indent=2))
    return 0
