"""Cost sign as the wiring paper measures it on stochastic supernets: the conditional mean of ∂L/∂Z against a
hand computation on a planted two-op supernet, the estimate chosen per supernet, and the reference's α cell."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import selbench
from conftest import tiny_data, tiny_supernet
from selbench.plugins.cost_sign import EpochCosts, alpha_selection, sampled_op_costs

NONE = selbench.NONE_OP

pytestmark = pytest.mark.usefixtures("one_thread")


class Planted(nn.Module):
    """Two edges × {none, skip}: logits = Σ_e Z[e, skip]·(x W_e), so ∂L/∂Z[e, skip] = mean_i (p_i − y_i)·(x_i W_e)."""

    def __init__(self):
        super().__init__()
        self.space = selbench.get_space("darts").variant(ops=(NONE, "skip_connect"), steps=1)
        torch.manual_seed(0)
        self.W = nn.Parameter(torch.randn(2, 64, 4))
        self.alphas = nn.ParameterDict({c: nn.Parameter(torch.tensor([[0.3, -0.2], [0.0, 0.4]]))
                                        for c in ("normal", "reduce")})

    def active_ops(self, active):  # the protocol's marker; every op here is cheap, so all are computed
        raise NotImplementedError

    def forward(self, x, weights=None, active=None):
        features = x.flatten(1)
        z = weights["normal"]
        return sum(z[e, 1] * features @ self.W[e] for e in range(2))


def test_the_conditional_mean_equals_a_hand_computation_and_none_costs_exactly_zero():
    net = Planted()
    batches = list(tiny_data(n=160, batch_size=8).batches("train"))
    costs, counts = sampled_op_costs(net, batches, uniform=False, generator=torch.Generator().manual_seed(4))

    replay = torch.Generator().manual_seed(4)  # the same draws, in the same order (normal, then reduce)
    probs = {c: F.softmax(a.detach(), dim=-1) for c, a in net.alphas.items()}
    total, hits = torch.zeros(2, 2), torch.zeros(2, 2)
    with torch.no_grad():
        for images, labels in batches:
            drawn = {c: torch.multinomial(p, 1, generator=replay).squeeze(1) for c, p in probs.items()}
            z = F.one_hot(drawn["normal"], 2).float()
            logits = sum(z[e, 1] * images.flatten(1) @ net.W[e] for e in range(2))
            residual = F.softmax(logits, dim=-1) - F.one_hot(labels, 4).float()
            for e, k in enumerate(drawn["normal"].tolist()):
                hits[e, k] += 1
                if k == 1:
                    total[e, 1] += (residual * (images.flatten(1) @ net.W[e])).sum() / len(labels)
    assert torch.equal(counts["normal"], hits) and (hits > 0).all()
    assert torch.allclose(costs["normal"], total / hits, atol=1e-6)
    assert torch.equal(costs["normal"][:, 0], torch.zeros(2))
    assert torch.equal(costs["reduce"], torch.zeros(2, 2))  # no reduce cell: Z unused, no cost


def test_the_observer_conditional_mean_divides_by_the_steps_each_op_was_sampled():
    epoch = EpochCosts(selbench.get_space("darts").variant(ops=(NONE, "skip_connect", "sep_conv_3x3"), steps=1))
    steps = [([1, 2], [[0.0, -1.0, 5.0], [0.0, 7.0, 2.0]]),
             ([1, 1], [[0.0, -3.0, 9.0], [0.0, 4.0, 9.0]]),
             ([0, 2], [[8.0, 9.0, 9.0], [0.0, 9.0, -6.0]])]
    for index, grads in steps:
        z = F.one_hot(torch.tensor(index), 3).float()
        epoch.step("train", {"normal": z}, {"normal": torch.tensor(grads)})
    result = epoch.result()
    expected = torch.tensor([[0.0, (-1.0 - 3.0) / 2, 0.0], [0.0, 4.0, (2.0 - 6.0) / 2]])
    assert torch.equal(result["conditional_cost"]["train"]["normal"], expected)
    assert torch.equal(result["samples"]["train"]["normal"], torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 2.0]]))
    assert bool(result["one_hot"]["train"])
    epoch.step("train", {"normal": torch.full((2, 3), 1 / 3)}, {"normal": torch.ones(2, 3)})
    assert not bool(epoch.result()["one_hot"]["train"])


# -- the reference's cell: argmax α, `none` included --------------------------------------------------
def planted_alphas(space, normal, reduce):
    """α with each edge's largest entry on the named op."""
    out = {}
    for cell_type, best in (("normal", normal), ("reduce", reduce)):
        alpha = torch.zeros(space.num_edges, len(space.ops))
        for edge, op in enumerate(best):
            alpha[edge, space.ops.index(op)] = 1.0
        out[cell_type] = alpha
    return out


def test_derive_alpha_keeps_every_edge_whose_argmax_is_not_none_and_prunes_dead_nodes():
    space = tiny_supernet(C=2, layers=3, steps=2).space  # node 2 <- 0, 1; node 3 <- 0, 1, 2
    costs = {c: torch.zeros(space.num_edges, len(space.ops)) for c in space.cell_types}
    alphas = planted_alphas(space, [NONE, "sep_conv_3x3", NONE, NONE, "max_pool_3x3"],
                            ["skip_connect", "avg_pool_3x3", "dil_conv_3x3", NONE, NONE])
    selection = alpha_selection(space, costs, alphas)
    assert selection.variable_in_degree and selection.failure is None
    assert selection.genotype["normal"].nodes == ((("sep_conv_3x3", 1),), (("max_pool_3x3", 2),))
    assert selection.genotype["reduce"].nodes == ((("skip_connect", 0), ("avg_pool_3x3", 1)),
                                                   (("dil_conv_3x3", 0),))
    dead = planted_alphas(space, [NONE, NONE, NONE, NONE, "sep_conv_3x3"], ["skip_connect"] * 5)
    failed = alpha_selection(space, costs, dead)  # node 2 has no input, so node 3's only edge dies with it
    assert failed.genotype is None and failed.failure == "no edge selected in the normal cell"


@pytest.mark.parametrize("mode, estimate", [("dsnas", "conditional"), ("uniform-sampling", "conditional"),
                                            ("bilevel-1st", "mixture")])
def test_the_estimate_defaults_to_conditional_on_stochastic_supernets(mode, estimate):
    supernet = tiny_supernet(C=2, layers=3, steps=2)
    supernet.metadata = {"mode": mode, "alpha_split": "train"}
    run = selbench.select(supernet, "cost-sign", data=tiny_data(n=16, batch_size=8), derive="alpha")
    assert ("unsampled_ops" in run.counters) == (estimate == "conditional")
    forced = selbench.select(supernet, "cost-sign", data=tiny_data(n=16, batch_size=8), estimate="mixture")
    assert "unsampled_ops" not in forced.counters
