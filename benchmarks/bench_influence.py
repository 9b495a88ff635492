"""The full influential-magnitude selection per ``influence`` variant: the cost of letting θ re-adapt.

Each variant selects on the same trained supernet and data (``trained`` in ``conftest.py``) with the
same seed, the demo recipe's options for the selector, one validation batch and ``order=full``;
``neumann`` and ``cg`` with their default ``iterations``.  ``extra_info`` holds the counters (HVPs, the
part of them spent inside Ĥ_θθ⁻¹, batches of each split) next to the options, so seconds per HVP
compare across variants; ``perturbation``'s cost is in the ``selection`` group (bench_selectors.py).
``test_supernet_step`` times one search step's gradient work (forward, loss, backward into θ and α)
on one training batch of the same supernet, in the same group: the unit the README converts HVP
counts into supernet epochs with.
"""
from __future__ import annotations

import pytest
from bench_supernet import supernet_step

import selbench
from selbench.plugins.influential_magnitude import INFLUENCES, NAME

ROUNDS = 2
STEP_ROUNDS = 10


@pytest.mark.benchmark(group="influence")
@pytest.mark.parametrize("influence", INFLUENCES)
def test_influence_selection(benchmark, trained, timed, bench_device, influence):
    options = {**trained.recipe.selectors.get(NAME, {}), "influence": influence, "valid_batches": 1}

    def run() -> selbench.Selection:
        return selbench.select(trained.supernet, NAME, data=trained.data, seed=0, device=bench_device, **options)

    selection = benchmark.pedantic(timed(run), rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert selection.genotype is not None, selection
    benchmark.extra_info.update(counters=dict(selection.counters), options=options)


@pytest.mark.benchmark(group="influence")
def test_supernet_step(benchmark, trained, timed):
    images, labels = next(iter(trained.data.batches("train")))
    benchmark.pedantic(timed(supernet_step), (trained.supernet.train(), images, labels), rounds=STEP_ROUNDS,
                       iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(batch=len(labels))
