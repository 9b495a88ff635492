"""Selection quality against a truth table: how good the chosen cell is among all cells, and τ of per-op scores.

For a recipe with a truth table (:mod:`selbench.truth`), each selection's cell is looked up:

* ``true accuracy``: the cell's mean test accuracy over the table's seeds (%);
* ``rank percentile``: the share of the other cells of the table that the chosen cell beats
  (ties count half): 100 = the best cell, 0 = the worst (%);
* ``regret``: the best cell's true accuracy minus the chosen cell's (percentage points).

The **true importance** of op o on edge e is the mean true accuracy of the cells that use op o
on edge e minus the mean true accuracy of the cells that use edge e at all (every cell, where
every edge is kept, as in NAS-Bench-201): how much choosing o there gains over that edge's
average choice.  ``τ`` is Kendall's τ-b between a selection's per-(edge, op) scores (larger =
better, every cell type's table flattened in cell-type order) and these importances, pairs
undefined in either left out.

A leaderboard row averages each quantity over its selections that found a cell the table holds
(τ: over its selections with scores).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, fields
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

from selbench.bench.records import SelectionRecord
from selbench.truth.catalog import table_named
from selbench.truth.table import TruthTable

QUALITY_HEADERS = ("true acc (%)", "rank pct", "regret (pp)", "τ vs truth")


@dataclass(frozen=True)
class CellQuality:
    """One chosen cell against the table: true accuracy (%), rank percentile (%), regret (percentage points)."""

    true_accuracy: float
    rank_percentile: float
    regret: float


@dataclass(frozen=True)
class RowQuality:
    """Means over a leaderboard row's selections (``None`` where none gives a value)."""

    true_acc: float | None = None
    rank_percentile: float | None = None
    regret: float | None = None
    tau: float | None = None


def cell_quality(means: Mapping[str, float], cell: str) -> CellQuality:
    """Quality of ``cell`` among ``means`` (cell text → true accuracy as a fraction); see the module docstring."""
    chosen = means[cell]
    others = [value for name, value in means.items() if name != cell]
    beaten = sum(value < chosen for value in others) + 0.5 * sum(value == chosen for value in others)
    return CellQuality(true_accuracy=100.0 * chosen, rank_percentile=100.0 * beaten / len(others) if others else 100.0,
                       regret=100.0 * (max(means.values()) - chosen))


def op_importance(table: TruthTable) -> dict[str, np.ndarray]:
    """Cell type → ``[edges, ops]`` true importance in percentage points (NaN: the op never on that edge)."""
    space = table.config["space"]
    edge_of = {(int(src), int(dst)): index for index, (src, dst) in enumerate(space["edges"])}
    ops = list(space["ops"])
    first_node = int(space["num_input_nodes"])
    with_op: dict[tuple[str, int, int], list[float]] = defaultdict(list)
    with_edge: dict[tuple[str, int], list[float]] = defaultdict(list)
    for genotype, entry in table.genotypes():
        for cell_type, node, src, op in genotype.edge_choices():
            edge = edge_of[src, first_node + node]
            with_op[cell_type, edge, ops.index(op)].append(100.0 * entry.test_mean)
            with_edge[cell_type, edge].append(100.0 * entry.test_mean)
    importance = {}
    for cell_type in space["cell_types"]:
        values = np.full((len(edge_of), len(ops)), np.nan)
        for (kind, edge, column), accuracies in with_op.items():
            if kind == cell_type:
                values[edge, column] = np.mean(accuracies) - np.mean(with_edge[cell_type, edge])
        importance[cell_type] = values
    return importance


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float | None:
    """Kendall's τ-b of two flattened score tables, NaN entries left out; None where it is undefined."""
    if x.shape != y.shape:
        return None
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return None
    tau = float(stats.kendalltau(x, y).statistic)
    return None if math.isnan(tau) else tau


def importance_tau(scores: Mapping[str, object], importance: Mapping[str, np.ndarray]) -> float | None:
    """τ between per-(edge, op) ``scores`` (cell type → [E, O] tensor or array) and the true importance."""
    if set(scores) != set(importance):
        return None
    order = sorted(scores)
    flat = np.concatenate([np.asarray(scores[cell_type], dtype=np.float64).ravel() for cell_type in order])
    truth = np.concatenate([importance[cell_type].ravel() for cell_type in order])
    return kendall_tau(flat, truth)


def row_quality(table: TruthTable, selections: Sequence[SelectionRecord]) -> RowQuality:
    """The quality columns of one leaderboard row (its selections on one recipe) against ``table``."""
    means = table.means()
    importance = op_importance(table)
    cells = [cell_quality(means, str(s.selection.genotype)) for s in selections
             if s.selection.genotype is not None and str(s.selection.genotype) in means]
    taus = [importance_tau(s.selection.scores, importance) for s in selections if s.selection.scores]
    defined = [tau for tau in taus if tau is not None]
    return RowQuality(true_acc=_mean([c.true_accuracy for c in cells]),
                      rank_percentile=_mean([c.rank_percentile for c in cells]),
                      regret=_mean([c.regret for c in cells]), tau=_mean(defined))


def recipe_quality(recipe: str, selections: Sequence[SelectionRecord]) -> RowQuality:
    """:func:`row_quality` against the known table made from a recipe called ``recipe``; empty where there is none."""
    table = table_named(recipe)
    return RowQuality() if table is None else row_quality(table, selections)


def quality_cells(row: object) -> list[str]:
    """The formatted quality columns (under :data:`QUALITY_HEADERS`) of a row with :class:`RowQuality`'s fields."""
    values = [getattr(row, f.name) for f in fields(RowQuality)]
    return [_fmt(value, spec) for value, spec in zip(values, (".2f", ".1f", ".2f", ".2f"))]


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
