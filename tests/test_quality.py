"""Selection quality against a truth table: hand-made tables whose answers are known, and the leaderboard columns."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from selbench import Selection, SelectionRun
from selbench.bench.leaderboard import build_rows, render
from selbench.bench.quality import cell_quality, importance_tau, op_importance, row_quality
from selbench.bench.records import SelectionRecord
from selbench.recipes.recipe import Recipe
from selbench.truth.catalog import TABLES_ENV
from selbench.truth.table import CellEntry, TruthTable, recipe_space, truth_config, truth_hash, write_table

SKIP, CONV, POOL = "skip_connect", "nor_conv_1x1", "avg_pool_3x3"


def hand_table(name: str, ops, steps: int, accuracy) -> TruthTable:
    """A table of every cell of nb201(ops, steps), cell → two seeds at ``accuracy(choices) ± 0.01``."""
    recipe = Recipe.from_dict({"name": name, "supernet": {"space": "nb201", "steps": steps, "ops": list(ops)}})
    space = recipe_space(recipe)
    cells = {}
    for chosen in itertools.product(ops, repeat=space.num_edges):
        genotype = space.genotype_from_choices({"cell": dict(enumerate(chosen))})
        mean = accuracy(chosen)
        cells[str(genotype)] = CellEntry((mean - 0.01, mean + 0.01), (mean, mean), 0.1, 1.0, (1.0, 1.0))
    return TruthTable(name, truth_hash(recipe), truth_config(recipe), (0, 1), cells)


# one edge, three ops: three cells at 91 %, 81 %, 71 %
THREE = hand_table("hand", (SKIP, CONV, POOL), 1, lambda chosen: {SKIP: 0.91, CONV: 0.81, POOL: 0.71}[chosen[0]])
THREE_CELL = {op: next(g for g, _ in THREE.genotypes() if str(g) == f"|{op}~0|") for op in (SKIP, CONV, POOL)}


@pytest.mark.parametrize("op, true_acc, percentile, regret", [(SKIP, 91, 100, 0), (CONV, 81, 50, 10),
                                                               (POOL, 71, 0, 20)])
def test_true_accuracy_rank_percentile_and_regret_by_hand(op, true_acc, percentile, regret):
    quality = cell_quality(THREE.means(), f"|{op}~0|")
    assert quality.true_accuracy == pytest.approx(true_acc)
    assert quality.rank_percentile == pytest.approx(percentile)
    assert quality.regret == pytest.approx(regret)


def test_ties_count_half_in_the_rank_percentile():
    assert cell_quality({"a": 0.5, "b": 0.5, "c": 0.4}, "a").rank_percentile == pytest.approx(75.0)


def test_importance_of_three_cells_and_tau_of_scores_ordered_like_it():
    importance = op_importance(THREE)["cell"]
    np.testing.assert_allclose(importance, [[10.0, 0.0, -10.0]], atol=1e-9)  # each op's mean minus the edge's 81
    assert importance_tau({"cell": torch.tensor([[3.0, 2.0, 1.0]])}, {"cell": importance}) == pytest.approx(1.0)
    assert importance_tau({"cell": torch.tensor([[1.0, 2.0, 3.0]])}, {"cell": importance}) == pytest.approx(-1.0)
    assert importance_tau({"cell": torch.tensor([[1.0, 3.0, 2.0]])}, {"cell": importance}) == pytest.approx(-1 / 3)


def test_importance_recovers_additive_op_effects_on_three_edges():
    effects = {0: {SKIP: 0.04, CONV: -0.04}, 1: {SKIP: -0.01, CONV: 0.01}, 2: {SKIP: 0.02, CONV: -0.02}}
    table = hand_table("additive", (SKIP, CONV), 2,
                       lambda chosen: 0.8 + sum(effects[edge][op] for edge, op in enumerate(chosen)))
    assert len(table.cells) == 8
    np.testing.assert_allclose(op_importance(table)["cell"], [[4, -4], [-1, 1], [2, -2]], atol=1e-9)


def record(selector: str, genotype, scores, supernet: str = "s0", recipe: str = "hand") -> SelectionRecord:
    selection = Selection(genotype=genotype, scores=scores, failure=None if genotype is not None else "no cell")
    return SelectionRecord(recipe, supernet, 0, SelectionRun(selection, selector=selector))


def test_row_quality_averages_over_selections_with_a_cell_and_with_scores():
    selections = [record("a", THREE_CELL[CONV], {"cell": torch.tensor([[3.0, 2.0, 1.0]])}),
                  record("a", THREE_CELL[SKIP], None, "s1"),
                  record("a", None, {"cell": torch.tensor([[1.0, 2.0, 3.0]])}, "s2")]
    quality = row_quality(THREE, selections)
    assert quality.true_acc == pytest.approx(86.0) and quality.rank_percentile == pytest.approx(75.0)
    assert quality.regret == pytest.approx(5.0) and quality.tau == pytest.approx(0.0)


def test_leaderboard_shows_quality_columns_for_a_recipe_with_a_table(tmp_path, monkeypatch):
    monkeypatch.setenv(TABLES_ENV, str(write_table(THREE, tmp_path / "hand.json")))
    selections = [record("alpha-magnitude", THREE_CELL[POOL], {"cell": torch.tensor([[1.0, 2.0, 3.0]])}),
                  record("random", THREE_CELL[SKIP], None),
                  record("alpha-magnitude", THREE_CELL[POOL], None, recipe="untabulated")]
    rows = {(row.recipe, row.selector): row for row in build_rows(selections, [])}
    best = rows["hand", "random"]
    assert (best.true_acc, best.rank_percentile, best.regret, best.tau) == (pytest.approx(91), 100, 0, None)
    worst = rows["hand", "alpha-magnitude"]
    assert (worst.true_acc, worst.rank_percentile, worst.regret) == (pytest.approx(71), 0, pytest.approx(20))
    assert worst.tau == pytest.approx(-1.0)
    assert rows["untabulated", "alpha-magnitude"].true_acc is None
    text = render(list(rows.values()))
    assert "true acc (%)" in text and "τ vs truth" in text and "91.00" in text and "-1.00" in text

