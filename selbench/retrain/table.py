"""The built-in ``table`` scorer: a cell's accuracy looked up in a table of every cell, not retrained.

Tables come from the registered table sources (:class:`TableSource`): selbench's own tables made
by ``selbench tabulate`` (the ``truth-tables`` plugin) and NAS-Bench-201 (``nb201-lookup``).  For a
recipe the scorer takes the first source, by name, whose ``check`` accepts it; the score is that
table's mean test accuracy over its seeds.  A recipe no source covers, or a cell the table does
not hold, is one clear error naming what each source said.
"""
from __future__ import annotations

from typing import Any

from selbench.core.errors import SelbenchError
from selbench.plugin.host import hookimpl
from selbench.plugin.lookup import table_sources
from selbench.retrain.scorer import Scorer, ScoringContext
from selbench.retrain.table_source import TableSource

NAME = "table"


def covering_source(recipe: Any) -> TableSource:
    """The first table source (by name) that covers ``recipe``; none is one error with every source's reason."""
    sources = table_sources()
    reasons = []
    for source in sources:
        try:
            source.check(recipe)
        except SelbenchError as exc:
            reasons.append(f"{source.name}: {exc}")
            continue
        return source
    detail = "; ".join(reasons) if reasons else "no table source is installed"
    raise SelbenchError(f"{NAME} scorer: no table covers recipe {recipe.name!r} ({detail})")


def _score(ctx: ScoringContext) -> dict[str, Any]:
    return {**covering_source(ctx.recipe).score(ctx.genotype, ctx.recipe)}


def _check(recipe: Any) -> None:
    covering_source(recipe)


TABLE_SCORER = Scorer(name=NAME, score=_score, check=_check,
                      description="look the cell up in a table of every cell (selbench tabulate's tables, "
                                  "NAS-Bench-201): mean test accuracy over the table's seeds")


@hookimpl
def selbench_register_scorers(register) -> None:
    register(TABLE_SCORER)
