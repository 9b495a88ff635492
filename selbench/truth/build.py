"""Build a truth table: train every cell of a recipe's space with every seed, one run-store unit each.

Each (cell, seed) is a ``tabulate`` unit whose configuration is the cell, the seed and
:func:`selbench.truth.table.truth_config` of the recipe, so a second call reuses every finished
unit and an interrupted one resumes at its last finished epoch.  A cell trains as the
``retrain`` scorer trains it, with ``holdout``: on the recipe's θ split, scored on the α split
(validation accuracy) and on the test set.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch

from selbench.bench.store import RunStore, Unit, UnitWork
from selbench.core.errors import SelbenchError
from selbench.core.genotype import Genotype
from selbench.recipes.recipe import Recipe
from selbench.retrain.training import retrain
from selbench.truth.table import CellEntry, TruthTable, recipe_space, seed_order, truth_config, truth_hash

KIND = "tabulate"
DEFAULT_SEEDS = (0, 1, 2)

CellProgress = Callable[[int, int], None]


def all_cells(recipe: Recipe) -> list[Genotype]:
    """Every cell of the recipe's space, in the space's own order; a space that cannot list them is an error."""
    space = recipe_space(recipe)
    enumerate_cells = getattr(space, "all_genotypes", None)
    if enumerate_cells is None:
        raise SelbenchError(f"recipe {recipe.name!r}: the {space.name} space cannot list its cells; a truth table "
                            "needs a space with all_genotypes() (e.g. nb201 with few ops and steps)")
    return list(enumerate_cells())


def cell_unit(store: RunStore, recipe: Recipe, genotype: Genotype, seed: int, device: torch.device) -> Unit:
    """Train (or reuse) one cell with one seed; the unit's result is :func:`retrain`'s score dict."""
    config = {"cell": str(genotype), "seed": int(seed), "truth": truth_config(recipe)}

    def compute(work: UnitWork) -> dict[str, Any]:
        score = retrain(genotype, recipe, seed=seed, device=device, out_dir=work.directory, holdout=True)
        for name in score["artifacts"]:
            work.add_artifact(name)
        return {key: value for key, value in score.items() if key != "artifacts"}

    unit = store.run_unit(KIND, config, compute)
    if unit.status != "complete":
        raise SelbenchError(f"training cell {genotype} with seed {seed} did not finish ({unit.status}); "
                            f"see {unit.directory}")
    return unit


def tabulate(recipe: Recipe, store: RunStore, *, seeds: Sequence[int] = DEFAULT_SEEDS,
             cells: Iterable[Genotype] | None = None, device: str | torch.device = "cpu",
             progress: CellProgress | None = None) -> TruthTable:
    """The table of ``cells`` (default: every cell of the recipe's space) × ``seeds``, trained through ``store``.

    ``progress(done, total)`` is called after each (cell, seed).
    """
    device, seeds = torch.device(device), seed_order(seeds)
    chosen = all_cells(recipe) if cells is None else list(cells)
    total, entries = len(chosen) * len(seeds), {}
    for position, genotype in enumerate(chosen):
        results = []
        for offset, seed in enumerate(seeds):
            results.append(cell_unit(store, recipe, genotype, seed, device).result)
            if progress is not None:
                progress(position * len(seeds) + offset + 1, total)
        entries[str(genotype)] = CellEntry(
            test_accuracy=tuple(float(r["test_accuracy"]) for r in results),
            valid_accuracy=tuple(float(r["valid_accuracy"]) for r in results),
            params_m=float(results[0]["params_m"]), macs_m=float(results[0]["macs_m"]),
            seconds=tuple(float(r["seconds"]) for r in results))
    return TruthTable(recipe.name, truth_hash(recipe), truth_config(recipe), seeds, entries)
