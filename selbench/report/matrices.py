"""Selector × selector comparisons on the same supernets: shared cell choices and Kendall τ of per-op scores.

Both matrices are computed per recipe from the selection records of a run store; a pair of
selectors is compared only on supernets where both made a selection.

* **Agreement** ``A[a, b]``: per supernet, :func:`selbench.bench.leaderboard.shared_fraction`
  of the two genotypes (shared (cell type, node, input, op) choices divided by the larger
  choice count, as the leaderboard's ``shared`` column), then the mean over the supernets.  A
  failed selection has no cell and takes no part.  The diagonal is 1 for every selector with a
  cell.
* **Kendall τ** ``T[a, b]``: per supernet, :func:`scipy.stats.kendalltau` (τ-b, ties
  accounted for) of the two selectors' per-(edge, op) score tables, every cell type's
  ``[edges, ops]`` table flattened and concatenated in cell-type order (every op, ``none``
  included), then the mean over the supernets.  Scores are used when a selection recorded
  them, also when it found no cell (τ compares rankings, not cells); selections without
  scores take no part.  Entries that are not finite (NaN) in either table are left out; a
  supernet where the tables' shapes differ or either is constant gives no τ.  The diagonal
  is 1 for every selector with scores.

With several selections of one selector on one supernet (e.g. other seeds), every pair of a
selection of ``a`` and one of ``b`` counts, averaged per supernet first.  Where no supernet
gives a value the entry is undefined (NaN), and ``counts[a, b]`` says on how many supernets
each entry rests.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from selbench.bench.leaderboard import shared_fraction
from selbench.bench.quality import kendall_tau
from selbench.bench.records import SelectionRecord


@dataclass(frozen=True)
class SelectorMatrix:
    """A symmetric selectors × selectors table: ``values`` (NaN: undefined) and ``counts`` (supernets behind each)."""

    selectors: tuple[str, ...]
    values: np.ndarray
    counts: np.ndarray

    def value(self, a: str, b: str) -> float:
        return float(self.values[self.selectors.index(a), self.selectors.index(b)])


def flat_scores(record: SelectionRecord) -> np.ndarray | None:
    """The record's per-(edge, op) scores of every cell type, flattened in cell-type order; None without scores."""
    scores = record.selection.scores
    if not scores:
        return None
    return np.concatenate([np.asarray(scores[cell_type], dtype=np.float64).ravel() for cell_type in scores])


def agreement_matrix(records: Iterable[SelectionRecord], selectors: Sequence[str] | None = None) -> SelectorMatrix:
    """Mean shared fraction of (cell, node, input, op) choices per pair of selectors (module docstring)."""
    return _pairwise(records, selectors, lambda r: r.selection.genotype,
                     lambda a, b: shared_fraction(a, b))


def kendall_matrix(records: Iterable[SelectionRecord], selectors: Sequence[str] | None = None) -> SelectorMatrix:
    """Mean Kendall τ of the per-op score tables per pair of selectors (module docstring)."""
    return _pairwise(records, selectors, flat_scores, kendall_tau)


def _pairwise(records: Iterable[SelectionRecord], selectors: Sequence[str] | None,
              item: Callable[[SelectionRecord], object | None],
              compare: Callable[..., float | None]) -> SelectorMatrix:
    """Per supernet, ``compare`` every pair of items of two selectors, mean per supernet, then over supernets."""
    by_supernet: dict[str, dict[str, list[object]]] = defaultdict(lambda: defaultdict(list))
    names: set[str] = set()
    for record in records:
        names.add(record.selection.selector)
        value = item(record)
        if value is not None:
            by_supernet[record.supernet_key][record.selection.selector].append(value)
    order = tuple(selectors) if selectors is not None else tuple(sorted(names))
    n = len(order)
    values, counts = np.full((n, n), np.nan), np.zeros((n, n), dtype=int)
    for i, a in enumerate(order):
        for j, b in enumerate(order):
            if i == j:
                supernets = sum(1 for items in by_supernet.values() if items.get(a))
                values[i, j], counts[i, j] = (1.0 if supernets else np.nan), supernets
                continue
            per_supernet = []
            for items in by_supernet.values():
                pairs = [compare(x, y) for x in items.get(a, []) for y in items.get(b, [])]
                defined = [p for p in pairs if p is not None]
                if defined:
                    per_supernet.append(float(np.mean(defined)))
            if per_supernet:
                values[i, j], counts[i, j] = float(np.mean(per_supernet)), len(per_supernet)
    return SelectorMatrix(order, values, counts)
