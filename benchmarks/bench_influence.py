"""The full influential-magnitude selection per ``influence`` variant: the cost of letting θ re-adapt.

Each variant selects on the same trained supernet and data (``trained`` in ``conftest.py``) with the
same seed, the demo recipe's options for the selector, one validation batch and ``order=full``;
``neumann`` and ``cg`` with their default ``iterations``.  ``extra_info`` holds the counters (HVPs, the
part of them spent inside Ĥ_θθ⁻¹, batches of each split) next to the options, so seconds per HVP
compare across variants; ``perturbation``'s cost is in the ``selection`` group (bench_selectors.py).
"""
from __future__ import annotations

import pytest

import selbench
from selbench.plugins.influential_magnitude import INFLUENCES, NAME

ROUNDS = 2


@pytest.mark.benchmark(group="influence")
@pytest.mark.parametrize("influence", INFLUENCES)
def test_influence_selection(benchmark, trained, timed, bench_device, influence):
    options = {**trained.recipe.selectors.get(NAME, {}), "influence": influence, "valid_batches": 1}

    def run() -> selbench.Selection:
        return selbench.select(trained.supernet, NAME, data=trained.data, seed=0, device=bench_device, **options)

    selection = benchmark.pedantic(timed(run), rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert selection.genotype is not None, selection
    benchmark.extra_info.update(counters=dict(selection.counters), options=options)
