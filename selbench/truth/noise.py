"""Seed noise against the spread between cells: does a truth table separate cells better than chance does?

From per-cell, per-seed accuracies (k seeds per cell):

* ``seed_std``: the pooled seed-to-seed standard deviation, √(mean over cells of each cell's
  sample variance, ddof=1) — how much one training differs from another of the same cell;
* ``mean_se``: ``seed_std / √k``, the standard error of a cell's mean;
* ``cell_std``: the sample standard deviation of the cell means — the spread between cells;
* ``q1``, ``q3``: the lower and upper quartiles of the cell means;
* ``separation``: ``(q3 − q1) / (seed_std · √(2/k))``, the gap between the quartile boundaries in
  standard errors of a difference of two cell means; above 2 even the cells at the two
  boundaries are told apart;
* ``pairs_separated``: the share of (top-quartile cell, bottom-quartile cell) pairs whose means
  differ by more than 2 such standard errors; near 1 the truth tells good cells from bad ones
  better than the noise of k seeds blurs them.

Undefined values (one seed, or no seed noise at all) are ``None``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class NoiseSummary:
    """Seed noise and cell spread of a table (see the module docstring); fractions, like the accuracies."""

    cells: int
    seeds: int
    seed_std: float | None
    mean_se: float | None
    cell_std: float | None
    q1: float
    q3: float
    separation: float | None
    pairs_separated: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def noise_summary(per_cell: Sequence[Sequence[float]]) -> NoiseSummary:
    """The summary of ``per_cell[i][j]`` = accuracy of cell i with seed j (every cell has the same seeds)."""
    values = np.asarray(per_cell, dtype=np.float64)
    cells, seeds = values.shape
    means = values.mean(axis=1)
    q1, q3 = (float(q) for q in np.quantile(means, [0.25, 0.75]))
    seed_std = float(np.sqrt(values.var(axis=1, ddof=1).mean())) if seeds > 1 else None
    diff_se = seed_std * math.sqrt(2 / seeds) if seed_std else None
    quarter = max(cells // 4, 1)
    ordered = np.sort(means)
    bottom, top = ordered[:quarter], ordered[-quarter:]
    return NoiseSummary(
        cells=cells, seeds=seeds, seed_std=seed_std,
        mean_se=None if seed_std is None else seed_std / math.sqrt(seeds),
        cell_std=float(means.std(ddof=1)) if cells > 1 else None,
        q1=q1, q3=q3,
        separation=None if diff_se is None else (q3 - q1) / diff_se,
        pairs_separated=None if diff_se is None else float(np.mean(top[:, None] - bottom[None, :] > 2 * diff_se)),
    )
