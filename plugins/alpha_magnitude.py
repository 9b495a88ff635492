"""DARTS's own selection rule (Liu et al., 2019): keep what the architecture weights favour.

The scores are the mixing weights softmax(α).  Per intermediate node, incoming edges are
ranked by their largest weight among ops other than ``none`` and the two strongest are kept;
each kept edge takes its largest-weight op other than ``none``.  Ties go to the lower index
(edge index when ranking edges, op index when picking an op), as in DARTS's stable sort and
strict comparison.  In spaces without pruning (NAS-Bench-201) every edge takes its argmax op,
``none`` included, following the space's own rule.
"""
from __future__ import annotations

from selbench import Selection, SelectionContext, Selector, hookimpl


def select_by_alpha(ctx: SelectionContext) -> Selection:
    weights = ctx.mixing_weights()
    return Selection(genotype=ctx.space.genotype_from_scores(weights), scores=weights)


ALPHA_MAGNITUDE = Selector(
    name="alpha-magnitude",
    run=select_by_alpha,
    description="DARTS: strongest two edges per node, strongest op per edge, by softmax(α)",
)


@hookimpl
def selbench_register_selectors(register) -> None:
    register(ALPHA_MAGNITUDE)
