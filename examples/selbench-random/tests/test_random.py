"""The random selector through selbench's test kit: a valid cell in every built-in space, one cell per seed."""
from __future__ import annotations

from selbench.testing import run_selector, tiny_supernet

SEEDS = range(4)


def test_a_valid_cell_in_every_builtin_space(builtin_space):
    for seed in SEEDS:
        # run_selector checks the cell against the space's rules (inputs per node, ops, concat)
        run = run_selector("random", space=builtin_space, seed=seed)
        assert run.genotype is not None
        assert run.distribution == "selbench-random"  # found through the entry point of the installed distribution


def test_the_same_seed_gives_the_same_cell(tiny_darts_supernet):
    first, again = (run_selector("random", supernet=tiny_darts_supernet, seed=3) for _ in range(2))
    assert first.genotype == again.genotype


def test_different_seeds_give_different_cells(builtin_space):
    supernet = tiny_supernet(builtin_space)
    cells = {str(run_selector("random", supernet=supernet, seed=seed).genotype) for seed in SEEDS}
    assert len(cells) == len(SEEDS)
