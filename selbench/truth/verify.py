"""Check a truth table by training a sample of its cells again.

For each sampled cell, every seed of the table is trained anew (in a fresh run store) and the
new mean test accuracy is compared with the table's.  The two agree when they differ by at most
``Z`` standard errors of a difference of two k-seed means, ``Z · seed_std · √(2/k)``, with the
pooled seed noise ``seed_std`` the table records (:mod:`selbench.truth.noise`).  On the machine
that built the table the same seeds give the same numbers; elsewhere they differ by noise.
A table with one seed records no noise, so its cells must match exactly.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from selbench.bench.store import RunStore
from selbench.core.genotype import Genotype
from selbench.recipes.recipe import Recipe
from selbench.truth.build import CellProgress, tabulate
from selbench.truth.table import TruthTable

Z = 3.0
EXACT = 1e-9  # agreement needed where the table records no noise
DEFAULT_SAMPLE = 3


@dataclass(frozen=True)
class CellCheck:
    """One re-trained cell: the table's mean test accuracy, the new one, the tolerance (fractions), agreement."""

    cell: str
    table_mean: float
    new_mean: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return abs(self.new_mean - self.table_mean) <= self.tolerance


def tolerance(table: TruthTable) -> float:
    """How far a re-trained cell's mean may be from the table's (see the module docstring)."""
    noise = table.noise
    if not noise.seed_std:
        return EXACT
    return Z * noise.seed_std * math.sqrt(2 / noise.seeds)


def sample_cells(table: TruthTable, count: int, seed: int) -> list[str]:
    """``count`` cells of the table, drawn without replacement from ``seed``."""
    cells = sorted(table.cells)
    return random.Random(seed).sample(cells, min(count, len(cells)))


def verify_table(table: TruthTable, recipe: Recipe, store: RunStore, *, sample: int = DEFAULT_SAMPLE, seed: int = 0,
                 device: str | torch.device = "cpu", progress: CellProgress | None = None) -> list[CellCheck]:
    """Re-train ``sample`` cells of ``table`` through ``store`` and compare them with it (the recipe must match)."""
    table.check_recipe(recipe)
    cells = sample_cells(table, sample, seed)
    fresh = tabulate(recipe, store, seeds=table.seeds, cells=[Genotype.parse(c) for c in cells], device=device,
                     progress=progress)
    allowed = tolerance(table)
    return [CellCheck(cell, table.cells[cell].test_mean, fresh.cells[cell].test_mean, allowed) for cell in cells]
