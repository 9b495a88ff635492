"""The ``truth-tables`` table source: the ``table`` scorer reads the known truth tables through it.

Which tables are known, and which one covers a recipe: :mod:`selbench.truth.catalog`.
"""
from __future__ import annotations

import time
from typing import Any

from selbench.core.genotype import Genotype
from selbench.plugin.host import hookimpl
from selbench.recipes.recipe import Recipe
from selbench.retrain.table_source import TableSource
from selbench.truth.catalog import TABLES_ENV, table_for

NAME = "truth-tables"


def table_score(genotype: Genotype, recipe: Recipe) -> dict[str, Any]:
    """The score dict of ``genotype`` in the table of ``recipe`` (test accuracy: the mean over the table's seeds)."""
    start = time.perf_counter()
    table = table_for(recipe)
    entry = table.entry(genotype)
    return {"test_accuracy": entry.test_mean, "valid_accuracy": entry.valid_mean, "params_m": entry.params_m,
            "macs_m": entry.macs_m, "seconds": time.perf_counter() - start, "device": "table", "artifacts": [],
            "table": table.recipe, "table_hash": table.recipe_hash, "table_seeds": len(table.seeds)}


def check_covered(recipe: Recipe) -> None:
    """Raise :class:`selbench.truth.table.TableError` unless a known table covers ``recipe``."""
    table_for(recipe)


TRUTH_TABLES = TableSource(name=NAME, check=check_covered, score=table_score,
                           description=f"tables made by `selbench tabulate`: shipped ones and ${TABLES_ENV}")


@hookimpl
def selbench_register_table_sources(register) -> None:
    register(TRUTH_TABLES)
