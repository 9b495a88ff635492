"""Cost-sign selection: the cost against finite differences and the L − H identity, the two
derivations against hand-written cells, variable in-degree cells end to end, the harness path."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import selbench
from conftest import tiny_data, tiny_supernet
from selbench import (
    CellGenotype,
    Genotype,
    GenotypeError,
    OptionError,
    SelbenchError,
    Selection,
    SelectionRun,
    Selector,
)
from selbench.plugins.cost_sign import (
    cost_from_gradients,
    none_cells,
    op_costs,
    top2_selection,
    wiring_selection,
)

NONE = selbench.NONE_OP


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: a second intra-op thread only adds contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_supernet(seed: int = 0, ops=None):
    """Two intermediate nodes, one normal and two reduce cells (the reduce weights are shared)."""
    return tiny_supernet(seed, C=2, layers=3, steps=2, ops=ops)


# -- the cost ------------------------------------------------------------------------------------
def test_cost_is_the_weight_times_the_directional_derivative_along_it():
    supernet = small_supernet(ops=(NONE, "max_pool_3x3", "skip_connect", "sep_conv_3x3")).double().train()
    data = tiny_data(n=8, batch_size=4)
    batches = [(x.double(), y) for x, y in data.batches("train")]
    costs = op_costs(supernet, batches)
    assert all(p.grad is None for p in supernet.parameters()), "op_costs must not touch θ's .grad"

    base = {c: F.softmax(a.detach(), dim=-1) for c, a in supernet.alphas.items()}

    def mean_loss(weights):
        with torch.no_grad():
            return sum(F.cross_entropy(supernet(x, weights), y) for x, y in batches) / len(batches)

    h = 1e-5
    for cell_type, weight in base.items():
        expected = torch.zeros_like(weight)
        for e in range(weight.shape[0]):
            for o in range(weight.shape[1]):
                # d/ds L(m_eo · (1 + s)) at s = 0 is m_eo · ∂L/∂m_eo
                up, down = copy.deepcopy(base), copy.deepcopy(base)
                up[cell_type][e, o] *= 1 + h
                down[cell_type][e, o] *= 1 - h
                expected[e, o] = (mean_loss(up) - mean_loss(down)) / (2 * h)
        assert expected.abs().max() > 1e-4, f"{cell_type}: the check needs costs that are not all zero"
        torch.testing.assert_close(costs[cell_type], expected, rtol=1e-5, atol=1e-9)


class LinearProbe(nn.Module):
    """Bias-free linear classifier on features X = m ⊙ φ(x), following the supernet weights protocol.

    φ_(e,o)(x) is a fixed linear map of the input, zero for ``none``; m is the mixing weight of
    op o on edge e, so m · ∂L/∂m = X · ∂L/∂X feature by feature.
    """

    def __init__(self, space, in_features: int, num_classes: int):
        super().__init__()
        self.space = space
        shape = (space.num_edges, len(space.ops))
        self.alphas = nn.ParameterDict({c: nn.Parameter(torch.randn(shape)) for c in space.cell_types})
        self.projections = nn.ParameterDict({c: nn.Parameter(torch.randn(*shape, in_features))
                                             for c in space.cell_types})
        self.register_buffer("not_none", torch.tensor([op != NONE for op in space.ops], dtype=torch.float32))
        self.classifier = nn.Linear(len(space.cell_types) * shape[0] * shape[1], num_classes, bias=False)

    def forward(self, x, weights=None):
        mixing = {c: F.softmax(a, dim=-1) for c, a in self.alphas.items()}
        mixing.update(weights or {})
        features = [mixing[c] * self.not_none * torch.einsum("eof,bf->beo", self.projections[c], x)
                    for c in self.space.cell_types]
        return self.classifier(torch.cat([f.flatten(1) for f in features], dim=1))


def test_costs_of_a_linear_softmax_classifier_sum_to_loss_minus_entropy_per_sample():
    torch.manual_seed(1)
    probe = LinearProbe(selbench.get_space("darts").variant(steps=1), in_features=5, num_classes=3)
    images, labels = torch.randn(12, 5), torch.randint(0, 3, (12,))
    for x, y in zip(images.split(1), labels.split(1)):
        total = sum(cost.sum() for cost in op_costs(probe, [(x, y)]).values())
        with torch.no_grad():
            logits = probe(x)
            loss = F.cross_entropy(logits, y)
            entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum()
        assert abs(loss - entropy) > 1e-2
        torch.testing.assert_close(total, loss - entropy, rtol=0, atol=1e-5)


def test_none_cost_is_zero_because_its_gradient_is_and_is_forced_to_zero():
    supernet = small_supernet()
    data = tiny_data(n=8, batch_size=8)
    none = supernet.space.ops.index(NONE)
    # mathematically: `none` outputs zeros whatever its weight, so ∂L/∂m_none = 0
    point = {c: F.softmax(a.detach(), -1).requires_grad_() for c, a in supernet.alphas.items()}
    x, y = next(iter(data.batches("train")))
    grads = torch.autograd.grad(F.cross_entropy(supernet(x, point), y), list(point.values()))
    for grad in grads:
        assert torch.equal(grad[:, none], torch.zeros_like(grad[:, none]))
        assert grad.abs().sum() > 0
    for cost in op_costs(supernet, data.batches("train")).values():
        assert torch.equal(cost[:, none], torch.zeros_like(cost[:, none]))
    # and forced: a non-finite gradient (0 · inf upstream) cannot leak into it
    weights = {"normal": torch.full((2, 3), 0.5)}
    grads = {"normal": torch.tensor([[float("nan"), -1.0, 2.0], [float("inf"), 3.0, -4.0]])}
    two_edges = selbench.get_space("darts").variant(ops=(NONE, "skip_connect", "sep_conv_3x3"), steps=1)
    cost = cost_from_gradients(weights, grads, none_cells(two_edges))["normal"]
    assert torch.equal(cost, torch.tensor([[0.0, -0.5, 1.0], [0.0, 1.5, -2.0]]))


# -- the derivations on hand-made costs ----------------------------------------------------------
# edges: node 2 <- 0,1 (e0,e1); 3 <- 0,1,2 (e2..e4); 4 <- 0..3 (e5..e8)
SPACE3 = selbench.get_space("darts").variant(steps=3)


def cost_table(entries: dict[int, dict[str, float]]) -> torch.Tensor:
    """Every op costs 1 + edge/100 (it hurts), ``none`` 0, except the listed ``{edge: {op: cost}}``."""
    table = torch.ones(SPACE3.num_edges, len(SPACE3.ops)) + torch.arange(SPACE3.num_edges)[:, None] / 100
    table[:, SPACE3.ops.index(NONE)] = 0.0
    for edge, ops in entries.items():
        for op, value in ops.items():
            table[edge, SPACE3.ops.index(op)] = value
    return table


NORMAL_COSTS = cost_table({
    0: {"sep_conv_3x3": -0.5, "skip_connect": -0.2},
    3: {"sep_conv_3x3": 0.2},                           # the cheapest of node 3, but still positive
    5: {"max_pool_3x3": -0.1},
    6: {"sep_conv_5x5": -0.3, "dil_conv_5x5": -0.3},   # a tie: the lower op index wins
    7: {"skip_connect": -0.05},
    8: {"avg_pool_3x3": -2.0},                          # negative, but out of the dead node 3
})
REDUCE_COSTS = cost_table({
    2: {"sep_conv_3x3": -1.0},   # node 3 <- 0: keeps node 3 alive
    4: {"dil_conv_3x3": -1.0},   # node 3 <- 2: node 2 is dead, dropped
    8: {"skip_connect": -0.4},   # node 4 <- 3
})
DEAD_COSTS = cost_table({4: {"sep_conv_3x3": -1.0}, 8: {"sep_conv_3x3": -1.0}})  # only edges out of dead nodes


def test_top2_keeps_the_two_most_negative_cost_edges_per_node():
    selection = top2_selection(SPACE3, {"normal": NORMAL_COSTS, "reduce": DEAD_COSTS})
    assert selection.genotype["normal"] == CellGenotype.of([
        [("sep_conv_3x3", 0), ("max_pool_3x3", 1)],
        [("sep_conv_3x3", 1), ("max_pool_3x3", 0)],
        [("avg_pool_3x3", 3), ("sep_conv_5x5", 1)],
    ], (2, 3, 4))
    assert selection.genotype["reduce"] == CellGenotype.of([
        [("max_pool_3x3", 0), ("max_pool_3x3", 1)],
        [("sep_conv_3x3", 2), ("max_pool_3x3", 0)],
        [("sep_conv_3x3", 3), ("max_pool_3x3", 0)],
    ], (2, 3, 4))
    assert selection.variable_in_degree is False
    SPACE3.validate(selection.genotype)  # the fixed in-degree rule
    torch.testing.assert_close(selection.scores["normal"], -NORMAL_COSTS)


def test_wiring_keeps_every_negative_cost_edge_and_prunes_dead_nodes():
    selection = wiring_selection(SPACE3, {"normal": NORMAL_COSTS, "reduce": REDUCE_COSTS})
    assert selection.failure is None and selection.variable_in_degree is True
    assert selection.genotype["normal"] == CellGenotype.of([
        [("sep_conv_3x3", 0)],
        [],
        [("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("skip_connect", 2)],
    ], (2, 4))
    assert selection.genotype["reduce"] == CellGenotype.of([
        [],
        [("sep_conv_3x3", 0)],
        [("skip_connect", 3)],
    ], (3, 4))
    SPACE3.validate(selection.genotype, variable_in_degree=True)


def test_wiring_fails_for_a_cell_without_a_live_node_and_the_failure_round_trips():
    selection = wiring_selection(SPACE3, {"normal": NORMAL_COSTS, "reduce": DEAD_COSTS})
    assert selection.genotype is None
    assert selection.failure == "no edge selected in the reduce cell"
    both = wiring_selection(SPACE3, {"normal": DEAD_COSTS, "reduce": torch.ones_like(DEAD_COSTS)})
    assert both.failure == "no edge selected in the normal cell; no edge selected in the reduce cell"

    run = SelectionRun(selection, selector="cost-sign", variable_in_degree=True)
    back = SelectionRun.from_dict(json.loads(json.dumps(run.to_dict())))
    assert back.genotype is None and back.failure == selection.failure and back.variable_in_degree is True
    torch.testing.assert_close(back.scores["reduce"], -DEAD_COSTS)


@pytest.mark.parametrize("derive", [top2_selection, wiring_selection])
def test_in_a_space_without_pruning_an_edge_where_no_op_wins_takes_none(derive):
    space = selbench.get_space("nb201")  # ops: none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3
    costs = torch.ones(space.num_edges, len(space.ops))
    costs[:, 0] = 0.0
    costs[0, 3] = -0.4                      # 1 <- 0
    costs[2, 1], costs[2, 4] = -0.1, -0.3   # 2 <- 1
    costs[5, 2] = -0.2                      # 3 <- 2
    selection = derive(space, {"cell": costs})
    assert selection.genotype.to_nb201() == "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|nor_conv_1x1~2|"


# -- variable in-degree cells in the DARTS network -----------------------------------------------
VARIABLE = Genotype({
    "normal": CellGenotype.of([[("sep_conv_3x3", 0)], [],
                               [("skip_connect", 0), ("dil_conv_3x3", 1), ("max_pool_3x3", 2)],
                               [("avg_pool_3x3", 4)]], (2, 4, 5)),
    "reduce": CellGenotype.of([[("max_pool_3x3", 1)], [("sep_conv_5x5", 0), ("skip_connect", 1), ("dil_conv_5x5", 2)],
                               [], []], (2, 3)),
})


def test_a_variable_in_degree_genotype_builds_runs_and_round_trips():
    space = selbench.get_space("darts")
    space.validate(VARIABLE, variable_in_degree=True)
    with pytest.raises(GenotypeError, match="exactly 2"):
        space.validate(VARIABLE)
    torch.manual_seed(0)
    network = space.build_network(VARIABLE, C=4, layers=3, num_classes=4, in_channels=1, variable_in_degree=True)
    logits, _ = network(torch.randn(3, 1, 8, 8))
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()

    text = str(VARIABLE)
    assert "normal=[[('sep_conv_3x3', 0)], [], [" in text and "normal_concat=[2, 4, 5]" in text
    assert Genotype.parse(text) == VARIABLE
    assert Genotype.from_json(VARIABLE.to_json()) == VARIABLE


def test_an_edge_out_of_a_node_without_inputs_is_invalid():
    dangling = Genotype({"normal": CellGenotype.of([[("skip_connect", 0)], [], [("sep_conv_3x3", 3)], []], (2, 4)),
                         "reduce": VARIABLE["reduce"]})
    with pytest.raises(GenotypeError, match="normal cell, node 4: input 3 is a node without inputs"):
        selbench.get_space("darts").validate(dangling, variable_in_degree=True)


def test_a_wiring_cell_builds_and_runs():
    genotype = wiring_selection(SPACE3, {"normal": NORMAL_COSTS, "reduce": REDUCE_COSTS}).genotype
    network = SPACE3.build_network(genotype, C=2, layers=3, num_classes=4, in_channels=1, variable_in_degree=True)
    logits, _ = network(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 4)


# -- through the harness -------------------------------------------------------------------------
def test_select_measures_costs_on_the_valid_split_by_default():
    supernet, data = small_supernet(), tiny_data(n=16, batch_size=8)
    selection = selbench.select(supernet, "cost-sign", data=data)
    assert selection.counters["cost_batches_valid"] == 2 and selection.counters["backward_passes"] == 2
    assert selection.variable_in_degree is False
    expected = op_costs(copy.deepcopy(supernet).train(), data.batches("valid"))
    for cell_type, cost in expected.items():
        torch.testing.assert_close(selection.scores[cell_type], -cost)
    assert selection.genotype == supernet.space.genotype_from_scores(selection.scores)


@pytest.mark.parametrize("options, metadata, counter", [
    ({"split": "train", "batches": 1}, {}, ("cost_batches_train", 1)),
    ({}, {"alpha_split": "train"}, ("cost_batches_train", 2)),
    ({"split": "valid"}, {"alpha_split": "train"}, ("cost_batches_valid", 2)),
    ({}, {"alpha_split": None}, ("cost_batches_valid", 2)),
])
def test_select_reads_the_split_from_the_options_or_the_checkpoint(options, metadata, counter):
    supernet = small_supernet()
    supernet.metadata = metadata
    selection = selbench.select(supernet, "cost-sign", data=tiny_data(n=16, batch_size=8), bn="eval", **options)
    assert selection.counters[counter[0]] == counter[1]


def test_select_wiring_on_a_supernet_whose_normal_cell_is_unused_fails():
    # two layers are both reduction cells: the normal weights never touch the loss, cost 0 everywhere
    selection = selbench.select(tiny_supernet(C=2, layers=2, steps=2), "cost-sign", data=tiny_data(n=8),
                                derive="wiring")
    assert selection.genotype is None and selection.failure == "no edge selected in the normal cell"
    assert selection.variable_in_degree is True and selection.selector == "cost-sign"


def test_select_wiring_matches_the_derivation_of_its_scores():
    selection = selbench.select(small_supernet(), "cost-sign", data=tiny_data(n=16, batch_size=8), derive="wiring")
    costs = {c: -s for c, s in selection.scores.items()}
    expected = wiring_selection(small_supernet().space, costs)
    assert (selection.genotype, selection.failure) == (expected.genotype, expected.failure)


def test_bad_options_and_checkpoint_metadata_are_clear_errors():
    supernet, data = small_supernet(), tiny_data(n=8)
    with pytest.raises(OptionError, match="unknown option 'batch'"):
        selbench.select(supernet, "cost-sign", data=data, batch=3)
    with pytest.raises(OptionError, match="'wire' is not one of top2, wiring"):
        selbench.select(supernet, "cost-sign", data=data, derive="wire")
    with pytest.raises(OptionError, match="must be at least 0"):
        selbench.select(supernet, "cost-sign", data=data, batches=-1)
    with pytest.raises(SelbenchError, match="needs the supernet's train/valid data"):
        selbench.select(supernet, "cost-sign")
    supernet.metadata = {"alpha_split": "test"}
    with pytest.raises(SelbenchError, match="pass split=train or split=valid"):
        selbench.select(supernet, "cost-sign", data=data)


def test_the_harness_validates_each_selection_by_its_own_in_degree_rule():
    supernet = small_supernet()
    costs = {"normal": torch.ones(5, 8), "reduce": torch.ones(5, 8)}
    costs["normal"][0, 4] = costs["reduce"][1, 4] = -1.0  # one edge into node 2 only: a variable-degree cell
    wiring = wiring_selection(supernet.space, costs)
    as_fixed = Selector("fixed", run=lambda ctx: Selection(genotype=wiring.genotype, variable_in_degree=False),
                        variable_in_degree=True)
    with pytest.raises(GenotypeError, match="exactly 2"):
        selbench.select(supernet, as_fixed)
    undeclared = Selector("undeclared", run=lambda ctx: wiring)
    with pytest.raises(SelbenchError, match="not registered with variable_in_degree=True"):
        selbench.select(supernet, undeclared)
    declared = Selector("declared", run=lambda ctx: wiring, variable_in_degree=True)
    assert selbench.select(supernet, declared).genotype == wiring.genotype
    failed = Selector("failed", run=lambda ctx: wiring_selection(supernet.space, {"normal": costs["normal"],
                                                                              "reduce": torch.ones(5, 8)}),
                      variable_in_degree=True)
    assert selbench.select(supernet, failed).failure == "no edge selected in the reduce cell"
