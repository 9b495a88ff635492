"""The four built-in selectors on a tiny NAS-Bench-201 supernet, each against an independent computation.

NAS-Bench-201 keeps every edge and lets ``none`` be chosen, so each selector's cell is the
per-edge argmax of what it measures: softmax(α) (alpha magnitude), the accuracy or loss drop
when the op is masked (perturbation, compared with a brute-force masked evaluation), the
Taylor importance (influential magnitude, compared with an autograd Hessian) and −cost
(cost sign, compared with autograd gradients).  The expected cell strings are assembled by
hand from the benchmark's edge order (1←0, 2←0, 2←1, 3←0, 3←1, 3←2).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import selbench
from conftest import tiny_data, tiny_nb201_supernet
from selbench.plugins.cost_sign import top2_selection, wiring_selection

pytestmark = pytest.mark.usefixtures("one_thread")

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGE_SOURCES = ((0,), (0, 1), (0, 1, 2))  # inputs of nodes 1, 2, 3; rows of α in this order


def cell_string(ops_per_edge: list[str]) -> str:
    """The benchmark's string for a cell given the op of each edge in α-row order."""
    ops = iter(ops_per_edge)
    return "+".join("|" + "|".join(f"{next(ops)}~{src}" for src in sources) + "|" for sources in EDGE_SOURCES)


def argmax_cell(table: torch.Tensor) -> str:
    """Per edge the op with the largest score (first one on ties), ``none`` included, as a cell string."""
    rows = table.tolist()
    return cell_string([OPS[max(range(len(row)), key=lambda k: (row[k], -k))] for row in rows])


def valid_batches(data):
    return list(data.batches("valid"))


# -- alpha magnitude --------------------------------------------------------------------------------
def test_alpha_magnitude_is_the_per_edge_argmax_of_softmax_alpha_none_included():
    supernet = tiny_nb201_supernet(C=2)
    alpha = torch.tensor([
        [2.0, 1.0, 0.0, 0.0, 0.0],  # none wins
        [0.0, 0.0, 0.0, 3.0, 0.0],
        [0.5, 0.5, 0.0, 0.0, 0.0],  # tie between none and skip: the lower index, none
        [0.0, 0.0, 0.0, 0.0, 0.1],
        [0.0, 0.2, 0.1, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0, 1.5],
    ])
    with torch.no_grad():
        supernet.alphas["cell"].copy_(alpha)
    selection = selbench.select(supernet, "alpha-magnitude", seed=0)
    expected = cell_string(["none", "nor_conv_3x3", "none", "avg_pool_3x3", "skip_connect", "avg_pool_3x3"])
    assert str(selection.genotype) == expected == argmax_cell(alpha)
    torch.testing.assert_close(selection.scores["cell"], torch.softmax(alpha, dim=-1))


# -- perturbation -----------------------------------------------------------------------------------
def masked_quality(supernet, batches, weights, crit: str) -> float:
    """Accuracy (or −loss) over all batches with BatchNorm on batch statistics: the brute-force measurement."""
    net = copy.deepcopy(supernet).train()
    correct, loss, seen = 0, 0.0, 0
    with torch.no_grad():
        for images, labels in batches:
            logits = net(images, {"cell": weights})
            correct += int((logits.argmax(1) == labels).sum())
            loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            seen += len(labels)
    return correct / seen if crit == "acc" else -loss / seen


# (loss, 3): one edge where masking any real op lowers the loss, so `none` is kept there
@pytest.mark.parametrize("crit, seed, keeps_none", [("acc", 0, True), ("loss", 0, False), ("loss", 3, True)])
def test_perturbation_takes_per_edge_the_op_whose_masking_hurts_most(crit, seed, keeps_none):
    supernet, data = tiny_nb201_supernet(seed, C=3), tiny_data(seed)
    selection = selbench.select(supernet, "perturbation", data=data, seed=0, proj_intv=0, edge_order="fixed",
                                crit=crit, measure_data="fixed", base_pass=True)
    without_base = selbench.select(supernet, "perturbation", data=data, seed=0, proj_intv=0, edge_order="fixed",
                                   crit=crit, measure_data="fixed")

    batches = valid_batches(data)
    weights = torch.softmax(supernet.alphas["cell"].detach(), dim=-1)
    chosen, drops, badness = [], torch.zeros(6, 5), torch.zeros(6, 5)
    for edge in range(6):  # edges in index order; decided edges keep their one-hot row
        base = masked_quality(supernet, batches, weights, crit)
        quality = []
        for op in range(5):
            masked = weights.clone()
            masked[edge, op] = 0.0
            quality.append(masked_quality(supernet, batches, masked, crit))
        best = min(range(5), key=lambda k: (quality[k], k))
        drops[edge] = base - torch.tensor(quality)
        badness[edge] = 1 - torch.tensor(quality) if crit == "acc" else -torch.tensor(quality)  # error or loss
        chosen.append(OPS[best])
        weights = weights.clone()
        weights[edge] = F.one_hot(torch.tensor(best), 5).float()

    assert str(selection.genotype) == cell_string(chosen)
    torch.testing.assert_close(selection.scores["cell"], drops, atol=1e-5, rtol=1e-4)
    assert without_base.genotype == selection.genotype
    torch.testing.assert_close(without_base.scores["cell"], badness, atol=1e-5, rtol=1e-4)
    assert without_base.counters["supernet_evaluations"] == 30  # DARTS-PT takes no unperturbed pass
    # no topology step: 6 decisions × (5 masked ops + 1 reference) validation passes, no fine-tuning
    assert selection.counters["supernet_evaluations"] == 36 and selection.counters["finetune_steps"] == 0
    assert selection.scores["cell"][:, 0].abs().max() == 0  # masking `none` changes nothing
    assert ("none" in chosen) == keeps_none  # the configurations cover `none` being chosen, and not
    for edge in (e for e, op in enumerate(chosen) if op == "none" and crit == "loss"):
        assert (drops[edge, 1:] < 0).all()  # with a continuous criterion only when every other removal helps


# -- influential magnitude --------------------------------------------------------------------------
def validation_loss(supernet, batches):
    """L_val(m): the per-sample mean cross-entropy over ``batches`` as a function of the mixing weights."""
    net = copy.deepcopy(supernet).train()
    total = sum(len(labels) for _, labels in batches)

    def loss(flat_weights: torch.Tensor) -> torch.Tensor:
        weights = {"cell": flat_weights.view(6, 5)}
        return sum(len(labels) * F.cross_entropy(net(images, weights), labels) for images, labels in batches) / total

    return loss


@pytest.mark.parametrize("order", ["first", "full"])
def test_influential_magnitude_is_the_per_edge_argmax_of_the_taylor_importance(order):
    supernet, data = tiny_nb201_supernet(1, C=2), tiny_data(1, n=24, batch_size=12)
    selection = selbench.select(supernet, "influential-magnitude", data=data, seed=0, order=order, chunk=30,
                                none_candidate=True, valid_batches=0)

    m = torch.softmax(supernet.alphas["cell"].detach(), dim=-1).reshape(-1)
    loss = validation_loss(supernet, valid_batches(data))
    point = m.clone().requires_grad_(True)
    g = torch.autograd.grad(loss(point), point)[0]
    expected = -g * m
    if order == "full":
        hessian = torch.autograd.functional.hessian(loss, m)
        expected = expected + 0.5 * hessian.diagonal() * m.square()
    expected = expected.view(6, 5)

    torch.testing.assert_close(selection.scores["cell"], expected, atol=1e-6, rtol=1e-4)
    assert (selection.scores["cell"][:, 0] == 0).all()  # removing `none` changes nothing in weight coordinates
    assert str(selection.genotype) == argmax_cell(selection.scores["cell"])


# -- cost sign --------------------------------------------------------------------------------------
def autograd_costs(supernet, batches) -> torch.Tensor:
    """Mean over batches of (∂L_batch/∂m)·m at m = softmax(α)."""
    net = copy.deepcopy(supernet).train()
    m = torch.softmax(supernet.alphas["cell"].detach(), dim=-1)
    total = torch.zeros_like(m)
    for images, labels in batches:
        point = m.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(F.cross_entropy(net(images, {"cell": point}), labels), point)
        total += gradient * m
    return total / len(batches)


@pytest.mark.parametrize("derive", ["top2", "wiring"])
def test_cost_sign_is_the_per_edge_argmax_of_minus_cost_with_none_at_zero(derive):
    supernet, data = tiny_nb201_supernet(2, C=2), tiny_data(2)
    selection = selbench.select(supernet, "cost-sign", data=data, seed=0, split="valid", derive=derive)

    expected = -autograd_costs(supernet, valid_batches(data))
    expected[:, 0] = 0.0
    torch.testing.assert_close(selection.scores["cell"], expected, atol=1e-7, rtol=1e-4)
    assert (selection.scores["cell"][:, 0] == 0).all()  # `none` costs exactly 0
    assert str(selection.genotype) == argmax_cell(selection.scores["cell"])
    assert selection.variable_in_degree is False  # every NB201 edge keeps one op


def test_cost_sign_gives_none_to_an_edge_whose_ops_all_cost_more_than_nothing():
    space = selbench.get_space("nb201")
    costs = torch.tensor([
        [0.0, 0.3, 0.1, 0.2, 0.4],  # all positive: none (cost 0) wins
        [0.0, -0.1, -0.5, 0.2, 0.0],
        [0.0, 0.2, -0.01, 0.1, 0.3],
        [0.0, 1e-9, 2e-9, 3e-9, 4e-9],  # positive by a hair: still none
        [0.0, -0.2, -0.2, 0.0, 0.0],  # tie between skip and 1x1: the lower index
        [0.0, 0.0, 0.0, 0.0, -1e-3],
    ])
    expected = cell_string(["none", "nor_conv_1x1", "nor_conv_1x1", "none", "skip_connect", "avg_pool_3x3"])
    for derive in (top2_selection, wiring_selection):
        selection = derive(space, {"cell": costs})
        assert str(selection.genotype) == expected
        torch.testing.assert_close(selection.scores["cell"], -costs)
