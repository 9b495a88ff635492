"""Selection overhead of every registered selector, third-party ones included, measured the same way.

Each selector selects cells on the same trained supernet and data (``trained`` in
``conftest.py``) with the same seed; the options are the ``demo`` recipe's [selectors] table
(cheap settings), tightened by :data:`CHEAP_OPTIONS` so that the whole suite stays within
minutes on a CPU.  ``extra_info`` holds the selection's counters (forward passes, HVPs, fine-tune
steps), its options and its genotype.
"""
from __future__ import annotations

from typing import Any

import pytest

import selbench

ROUNDS = 3
# beyond the demo recipe's table: limits for selectors that default to the whole validation split
CHEAP_OPTIONS: dict[str, dict[str, Any]] = {
    "cost-sign": {"batches": 2},
    "perturbation": {"valid_batches": 1},
    "influential-magnitude": {"probes": 8, "valid_batches": 1},
}


def options_for(name: str, recipe: selbench.Recipe) -> dict[str, Any]:
    return {**recipe.selectors.get(name, {}), **CHEAP_OPTIONS.get(name, {})}


@pytest.mark.benchmark(group="selection")
@pytest.mark.parametrize("selector", selbench.list_selectors())
def test_selection(benchmark, trained, timed, bench_device, selector):
    options = options_for(selector, trained.recipe)
    needs_data = selbench.get_selector(selector).needs_data

    def run() -> selbench.Selection:
        return selbench.select(trained.supernet, selector, data=trained.data if needs_data else None, seed=0,
                               device=bench_device, **options)

    selection = benchmark.pedantic(timed(run), rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert selection.genotype is not None or selection.failure, selection
    benchmark.extra_info.update(counters=dict(selection.counters), options=options,
                                genotype=str(selection.genotype) if selection.genotype is not None else None,
                                failure=selection.failure, distribution=selection.distribution,
                                version=selection.version)
