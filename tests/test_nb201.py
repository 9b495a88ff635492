"""The NAS-Bench-201 space: structure, genotype strings, the 15,625 cells, the discrete network
against a hand parameter count, the supernet against hand-assembled cells and the discrete
network, selection and checkpoints."""
from __future__ import annotations

import random
import re

import pytest
import torch
import torch.nn.functional as F

import selbench
from conftest import tiny_nb201_supernet
from selbench import (
    CellGenotype,
    CheckpointError,
    Genotype,
    GenotypeError,
    SelbenchError,
)

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# the NB201 paper's best CIFAR-10 cell form, and the example string of the references
BEST_CIFAR10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
REFERENCE_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"


@pytest.fixture(scope="module")
def space():
    return selbench.get_space("nb201")


@pytest.fixture(scope="module")
def all_cells(space):
    return list(space.all_genotypes())


# -- structure and genotype strings ---------------------------------------------------------------
def test_space_structure_matches_the_benchmark(space):
    assert space.name == "nb201" and space.cell_types == ("cell",)
    assert space.ops == OPS
    assert space.in_degree is None and space.num_input_nodes == 1 and list(space.nodes) == [1, 2, 3]
    assert [(e.index, e.dst, e.src) for e in space.edges] == [
        (0, 1, 0), (1, 2, 0), (2, 2, 1), (3, 3, 0), (4, 3, 1), (5, 3, 2)]
    assert space.selectable_ops == (0, 1, 2, 3, 4)  # `none` is a real choice here
    assert space.default_concat == (3,)


@pytest.mark.parametrize("text", [BEST_CIFAR10, REFERENCE_EXAMPLE])
def test_benchmark_strings_round_trip(space, text):
    genotype = Genotype.parse(text)
    node3 = ("skip_connect", 0), ("nor_conv_1x1" if "1x1~1" in text else "nor_conv_3x3", 1), ("nor_conv_3x3", 2)
    by_hand = Genotype({"cell": CellGenotype.of(
        [[("nor_conv_3x3", 0)], [("nor_conv_3x3", 0), ("nor_conv_3x3", 1)], list(node3)], [3])})
    assert genotype == by_hand
    assert str(genotype) == text and genotype.to_nb201() == text
    assert Genotype.from_json(genotype.to_json()) == genotype
    assert Genotype.parse(genotype.to_json()) == genotype
    genotype.validate(space)


@pytest.mark.parametrize("text, problem", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|", "node 2: 1 inputs"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|", "node 3: 2 inputs"),
    ("|sep_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
     "op 'sep_conv_3x3'"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|", "repeat"),
    ("|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|", "earlier node"),
])
def test_invalid_cells_are_rejected_with_the_reason(space, text, problem):
    with pytest.raises(GenotypeError, match=re.escape(problem)):
        Genotype.parse(text).validate(space)
    with pytest.raises(GenotypeError):
        space.build_network(Genotype.parse(text), C=2, N=1)


def test_the_cell_output_is_the_last_node(space):
    nodes = Genotype.parse(REFERENCE_EXAMPLE)["cell"].nodes
    with pytest.raises(GenotypeError, match=r"concat must be \[3\]"):
        Genotype({"cell": CellGenotype.of(nodes, [1, 2, 3])}).validate(space)


def test_a_darts_genotype_is_not_an_nb201_cell(space):
    darts = Genotype.parse("Genotype(normal=[('skip_connect', 0), ('skip_connect', 1)], normal_concat=[2], "
                           "reduce=[('skip_connect', 0), ('skip_connect', 1)], reduce_concat=[2])")
    with pytest.raises(GenotypeError, match="cell types"):
        space.build_network(darts, C=2, N=1)


def test_bad_structure_and_sizes_are_user_errors(space):
    with pytest.raises(GenotypeError, match="ops must be distinct"):
        space.variant(ops=["none", "sep_conv_3x3"])
    with pytest.raises(SelbenchError, match="C=0"):
        space.build_supernet(C=0)


# -- the 15,625 cells -----------------------------------------------------------------------------
def test_all_cells_are_enumerated_once_and_valid(space, all_cells):
    assert len(all_cells) == space.num_genotypes == 5 ** 6 == 15_625
    assert len(set(all_cells)) == 15_625
    assert len({str(g) for g in all_cells}) == 15_625
    for genotype in all_cells:
        space.validate(genotype)


def test_enumeration_is_the_base_5_odometer_over_edges(space, all_cells):
    """Cell k has op digit (k // 5**(5 - e)) % 5 on edge e: edge 0 slowest, edge 5 fastest."""
    edges_in_order = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    for k in random.Random(1).sample(range(15_625), 50) + [0, 15_624]:
        ops_by_edge = {(node, src): op for node, pairs in enumerate(all_cells[k]["cell"].nodes, 1) for op, src in pairs}
        assert [ops_by_edge[e] for e in edges_in_order] == [OPS[(k // 5 ** (5 - e)) % 5] for e in range(6)]


def test_all_strings_parse_back(all_cells):
    for genotype in all_cells[::7]:
        assert Genotype.parse(str(genotype)) == genotype


# -- the discrete network -------------------------------------------------------------------------
def hand_parameter_count(genotype: Genotype, C: int, N: int, in_channels: int, num_classes: int) -> int:
    """Parameters by the layout in the references: conv k×k has k²·C_in·C_out weights, an affine BN 2C."""
    def conv(c_in, c_out, k):
        return k * k * c_in * c_out

    def cell_op(op, c):
        return {"nor_conv_1x1": conv(c, c, 1) + 2 * c, "nor_conv_3x3": conv(c, c, 3) + 2 * c}.get(op, 0)

    stem = conv(in_channels, C, 3) + 2 * C
    cells = N * sum(cell_op(op, c) for c in (C, 2 * C, 4 * C) for op, _ in genotype["cell"].pairs)
    blocks = sum(conv(a, b, 3) + 2 * b + conv(b, b, 3) + 2 * b + conv(a, b, 1) for a, b in ((C, 2 * C), (2 * C, 4 * C)))
    head = 2 * 4 * C + 4 * C * num_classes + num_classes
    return stem + cells + blocks + head


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_small_configuration_by_hand(space):
    # C=2, N=1, 1 input channel, 3 classes; the example cell has four 3×3 convs, one 1×1 conv, one skip.
    # stem 9·1·2 + 4 = 22; cells: C=2: 4·(36+4) + (4+4) = 168, C=4: 4·(144+8) + (16+8) = 632,
    # C=8: 4·(576+16) + (64+16) = 2448; block 2→4: 72+8 + 144+8 + 8 = 240; block 4→8: 288+16 + 576+16 + 32 = 928;
    # BN-ReLU 16; linear 8·3 + 3 = 27.  Total 22 + 168 + 632 + 2448 + 240 + 928 + 16 + 27 = 4481.
    network = space.build_network(Genotype.parse(REFERENCE_EXAMPLE), C=2, N=1, num_classes=3, in_channels=1)
    assert count(network) == 4481


def test_parameter_count_at_benchmark_scale(space):
    example = Genotype.parse(REFERENCE_EXAMPLE)
    network = space.build_network(example)  # C=16, N=5, CIFAR-10
    assert count(network) == hand_parameter_count(example, 16, 5, 3, 10) == 1_073_466  # "~1.07M"
    best = Genotype.parse(BEST_CIFAR10)
    assert count(space.build_network(best)) == hand_parameter_count(best, 16, 5, 3, 10)


def test_a_random_sample_of_100_cells_builds_and_runs(space, all_cells):
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 8)
    for genotype in random.Random(0).sample(all_cells, 100):
        network = space.build_network(genotype, C=2, N=1, num_classes=3, in_channels=1)
        assert count(network) == hand_parameter_count(genotype, 2, 1, 1, 3)
        logits, auxiliary = network(x)
        assert logits.shape == (2, 3) and auxiliary is None
        assert torch.isfinite(logits).all()


def test_odd_input_sizes_run(space):
    network = space.build_network(Genotype.parse(REFERENCE_EXAMPLE), C=2, N=1, in_channels=1)
    assert network(torch.randn(2, 1, 10, 10))[0].shape == (2, 10)  # 10 → 5 → 3


# -- the supernet ---------------------------------------------------------------------------------
def test_supernet_follows_the_protocol():
    supernet = tiny_nb201_supernet()
    assert isinstance(supernet, selbench.Supernet)
    assert list(supernet.alphas) == ["cell"]
    alpha = supernet.alphas["cell"]
    assert alpha.shape == (6, 5) and 0 < alpha.abs().max() < 1e-2  # 1e-3·randn
    theta = {id(p) for p in supernet.weight_parameters()}
    arch = {id(p) for p in supernet.arch_parameters()}
    assert arch == {id(alpha)} and not theta & arch and theta | arch == {id(p) for p in supernet.parameters()}
    rebuilt = supernet.space.build_supernet(**supernet.space_args)
    assert ({k: v.shape for k, v in rebuilt.state_dict().items()}
            == {k: v.shape for k, v in supernet.state_dict().items()})
    assert supernet(torch.randn(3, 1, 8, 8)).shape == (3, 4)


def reference_op(name: str, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One candidate op written out with functional calls (BN on batch statistics, not affine)."""
    if name == "none":
        return torch.zeros_like(x)
    if name == "skip_connect":
        return x
    if name == "avg_pool_3x3":
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    kernel = 1 if name == "nor_conv_1x1" else 3
    weight = module.op[1].weight
    assert weight.shape[-2:] == (kernel, kernel)
    return F.batch_norm(F.conv2d(F.relu(x), weight, padding=kernel // 2), None, None, training=True)


def test_search_cell_is_the_weighted_sum_over_edges_and_ops():
    supernet = tiny_nb201_supernet(C=3).train()
    cell = supernet.cells[0]
    x = torch.randn(4, 3, 6, 6)
    w = F.softmax(torch.randn(6, 5), dim=-1)

    def edge(index, key, h):
        return sum(w[index, o] * reference_op(name, cell.edges[key][o], h) for o, name in enumerate(OPS))

    node1 = edge(0, "1<-0", x)
    node2 = edge(1, "2<-0", x) + edge(2, "2<-1", node1)
    node3 = edge(3, "3<-0", x) + edge(4, "3<-1", node1) + edge(5, "3<-2", node2)
    torch.testing.assert_close(cell(x, w), node3, rtol=1e-5, atol=1e-5)


def copy_supernet_into(network: torch.nn.Module, supernet: torch.nn.Module, genotype: Genotype) -> None:
    """The discrete network takes the supernet's weights of the ops its cell chose."""
    chosen = {f"{dst}<-{src}": OPS.index(op) for dst, node in enumerate(genotype["cell"].nodes, 1) for op, src in node}
    source = supernet.state_dict()
    target = {}
    for key in network.state_dict():
        m = re.match(r"(cells\.\d+\.edges\.(\d<-\d))\.(.*)", key)
        name = f"{m[1]}.{chosen[m[2]]}.{m[3]}" if m else key
        if name in source:
            target[key] = source[name]
    result = network.load_state_dict(target, strict=False)
    # only the discrete cells' affine BN parameters have no supernet counterpart (they start at 1 and 0)
    assert all(re.fullmatch(r"cells\.\d+\.edges\.\d<-\d\.op\.2\.(weight|bias)", k) for k in result.missing_keys)
    assert not result.unexpected_keys


@pytest.mark.parametrize("text", [
    REFERENCE_EXAMPLE,
    "|avg_pool_3x3~0|+|none~0|nor_conv_1x1~1|+|nor_conv_3x3~0|skip_connect~1|none~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
])
def test_one_hot_supernet_equals_the_discrete_network(space, text):
    genotype = Genotype.parse(text)
    supernet = tiny_nb201_supernet(C=3, N=2)
    with torch.no_grad():  # non-trivial running statistics, so that eval mode is tested too
        for name, buffer in supernet.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn_like(buffer))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand_like(buffer))
    network = space.build_network(genotype, C=3, N=2, num_classes=4, in_channels=1)
    copy_supernet_into(network, supernet, genotype)
    one_hot = torch.zeros(6, 5)
    for k, e in enumerate(space.edges):
        op = dict((src, op) for op, src in genotype["cell"].nodes[e.dst - 1])[e.src]
        one_hot[k, OPS.index(op)] = 1.0
    x = torch.randn(5, 1, 8, 8)
    for training in (False, True):
        supernet.train(training)
        network.train(training)
        torch.testing.assert_close(supernet(x, {"cell": one_hot}), network(x)[0], rtol=1e-5, atol=1e-5)


def test_mixing_weights_are_differentiable_and_replace_softmax_alpha():
    supernet = tiny_nb201_supernet(C=2).double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    w = F.softmax(torch.randn(6, 5, dtype=torch.float64), dim=-1).requires_grad_()

    def loss(weights):
        return (supernet(x, {"cell": weights}) ** 2).sum()

    (gradient,) = torch.autograd.grad(loss(w), w)
    eps = 1e-6
    with torch.no_grad():
        for direction in torch.randn(3, 6, 5, dtype=torch.float64):  # central differences along random directions
            slope = (loss(w + eps * direction) - loss(w - eps * direction)) / (2 * eps)
            torch.testing.assert_close(slope, (gradient * direction).sum(), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(supernet(x), supernet(x, {"cell": F.softmax(supernet.alphas["cell"], dim=-1)}))
    supernet(x, {"cell": w}).sum().backward()
    assert supernet.alphas["cell"].grad is None
    supernet(x).sum().backward()
    assert supernet.alphas["cell"].grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown cell types"):
        supernet(x, {"normal": w})


# -- selection ------------------------------------------------------------------------------------
# ops: none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3
HAND_ALPHA = [
    [0.0, 0.0, 0.0, 2.0, 0.0],  # 1←0: nor_conv_3x3
    [3.0, 1.0, 0.0, 0.0, 0.0],  # 2←0: none wins, as the benchmark's argmax allows
    [0.0, 0.0, 1.0, 0.0, 0.0],  # 2←1: nor_conv_1x1
    [1.0, 1.0, 0.0, 0.0, 0.0],  # 3←0: tie none/skip, the lower op index wins
    [0.0, 0.0, 0.0, 0.0, 5.0],  # 3←1: avg_pool_3x3
    [0.0, 4.0, 0.0, 0.0, 0.0],  # 3←2: skip_connect
]
HAND_GOLDEN = "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|skip_connect~2|"


def test_alpha_magnitude_takes_the_per_edge_argmax_including_none():
    supernet = tiny_nb201_supernet()
    with torch.no_grad():
        supernet.alphas["cell"].copy_(torch.tensor(HAND_ALPHA))
    assert supernet.space.genotype_from_scores({"cell": torch.tensor(HAND_ALPHA)}) == Genotype.parse(HAND_GOLDEN)
    selection = selbench.select(supernet, "alpha-magnitude", seed=0)
    assert str(selection.genotype) == HAND_GOLDEN
    torch.testing.assert_close(selection.scores["cell"], F.softmax(torch.tensor(HAND_ALPHA), dim=-1))


# -- checkpoints ----------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path):
    supernet = tiny_nb201_supernet(seed=3, C=3, N=2, in_channels=1, num_classes=5).eval()
    path = tmp_path / "nb201.pt"
    selbench.save_supernet(supernet, path, epoch=7)
    loaded = selbench.load_supernet(path).eval()
    assert type(loaded) is type(supernet) and loaded.space.name == "nb201"
    assert loaded.space_args == supernet.space_args and loaded.metadata == {"epoch": 7}
    for key, value in supernet.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(loaded(x), supernet(x))


def test_a_state_dict_with_a_separate_alpha_loads_with_inferred_arguments(tmp_path):
    supernet = tiny_nb201_supernet(seed=4, C=3, N=2, in_channels=1, num_classes=5)
    weights = {k: v for k, v in supernet.state_dict().items() if not k.startswith("alphas.")}
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": weights, "alpha": [supernet.alphas["cell"].detach()], "epoch": 99}, path)
    loaded = selbench.load_supernet(path, space="nb201")
    assert loaded.space_args == dict(C=3, N=2, num_classes=5, in_channels=1, steps=3, ops=list(OPS))
    assert torch.equal(loaded.alphas["cell"], supernet.alphas["cell"])
    fresh = tiny_nb201_supernet(seed=5, C=3, N=2, in_channels=1, num_classes=5)
    before = fresh.alphas["cell"].detach().clone()
    fresh.load_state_dict(weights)  # strict, and α stays as it was
    assert torch.equal(fresh.alphas["cell"], before)


def test_foreign_state_dicts_that_are_not_nb201_are_refused(space):
    darts = selbench.get_space("darts").build_supernet(C=2, layers=2, in_channels=1)
    with pytest.raises(CheckpointError, match="6×5"):
        space.infer_supernet_args(darts.state_dict(), {"cell": darts.alphas["normal"]})
    with pytest.raises(CheckpointError, match="no 'stem.0.weight'"):
        space.infer_supernet_args({}, {"cell": torch.zeros(6, 5)})
    truncated = {k: v for k, v in tiny_nb201_supernet().state_dict().items() if not k.startswith("cells.4.")}
    with pytest.raises(CheckpointError, match="3N \\+ 2 cells"):
        space.infer_supernet_args(truncated, {"cell": torch.zeros(6, 5)})
