"""RobustDARTS's spaces S1–S4: per-edge op sets, genotypes read through them, the noise op, every selector on them."""
from __future__ import annotations

import pytest
import torch

import selbench
from selbench.core.space import space_layout
from selbench.recipes.recipe import load_recipe
from selbench.supernets.darts_ops import make_op
from selbench.testing import run_selector, tiny_data, tiny_supernet

SPACES = ("darts-s1", "darts-s2", "darts-s3", "darts-s4")

# S1 from RobustDARTS's src/spaces.py, edges in DARTS order
S1 = {
    "normal": [["skip_connect", "dil_conv_3x3"], ["skip_connect", "dil_conv_5x5"], ["skip_connect", "dil_conv_5x5"],
               ["skip_connect", "sep_conv_3x3"], ["skip_connect", "dil_conv_3x3"], ["max_pool_3x3", "skip_connect"],
               ["skip_connect", "sep_conv_3x3"], ["skip_connect", "sep_conv_3x3"], ["skip_connect", "dil_conv_3x3"],
               ["skip_connect", "sep_conv_3x3"], ["max_pool_3x3", "skip_connect"], ["skip_connect", "dil_conv_3x3"],
               ["dil_conv_3x3", "dil_conv_5x5"], ["dil_conv_3x3", "dil_conv_5x5"]],
    "reduce": [["max_pool_3x3", "avg_pool_3x3"], ["max_pool_3x3", "dil_conv_3x3"], ["max_pool_3x3", "avg_pool_3x3"],
               ["max_pool_3x3", "avg_pool_3x3"], ["skip_connect", "dil_conv_5x5"], ["max_pool_3x3", "avg_pool_3x3"],
               ["max_pool_3x3", "sep_conv_3x3"], ["skip_connect", "dil_conv_3x3"], ["skip_connect", "dil_conv_5x5"],
               ["max_pool_3x3", "avg_pool_3x3"], ["max_pool_3x3", "avg_pool_3x3"], ["skip_connect", "dil_conv_5x5"],
               ["skip_connect", "dil_conv_5x5"], ["skip_connect", "dil_conv_5x5"]],
}
EVERY_EDGE = {"darts-s2": ["skip_connect", "sep_conv_3x3"], "darts-s3": ["none", "skip_connect", "sep_conv_3x3"],
              "darts-s4": ["noise", "sep_conv_3x3"]}


def small_supernet(name: str, seed: int = 0, steps: int = 4):
    """A tiny supernet of a RobustDARTS space for 8×8 single-channel images and 10 classes (14 edges at 4 steps)."""
    return tiny_supernet(name, seed=seed, C=2, layers=3, steps=steps, num_classes=10, in_channels=1)


def test_the_op_sets_of_every_edge_are_robustdarts():
    s1 = selbench.get_space("darts-s1")
    assert {c: [list(s1.edge_ops(c, e.index)) for e in s1.edges] for c in s1.cell_types} == S1
    for name, ops in EVERY_EDGE.items():
        space = selbench.get_space(name)
        assert all(list(space.edge_ops(c, e.index)) == ops for c in space.cell_types for e in space.edges), name
        assert list(space.ops) == ops and space.num_ops == len(ops)
    darts = selbench.get_space("darts")
    assert all(darts.edge_ops(c, e.index) == darts.ops for c in darts.cell_types for e in darts.edges)


@pytest.mark.parametrize("name", SPACES)
def test_alpha_and_supernet_edges_follow_the_edge_ops(name):
    supernet = small_supernet(name)
    space = supernet.space
    assert {c: tuple(a.shape) for c, a in supernet.alphas.items()} == {c: (14, space.num_ops) for c in space.cell_types}
    cell = supernet.cells[1]  # a reduction cell: its first edges are strided
    for edge in space.edges:
        built = [type(op).__name__ for op in cell._ops[edge.index]._ops]
        expected = [type(make_op(op, 4, 2 if edge.src < 2 else 1, affine=False, pool_bn=True)).__name__
                    for op in space.edge_ops("reduce", edge.index)]
        assert built == expected, edge


def test_an_s1_genotype_names_each_column_through_its_own_edge():
    """Column k of edge e is edge_ops(e)[k]: DARTS-PT's genotype() reads the global list's k-th op instead."""
    space = selbench.get_space("darts-s1")
    prefer_second = {c: torch.tensor([[0.0, 1.0]] * space.num_edges) + torch.arange(14.0)[:, None] / 100
                     for c in space.cell_types}
    genotype = space.genotype_from_scores(prefer_second)
    space.validate(genotype)
    for cell_type in space.cell_types:
        for k, node in enumerate(genotype[cell_type].nodes):
            for op, src in node:
                assert op == S1[cell_type][space.edge_index(src, k + 2)][1]
    global_names = {cell_type: [[(space.ops[1], src) for _, src in node] for node in genotype[cell_type].nodes]
                    for cell_type in space.cell_types}
    wrong = selbench.Genotype({c: selbench.CellGenotype.of(nodes, range(2, 6)) for c, nodes in global_names.items()})
    assert wrong != genotype
    with pytest.raises(selbench.GenotypeError, match="the ops of edge"):
        space.validate(wrong)
    with pytest.raises(selbench.GenotypeError):
        space.build_network(wrong, C=4, layers=3, in_channels=1, auxiliary=False)


def test_a_discrete_s1_network_runs_and_its_checkpoint_round_trips(tmp_path):
    supernet = small_supernet("darts-s1")
    selbench.save_supernet(supernet, tmp_path / "s1.pt")
    loaded = selbench.load_supernet(tmp_path / "s1.pt")
    assert loaded.space.name == "darts-s1" and loaded.space.per_edge_ops == supernet.space.per_edge_ops
    assert all(torch.equal(loaded.alphas[c], supernet.alphas[c]) for c in supernet.alphas)
    genotype = loaded.space.genotype_from_scores({c: a.detach() for c, a in loaded.alphas.items()})
    network = loaded.space.build_network(genotype, C=4, layers=3, in_channels=1, auxiliary=False)
    assert network(torch.randn(2, 1, 8, 8))[0].shape == (2, 10)


def test_s1_ops_and_nodes_cannot_be_changed():
    with pytest.raises(selbench.GenotypeError, match="fixed ops"):
        selbench.get_space("darts-s1").build_supernet(ops=["skip_connect", "sep_conv_3x3"])
    with pytest.raises(selbench.GenotypeError, match="4 nodes; got steps=2"):
        selbench.get_space("darts-s1").build_supernet(steps=2)


@pytest.mark.parametrize("stride", [1, 2])
def test_noise_ignores_its_input_and_is_standard_normal(stride):
    noise = make_op("noise", 4, stride, affine=True, pool_bn=False)
    x = torch.randn(8, 4, 32, 32)
    torch.manual_seed(5)
    first = noise(x)
    torch.manual_seed(5)
    again = noise(100 * x + 3)
    assert first.shape == x[:, :, ::stride, ::stride].shape
    assert torch.equal(first, again)  # the values depend on the generator's state only
    assert abs(first.mean().item()) < 0.05 and abs(first.std().item() - 1) < 0.05
    assert not torch.equal(noise(x), noise(x))  # fresh noise on every call


def test_s4_supernet_is_reproducible_under_a_seed():
    supernet = small_supernet("darts-s4")
    x = torch.randn(2, 1, 8, 8)
    torch.manual_seed(1)
    first = supernet(x)
    torch.manual_seed(1)
    assert torch.equal(first, supernet(x))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("recipe", ["s1-demo", "s2-demo", "s3-demo", "s4-demo"])
@pytest.mark.parametrize("selector", ["alpha-magnitude", "perturbation", "cost-sign", "influential-magnitude"])
def test_every_selector_runs_on_the_demo_spaces(recipe, selector):
    loaded = load_recipe(recipe)
    space = loaded.supernet["space"]
    # S1 needs its 14 edges; the spaces with the same ops on every edge are quicker with 2 nodes (5 edges)
    supernet = small_supernet(space, steps=4 if space == "darts-s1" else 2)
    # cost sign may rightly keep no edge of a cell (every cost ≥ 0); run_selector checks whatever it returns
    run_selector(selector, supernet=supernet, data=tiny_data(n=8), seed=0, allow_failure=selector == "cost-sign",
                 **loaded.selectors.get(selector, {}))


def test_a_run_record_labels_the_columns_of_each_edge():
    s1, s3 = selbench.get_space("darts-s1"), selbench.get_space("darts-s3")
    layout = selbench.EdgeLayout.from_dict(space_layout(s1))
    assert layout.edge_ops == {c: tuple(map(tuple, rows)) for c, rows in S1.items()} and layout.real_ops == [0, 1]
    assert selbench.EdgeLayout.from_dict(space_layout(s3)).real_ops == [1, 2]  # column 0 is `none` on every edge
    assert "edge_ops" not in space_layout(selbench.get_space("darts"))
