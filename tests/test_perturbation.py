"""DARTS-PT perturbation selection: planted supernets, the schedule, options, and the fast path.

The planted supernets are wired by hand so that the right answer is known: parameters set
to zero and frozen make an op or a whole node output exactly zero, and an identity stem
makes the class visible through the paths that are left.
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Callable

import pytest
import torch

import selbench
from conftest import tiny_data, tiny_nb201_supernet, tiny_supernet
from selbench import OptionError, SelectionContext, TensorData

DARTS_PT_OPS = selbench.get_space("darts").ops[1:]
TRACE_LOGGER = "selbench.plugins.perturbation"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tensors this small run fastest on one thread; several stall when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bit_data(channels: int, n: int = 64, seed: int = 0) -> TensorData:
    """Images whose channel c is brighter or darker on average by bit c of the label."""
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (2 * n, channels), generator=g)
    images = 0.5 * torch.randn(2 * n, channels, 8, 8, generator=g) + (bits.float() - 0.5)[:, :, None, None]
    labels = (bits * 2 ** torch.arange(channels - 1, -1, -1)).sum(dim=1)
    return TensorData(train=(images[:n], labels[:n]), valid=(images[n:], labels[n:]), batch_size=32)


def silence(module: torch.nn.Module) -> None:
    """Zero and freeze every parameter: convolutions then output 0, and BatchNorm of 0 is 0."""
    for p in module.parameters():
        p.data.zero_()
        p.requires_grad_(False)


def freeze(*modules: torch.nn.Module) -> None:
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(False)


def identity_stem(supernet: torch.nn.Module, channel_of: Callable[[int], int]) -> None:
    """Stem output channel k copies input channel ``channel_of(k)`` (centre tap 1), frozen."""
    weight = supernet.stem[0].weight
    with torch.no_grad():
        weight.zero_()
        for k in range(weight.shape[0]):
            weight[k, channel_of(k), 1, 1] = 1.0
    freeze(supernet.stem)


def fit(supernet: torch.nn.Module, data: TensorData, epochs: int = 10, lr: float = 0.1) -> float:
    """Train θ (α frozen) with the harness's loop; return the validation accuracy."""
    ctx = SelectionContext(supernet, options={}, seed=0, device=torch.device("cpu"), data=data, selector="fit")
    ctx.finetune(epochs, train_alphas=False, lr=lr)
    return ctx.evaluate()[0]


def decisions(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [r.perturbation for r in caplog.records if r.name == TRACE_LOGGER and hasattr(r, "perturbation")]


def visit_order(trace: list[dict], cell_type: str) -> list[int]:
    return [d["edge"] for d in trace if d["cell"] == cell_type and d["decision"] == "op"]


# -- planted supernets -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signal_op_supernet() -> tuple[torch.nn.Module, TensorData]:
    """One reduction cell, one node: avg_pool on edge 0 carries the class, sep_conv there has the
    larger α but outputs exactly zero, and node 1 (hence edge 1) is silent."""
    torch.manual_seed(0)
    supernet = selbench.get_space("darts").build_supernet(C=4, layers=1, steps=1, num_classes=2, in_channels=1,
                                                          ops=["avg_pool_3x3", "sep_conv_3x3"])
    cell = supernet.cells[0]
    identity_stem(supernet, lambda k: 0)
    silence(cell.preprocess1)
    silence(cell._ops[0]._ops[1])
    with torch.no_grad():
        supernet.alphas["reduce"].zero_()
        supernet.alphas["reduce"][0, 1] = 2.0
    data = bit_data(channels=1)
    assert fit(supernet, data) > 0.9  # the construction works: the signal op alone classifies
    return supernet, data


def test_perturbation_picks_the_op_that_carries_the_signal_not_the_largest_alpha(signal_op_supernet):
    supernet, data = signal_op_supernet
    avg_pool, sep_conv = 0, 1
    magnitude = selbench.select(supernet, "alpha-magnitude")
    perturbation = selbench.select(supernet, "perturbation", data=data, proj_intv=0, base_pass=True)

    assert dict((src, op) for op, src in magnitude.genotype["reduce"].nodes[0])[0] == "sep_conv_3x3"
    assert dict((src, op) for op, src in perturbation.genotype["reduce"].nodes[0])[0] == "avg_pool_3x3"
    drops = perturbation.scores["reduce"][0]
    assert drops[sep_conv] == 0.0  # removing an op that outputs zero changes nothing
    assert drops[avg_pool] > 0.3  # without it the logits are constant: chance level


@pytest.fixture(scope="module")
def useless_edge_supernet() -> tuple[torch.nn.Module, TensorData]:
    """One reduction cell, node 3 the only output, four classes = two bits: node 0 sees only bit 1
    (input channel 0), node 1 only bit 2 (channel 1), node 2 is silent, so edge 2→3 is useless."""
    torch.manual_seed(0)
    supernet = selbench.get_space("darts").build_supernet(C=4, layers=1, steps=2, multiplier=1, num_classes=4,
                                                          in_channels=2, ops=["skip_connect"])
    cell = supernet.cells[0]
    identity_stem(supernet, lambda k: k % 2)
    with torch.no_grad():
        cell.preprocess0.op[1].weight[:, 1::2] = 0.0
        cell.preprocess1.op[1].weight[:, 0::2] = 0.0
    freeze(cell.preprocess0, cell.preprocess1)
    silence(cell._ops[0])
    silence(cell._ops[1])
    data = bit_data(channels=2)
    assert fit(supernet, data) > 0.9
    return supernet, data


@pytest.mark.parametrize("crit", ["acc", "loss"])
def test_topology_step_drops_the_useless_edge(useless_edge_supernet, crit, caplog):
    supernet, data = useless_edge_supernet
    space = supernet.space
    with caplog.at_level(logging.DEBUG, logger=TRACE_LOGGER):
        selection = selbench.select(supernet, "perturbation", data=data, proj_intv=0, crit=crit)

    node3 = selection.genotype["reduce"].nodes[1]
    assert sorted(src for _, src in node3) == [0, 1]
    for cell_type in space.cell_types:
        assert [len(node) for node in selection.genotype[cell_type].nodes] == [2, 2]
    removals = [d for d in decisions(caplog) if d["decision"] == "remove-edge" and d["cell"] == "reduce"]
    assert [d["edge"] for d in removals] == [space.edge_index(2, 3)]
    assert removals[0]["without_edge"][space.edge_index(2, 3)] > max(
        removals[0]["without_edge"][space.edge_index(src, 3)] for src in (0, 1))


# -- schedule, counters, options ----------------------------------------------------------------

def expected_evaluations(space: selbench.SearchSpace, base_pass: bool = False) -> int:
    """Per cell type: candidates (+ 1 with the base pass) per edge; for a node with k > in_degree inputs,
    k + ... + (in_degree + 1)."""
    per_cell = space.num_edges * (len(space.selectable_ops) + base_pass)
    if space.in_degree is not None:
        for node in space.nodes:
            per_cell += sum(range(space.in_degree + 1, len(space.edges_into(node)) + 1))
    return per_cell * len(space.cell_types)


def test_counters_follow_the_schedule():
    supernet = tiny_supernet(layers=1, steps=3, ops=DARTS_PT_OPS[:3])  # 9 edges, nodes with 2, 3, 4 inputs
    data = tiny_data()  # 2 batches per split
    selection = selbench.select(supernet, "perturbation", data=data, proj_intv=1)
    events = 9 + 2
    evaluations = 2 * (9 * 3 + (3) + (4 + 3))
    assert expected_evaluations(supernet.space) == evaluations
    assert selection.counters["supernet_evaluations"] == evaluations
    assert selection.counters["forward_passes"] == 2 * evaluations
    assert selection.counters["finetune_steps"] == (events - 1) * 2

    limited = selbench.select(supernet, "perturbation", data=data, proj_intv=0, valid_batches=1, base_pass=True)
    assert limited.counters["finetune_steps"] == 0
    assert limited.counters["forward_passes"] == expected_evaluations(supernet.space, base_pass=True) == (
        evaluations + 2 * 9)


def test_same_seed_same_genotype_and_the_seed_sets_the_visit_order(caplog):
    supernet = tiny_supernet(layers=1, steps=2, ops=DARTS_PT_OPS[:3])
    data = tiny_data()
    runs = {}
    for name, seed, order in [("a", 0, "random"), ("b", 0, "random"), ("c", 1, "random"), ("fixed", 1, "fixed")]:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger=TRACE_LOGGER):
            selection = selbench.select(supernet, "perturbation", data=data, seed=seed, proj_intv=1, valid_batches=1,
                                        edge_order=order)
        runs[name] = selection, {c: visit_order(decisions(caplog), c) for c in ("normal", "reduce")}

    (a, order_a), (b, order_b), (_, order_c), (_, order_fixed) = runs["a"], runs["b"], runs["c"], runs["fixed"]
    assert a.genotype == b.genotype and order_a == order_b
    assert all(torch.equal(a.scores[c], b.scores[c]) for c in a.scores)
    for order in (order_a, order_c):
        assert all(sorted(order[c]) == list(range(5)) for c in order)
    assert order_a != order_c
    assert order_fixed == {"normal": [0, 1, 2, 3, 4], "reduce": [0, 1, 2, 3, 4]}


@pytest.mark.parametrize("ops", [DARTS_PT_OPS, selbench.get_space("darts").ops], ids=["darts-pt-7", "darts-8"])
def test_both_darts_op_sets_give_valid_cells_and_never_none(ops):
    supernet = tiny_supernet(layers=1, steps=2, ops=ops)
    selection = selbench.select(supernet, "perturbation", data=tiny_data(), proj_intv=0, valid_batches=1)
    for cell_type in supernet.space.cell_types:
        cell = selection.genotype[cell_type]
        assert [len(node) for node in cell.nodes] == [2, 2]
        assert all(op != "none" for op, _ in cell.pairs)
    if "none" in ops:
        assert all(torch.all(scores[:, ops.index("none")] == 0) for scores in selection.scores.values())
    assert selection.counters["supernet_evaluations"] == expected_evaluations(supernet.space)


def test_space_without_topology_rule_keeps_every_edge_and_none_is_a_candidate(caplog):
    supernet = tiny_nb201_supernet()
    space = supernet.space
    with caplog.at_level(logging.DEBUG, logger=TRACE_LOGGER):
        selection = selbench.select(supernet, "perturbation", data=tiny_data(), proj_intv=0, valid_batches=1)
    trace = decisions(caplog)
    assert all(d["decision"] == "op" for d in trace)
    assert all(set(d["without_op"]) == set(range(len(space.ops))) for d in trace)  # `none` measured too
    assert sum(len(node) for node in selection.genotype["cell"].nodes) == space.num_edges
    assert selection.counters["supernet_evaluations"] == expected_evaluations(space)


def test_options_are_checked(supernet, data):
    with pytest.raises(OptionError, match="unknown option 'proj_interval'"):
        selbench.select(supernet, "perturbation", data=data, proj_interval=1)
    with pytest.raises(OptionError, match="proj_intv"):
        selbench.select(supernet, "perturbation", data=data, proj_intv=-1)
    with pytest.raises(OptionError, match="crit"):
        selbench.select(supernet, "perturbation", data=data, crit="entropy")
    with pytest.raises(selbench.SelbenchError, match="needs"):
        selbench.select(supernet, "perturbation")


# -- the fast path --------------------------------------------------------------------------------

def test_fast_and_reference_implementations_decide_alike():
    supernet = tiny_supernet(layers=3, steps=2, ops=DARTS_PT_OPS[:4], C=2)
    data = tiny_data()
    fit(supernet, data, epochs=2, lr=0.05)
    fast, reference = (selbench.select(supernet, "perturbation", data=data, seed=3, proj_intv=1, implementation=impl)
                       for impl in ("fast", "reference"))
    assert fast.genotype == reference.genotype
    for cell_type in reference.scores:
        torch.testing.assert_close(fast.scores[cell_type], reference.scores[cell_type], rtol=0, atol=0)


BATCHED_CASES = {
    "augmented-acc": dict(),
    "fixed-loss-base-pass": dict(measure_data="fixed", crit="loss", base_pass=True),
    "augmented-cumulative-eval-bn": dict(edge_greedy="cumulative", bn="eval", valid_batches=1),
}


@pytest.mark.parametrize("case", list(BATCHED_CASES))
def test_batched_measurements_decide_and_score_as_one_pass_each(case):
    """Every decision's candidates in one vectorised pass: the genotype, the scores and the trace of one pass each."""
    supernet = tiny_supernet(layers=3, steps=3, ops=DARTS_PT_OPS[:4], C=2)
    data = TensorData(**tiny_data().splits, batch_size=16, crop_padding=1, flip=True)
    fit(supernet, data, epochs=2, lr=0.05)
    runs = {impl: selbench.select(supernet, "perturbation", data=data, seed=3, proj_intv=1, implementation=impl,
                                  **BATCHED_CASES[case]) for impl in ("fast", "batched")}
    assert runs["batched"].genotype == runs["fast"].genotype
    for cell_type in runs["fast"].scores:
        torch.testing.assert_close(runs["batched"].scores[cell_type], runs["fast"].scores[cell_type],
                                   rtol=0, atol=1e-5)
    assert runs["batched"].counters == runs["fast"].counters


def test_batched_measurements_on_a_space_without_topology_step():
    supernet = tiny_nb201_supernet(C=2)
    data = tiny_data()
    fit(supernet, data, epochs=2, lr=0.05)
    fast, batched = (selbench.select(supernet, "perturbation", data=data, seed=1, proj_intv=0, implementation=impl)
                     for impl in ("fast", "batched"))
    assert batched.genotype == fast.genotype
    torch.testing.assert_close(batched.scores["cell"], fast.scores["cell"], rtol=0, atol=1e-5)


def test_a_supernet_vmap_cannot_vectorise_is_measured_one_candidate_at_a_time(caplog):
    supernet = tiny_supernet(layers=1, steps=2, C=2)

    class ReadsItsWeights(type(supernet)):
        def forward(self, x, weights=None, active=None):
            if weights is not None and float(weights["normal"].sum()) < 0:  # a host read: not vmappable
                raise AssertionError("unreachable")
            return super().forward(x, weights, active)

    supernet.__class__ = ReadsItsWeights
    data = TensorData(**tiny_data().splits, batch_size=16, crop_padding=1)
    with caplog.at_level(logging.WARNING, logger="selbench.select.context"):
        batched = selbench.select(supernet, "perturbation", data=data, proj_intv=1, valid_batches=1)
    warnings = [r for r in caplog.records if "cannot be vectorised" in r.getMessage()]
    assert len(warnings) == 1, "one warning per selection, then one candidate at a time"
    fast = selbench.select(supernet, "perturbation", data=data, proj_intv=1, valid_batches=1, implementation="fast")
    assert batched.genotype == fast.genotype
    for cell_type in fast.scores:
        torch.testing.assert_close(batched.scores[cell_type], fast.scores[cell_type], rtol=0, atol=1e-6)


def random_active(space: selbench.SearchSpace, generator: torch.Generator) -> dict[str, list[tuple[int, ...]]]:
    """Per edge a random subset of ops (empty ones included); the first node's edges all empty in one cell."""
    active = {}
    for cell_type in space.cell_types:
        keep = torch.rand(space.num_edges, len(space.ops), generator=generator) < 0.5
        active[cell_type] = [tuple(torch.nonzero(row).flatten().tolist()) for row in keep]
    for edge in space.edges_into(space.nodes[0]):
        active[space.cell_types[0]][edge.index] = ()
    return active


def darts_supernet_computed_by(implementation: str) -> Callable[[int], torch.nn.Module]:
    def build(seed: int) -> torch.nn.Module:
        supernet = tiny_supernet(seed, layers=3, steps=3, C=2)
        supernet.implementation = implementation
        return supernet

    return build


SUPERNETS_WITH_ACTIVE_OPS = {
    "darts-fast": darts_supernet_computed_by("fast"),
    "darts-reference": darts_supernet_computed_by("reference"),
    "nb201": lambda seed: tiny_nb201_supernet(seed, C=2),
}


@pytest.mark.parametrize("supernet_kind", list(SUPERNETS_WITH_ACTIVE_OPS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_forward_equals_full_forward_with_zero_weights(seed, supernet_kind):
    full = SUPERNETS_WITH_ACTIVE_OPS[supernet_kind](seed)
    fast = copy.deepcopy(full)
    space = full.space
    generator = torch.Generator().manual_seed(seed)
    active = random_active(space, generator)
    images = torch.randn(6, 1, 8, 8, generator=generator)
    labels = torch.randint(0, 4, (6,), generator=generator)

    mixing = {}
    for cell_type in space.cell_types:  # random weights, zero wherever an op is left out
        mask = torch.zeros(space.num_edges, len(space.ops))
        for edge, ops in enumerate(active[cell_type]):
            mask[edge, list(ops)] = 1.0
        mixing[cell_type] = torch.rand(mask.shape, generator=generator) * mask

    def run(net, **active_kw):
        weights = {c: w.clone().requires_grad_() for c, w in mixing.items()}
        logits = net(images, weights, **active_kw)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        theta = {name: torch.zeros_like(p) if p.grad is None else p.grad for name, p in net.named_parameters()}
        return logits, theta, {c: w.grad for c, w in weights.items()}

    full_logits, full_theta, full_mixing = run(full)
    fast_logits, fast_theta, fast_mixing = run(fast, active=active)
    torch.testing.assert_close(fast_logits, full_logits, rtol=1e-5, atol=1e-7)
    for name in full_theta:  # summed in another order: equal to fp32 rounding, not to 1e-7 absolute
        torch.testing.assert_close(fast_theta[name], full_theta[name], rtol=1e-5, atol=1e-6)
    for cell_type, ops_per_edge in active.items():
        for edge, ops in enumerate(ops_per_edge):
            for op in ops:  # the weights of computed ops; left-out ones have no gradient by contract
                torch.testing.assert_close(fast_mixing[cell_type][edge, op], full_mixing[cell_type][edge, op],
                                           rtol=1e-5, atol=1e-7)


def test_active_ops_context_sets_the_default_and_restores_it():
    supernet = tiny_supernet(layers=1, steps=2, C=2)
    images = torch.randn(4, 1, 8, 8)
    only_first = {"reduce": [(0,)] * supernet.space.num_edges}
    supernet.eval()
    with torch.no_grad():
        explicit = supernet(images, active=only_first)
        with supernet.active_ops(only_first):
            inside = supernet(images)
        after = supernet(images)
        full = supernet(images, active={})
    assert torch.equal(inside, explicit)
    assert torch.equal(after, full) and not torch.allclose(after, explicit)
    with pytest.raises(ValueError, match="edges"):
        supernet(images, active={"reduce": [(0,)]})


# -- DARTS-PT's rules, on a hand-made supernet -------------------------------------------------------

class TableSupernet(torch.nn.Module):
    """A hand-made DARTS supernet whose validation accuracy is a table.

    The accuracy depends only on which input edges of node ``node`` in the normal cell have a
    zero mixing-weight row: ``table[removed source nodes]`` (1/2 for sets not in the table).
    Image i (its first pixel holds i) has label i % 2 and is classified correctly iff
    i < accuracy · n, so a pass over the n images measures exactly that accuracy.
    """

    def __init__(self, table: dict[frozenset[int], float], *, node: int, steps: int, n: int):
        super().__init__()
        self.space = selbench.get_space("darts").variant(ops=["skip_connect", "sep_conv_3x3"], steps=steps)
        self.space_args: dict = {}
        self.alphas = torch.nn.ParameterDict(
            {c: torch.nn.Parameter(torch.zeros(self.space.num_edges, 2)) for c in self.space.cell_types})
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.table, self.n = table, n
        self.inputs = {edge.index: edge.src for edge in self.space.edges_into(node)}

    def forward(self, x, weights=None):
        normal = (weights or {}).get("normal", torch.softmax(self.alphas["normal"], dim=-1))
        removed = frozenset(src for edge, src in self.inputs.items() if not bool(normal[edge].abs().sum() > 0))
        accuracy = self.table.get(removed, 0.5)
        index = x[:, 0, 0, 0].round().long()
        labels = index % 2
        predicted = torch.where(index < round(accuracy * self.n), labels, 1 - labels)
        return torch.nn.functional.one_hot(predicted, 2).float() * self.scale

    def weight_parameters(self):
        return iter([self.scale])

    def arch_parameters(self):
        return iter(self.alphas.values())


def index_data(n: int = 40) -> TensorData:
    images = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 1, 2, 2).contiguous()
    split = (images, torch.arange(n) % 2)
    return TensorData(train=split, valid=split, batch_size=n)


def kept_sources(selection, cell_type: str, node_position: int) -> list[int]:
    return sorted(src for _, src in selection.genotype[cell_type].nodes[node_position])


# Node 4 (inputs from nodes 0..3).  Alone, dropping 0 hurts least, then 1; but once 0 is gone,
# dropping 2 hurts least.  Keeping dropped edges active (DARTS-PT) removes 0 then 1; zeroing
# them at once (cumulative) removes 0 then 2.
GREEDY_TABLE = {frozenset({0}): 0.9, frozenset({1}): 0.8, frozenset({2}): 0.5, frozenset({3}): 0.4,
                frozenset({0, 1}): 0.3, frozenset({0, 2}): 0.95, frozenset({0, 3}): 0.2}


@pytest.mark.parametrize("crit", ["acc", "loss"])
def test_reference_topology_step_keeps_dropped_edges_active_until_the_node_is_done(crit, caplog):
    supernet = TableSupernet(GREEDY_TABLE, node=4, steps=3, n=40)
    runs = {}
    for greedy in ("reference", "cumulative"):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger=TRACE_LOGGER):
            runs[greedy] = selbench.select(supernet, "perturbation", data=index_data(), proj_intv=0, crit=crit,
                                           edge_greedy=greedy)
        removals = [d for d in decisions(caplog) if d["decision"] == "remove-edge" and d["node"] == 4
                    and d["cell"] == "normal"]
        second_round = removals[1]["without_edge"]
        if greedy == "reference":  # the round's measurements see edge 0→4 still active
            accuracies = [0.8, 0.5, 0.4]  # removing 1, 2, 3 alone
            # one-hot logits: cross-entropy log(1 + e⁻¹) when right, log(1 + e) when wrong
            qualities = accuracies if crit == "acc" else [a - math.log1p(math.e) for a in accuracies]
            measured = [second_round[supernet.space.edge_index(src, 4)] for src in (1, 2, 3)]
            assert measured == pytest.approx(qualities, abs=1e-6)
    assert kept_sources(runs["reference"], "normal", 2) == [2, 3]
    assert kept_sources(runs["cumulative"], "normal", 2) == [1, 3]
    default = selbench.select(supernet, "perturbation", data=index_data(), proj_intv=0, crit=crit)
    assert default.genotype == runs["reference"].genotype


def test_ties_drop_the_last_edge_by_default_and_the_first_when_cumulative():
    supernet = TableSupernet({}, node=4, steps=3, n=40)  # every removal measures the same
    reference = selbench.select(supernet, "perturbation", data=index_data(), proj_intv=0)
    cumulative = selbench.select(supernet, "perturbation", data=index_data(), proj_intv=0, edge_greedy="cumulative")
    for cell_type in ("normal", "reduce"):
        assert [kept_sources(reference, cell_type, k) for k in (1, 2)] == [[0, 1], [0, 1]]
        assert [kept_sources(cumulative, cell_type, k) for k in (1, 2)] == [[1, 2], [2, 3]]


def test_random_visit_order_is_darts_pts_numpy_draws():
    """DARTS-PT with --seed 2: np.random.choice over the undecided edges, normal then reduce per op event,
    then over the remaining nodes per node event (its node ids 0, 1, 2 are nodes 3, 4, 5 here)."""
    supernet = TableSupernet({}, node=5, steps=4, n=8)
    with_logging = logging.getLogger(TRACE_LOGGER)
    records: list[dict] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.perturbation)

    handler = Keep(level=logging.DEBUG)
    with_logging.addHandler(handler)
    level = with_logging.level
    with_logging.setLevel(logging.DEBUG)
    try:
        selbench.select(supernet, "perturbation", data=index_data(8), proj_intv=0, seed=2)
    finally:
        with_logging.removeHandler(handler)
        with_logging.setLevel(level)
    assert visit_order(records, "normal") == [8, 9, 13, 10, 2, 6, 5, 11, 7, 4, 12, 3, 0, 1]
    assert visit_order(records, "reduce") == [13, 6, 2, 9, 1, 7, 8, 5, 4, 11, 10, 3, 0, 12]
    nodes = {c: list(dict.fromkeys(d["node"] for d in records if d["decision"] == "remove-edge" and d["cell"] == c))
             for c in ("normal", "reduce")}
    assert nodes == {"normal": [4, 3, 5], "reduce": [3, 4, 5]}
