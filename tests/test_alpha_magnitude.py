"""alpha-magnitude: DARTS's selection rule, checked on hand-made α whose answer is worked out by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import selbench
from darts_reference import (
    DARTS_OPS,
    DARTS_PT_OPS,
    NORMAL_7,
    NORMAL_7_EXPECTED,
    NORMAL_8,
    NORMAL_8_EXPECTED,
    NUM_EDGES,
    REDUCE_7,
    REDUCE_7_EXPECTED,
    REDUCE_8,
    REDUCE_8_EXPECTED,
    alpha_table,
)
from selbench import Genotype


def build_supernet(ops: list[str]):
    return selbench.get_space("darts").build_supernet(C=2, layers=2, num_classes=3, in_channels=1, ops=ops)


def select_with(ops: list[str], alphas: dict[str, torch.Tensor]) -> selbench.Selection:
    supernet = build_supernet(ops)
    with torch.no_grad():
        for cell_type, alpha in alphas.items():
            supernet.alphas[cell_type].copy_(alpha)
    return selbench.select(supernet, "alpha-magnitude", seed=0)


def test_golden_cells_with_none_largest_everywhere():
    alphas = {"normal": alpha_table(DARTS_OPS, NORMAL_8, none=6.0),
              "reduce": alpha_table(DARTS_OPS, REDUCE_8, none=6.0)}
    assert (alphas["normal"].argmax(dim=1) == 0).all() and (alphas["reduce"].argmax(dim=1) == 0).all()
    selection = select_with(DARTS_OPS, alphas)
    assert selection.genotype == Genotype({"normal": NORMAL_8_EXPECTED, "reduce": REDUCE_8_EXPECTED})
    assert selection.genotype["normal"].concat == (2, 3, 4, 5)


def test_golden_cells_in_the_darts_pt_space():
    alphas = {"normal": alpha_table(DARTS_PT_OPS, NORMAL_7), "reduce": alpha_table(DARTS_PT_OPS, REDUCE_7)}
    selection = select_with(DARTS_PT_OPS, alphas)
    assert selection.genotype == Genotype({"normal": NORMAL_7_EXPECTED, "reduce": REDUCE_7_EXPECTED})


def test_cell_types_are_selected_independently():
    """Swapping the two α tables swaps the two cells."""
    alphas = {"normal": alpha_table(DARTS_OPS, REDUCE_8, none=6.0),
              "reduce": alpha_table(DARTS_OPS, NORMAL_8, none=6.0)}
    selection = select_with(DARTS_OPS, alphas)
    assert selection.genotype == Genotype({"normal": REDUCE_8_EXPECTED, "reduce": NORMAL_8_EXPECTED})


def test_scores_are_the_softmax_weights_and_the_callers_supernet_is_untouched():
    supernet = build_supernet(DARTS_OPS)
    with torch.no_grad():
        supernet.alphas["normal"].copy_(alpha_table(DARTS_OPS, NORMAL_8, none=6.0))
    before = {k: a.detach().clone() for k, a in supernet.alphas.items()}
    selection = selbench.select(supernet, "alpha-magnitude")
    for cell_type, alpha in supernet.alphas.items():
        assert torch.equal(alpha, before[cell_type])
        torch.testing.assert_close(selection.scores[cell_type], F.softmax(before[cell_type], dim=-1))
    assert selection.selector == "alpha-magnitude"
    assert selection.distribution == "selbench"


def darts_rule(weights: list[list[float]], ops: list[str], steps: int = 4) -> list[tuple[str, int]]:
    """DARTS's ``genotype()`` written out plainly: the reference the selector must agree with."""
    pairs = []
    start = 0
    for node in range(steps):
        rows = weights[start : start + node + 2]

        def strength(src: int, rows: list[list[float]] = rows) -> float:
            return max(w for k, w in enumerate(rows[src]) if ops[k] != "none")

        kept = sorted(range(node + 2), key=lambda src: -strength(src))[:2]
        for src in kept:
            best = None
            for k, w in enumerate(rows[src]):
                if ops[k] != "none" and (best is None or w > rows[src][best]):
                    best = k
            pairs.append((ops[best], src))
        start += node + 2
    return pairs


@pytest.mark.parametrize("ops", [DARTS_OPS, DARTS_PT_OPS], ids=["darts", "darts-pt"])
def test_agrees_with_the_plain_rule_on_random_alpha_with_many_ties(ops):
    supernet = build_supernet(ops)
    # the selector's own entry point on a context, without select()'s private copy of the supernet per trial
    ctx = selbench.SelectionContext(supernet, options={}, seed=0, device=torch.device("cpu"), data=None,
                                    selector="alpha-magnitude")
    run = selbench.get_selector("alpha-magnitude").run
    generator = torch.Generator().manual_seed(0)
    for trial in range(25):
        with torch.no_grad():
            for alpha in supernet.alphas.values():
                # few distinct values: exact ties between ops and between identical rows are frequent
                alpha.copy_(torch.randint(0, 3, alpha.shape, generator=generator).float())
                alpha[torch.randint(0, NUM_EDGES, (4,), generator=generator)] = alpha[0].clone()
        selection = run(ctx)
        for cell_type in ("normal", "reduce"):
            expected = darts_rule(selection.scores[cell_type].tolist(), ops)
            assert selection.genotype[cell_type].pairs == expected, (trial, cell_type)
