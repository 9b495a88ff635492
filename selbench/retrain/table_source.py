"""The table-source contract: where the ``table`` scorer looks cells up (NAS-Bench-201, selbench's own tables).

A plugin registers ``TableSource(name, check, score)`` through ``selbench_register_table_sources``:

* ``check(recipe)`` raises a :class:`selbench.SelbenchError` saying why the source holds no
  table for this recipe (another space, dataset or training); it returns for a recipe it covers;
* ``score(genotype, recipe)`` returns the cell's score dict, as a :class:`selbench.Scorer`'s
  ``score`` does (``test_accuracy``: the table's mean over its seeds), and raises a
  ``SelbenchError`` for a cell the table does not hold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from selbench.core.genotype import Genotype


@dataclass(frozen=True)
class TableSource:
    """A registered table of cells for the ``table`` scorer (see the module docstring)."""

    name: str
    check: Callable[[Any], None]
    score: Callable[[Genotype, Any], Mapping[str, Any]]
    description: str = ""
