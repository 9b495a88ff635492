"""The random-cell baseline as a selbench plugin: a uniformly random valid cell, drawn from the seed.

Random search over cells is the standard sanity baseline of NAS papers: a selection rule that
cannot beat it on the leaderboard has not learned anything from the supernet.  For every cell
type and every intermediate node, the sampler draws the required number of distinct inputs
uniformly among the node's predecessors (all of them where the space keeps every edge, as in
NAS-Bench-201), then one op uniformly among the ops a discrete cell may use on that edge.  It reads only
``ctx.space`` and ``ctx.rng`` (seeded by selbench from ``--seed``), so one seed always gives
one cell, and it works in any registered space.
"""
from __future__ import annotations

import random

from selbench import Genotype, SearchSpace, Selection, SelectionContext, Selector, hookimpl


def sample_genotype(space: SearchSpace, rng: random.Random) -> Genotype:
    """A uniformly random valid genotype of ``space``."""
    choices = {}
    for cell_type in space.cell_types:
        chosen = {}
        for node in space.nodes:
            incoming = space.edges_into(node)
            keep = len(incoming) if space.in_degree is None else space.in_degree
            for edge in rng.sample(incoming, keep):
                ops = space.edge_ops(cell_type, edge.index)  # column k of this edge is ops[k]
                chosen[edge.index] = ops[rng.choice(space.edge_selectable(cell_type, edge.index))]
        choices[cell_type] = chosen
    return space.genotype_from_choices(choices)


def select_random(ctx: SelectionContext) -> Selection:
    return Selection(genotype=sample_genotype(ctx.space, ctx.rng))


RANDOM = Selector(
    name="random",
    run=select_random,
    description="baseline: a uniformly random valid cell (distinct inputs and ops drawn from the seed)",
)


@hookimpl
def selbench_register_selectors(register) -> None:
    register(RANDOM)
