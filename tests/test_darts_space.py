"""The DARTS space: paper parameter count, DARTS module names, the mixing-weight override, the DARTS-PT variant."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import selbench
from darts_reference import DARTS_OPS, DARTS_PT_OPS, DARTS_TEXT
from selbench import Genotype


# -- the names the original DARTS code gives to every tensor, written out from its model_search.py layout ------
def bn_buffers(prefix: str) -> list[str]:
    """A non-affine BatchNorm: running statistics only."""
    return [f"{prefix}.running_mean", f"{prefix}.running_var", f"{prefix}.num_batches_tracked"]


def relu_conv_bn(prefix: str) -> list[str]:
    return [f"{prefix}.op.1.weight", *bn_buffers(f"{prefix}.op.2")]


def factorized_reduce(prefix: str) -> list[str]:
    return [f"{prefix}.conv_1.weight", f"{prefix}.conv_2.weight", *bn_buffers(f"{prefix}.bn")]


def search_op_keys(op: str, prefix: str, stride: int) -> list[str]:
    if op == "none":
        return []
    if op.endswith("pool_3x3"):  # pool, then a non-affine BN
        return bn_buffers(f"{prefix}.1")
    if op == "skip_connect":
        return factorized_reduce(prefix) if stride == 2 else []
    if op.startswith("sep_conv"):  # [ReLU, depthwise, pointwise, BN] twice
        return [f"{prefix}.op.1.weight", f"{prefix}.op.2.weight", *bn_buffers(f"{prefix}.op.3"),
                f"{prefix}.op.5.weight", f"{prefix}.op.6.weight", *bn_buffers(f"{prefix}.op.7")]
    assert op.startswith("dil_conv")
    return [f"{prefix}.op.1.weight", f"{prefix}.op.2.weight", *bn_buffers(f"{prefix}.op.3")]


def expected_supernet_keys(ops: list[str], layers: int, steps: int) -> set[str]:
    keys = ["stem.0.weight", "stem.1.weight", "stem.1.bias", *bn_buffers("stem.1")]
    reductions = {layers // 3, 2 * layers // 3}
    reduction_prev = False
    for i in range(layers):
        reduction = i in reductions
        cell = f"cells.{i}"
        keys += factorized_reduce(f"{cell}.preprocess0") if reduction_prev else relu_conv_bn(f"{cell}.preprocess0")
        keys += relu_conv_bn(f"{cell}.preprocess1")
        edge = 0
        for node in range(steps):
            for src in range(2 + node):
                stride = 2 if reduction and src < 2 else 1
                for k, op in enumerate(ops):
                    keys += search_op_keys(op, f"{cell}._ops.{edge}._ops.{k}", stride)
                edge += 1
        reduction_prev = reduction
    keys += ["classifier.weight", "classifier.bias"]
    assert len(keys) == len(set(keys))
    return set(keys)


def theta_state_dict(supernet) -> dict[str, torch.Tensor]:
    """The state dict without α, as the original DARTS code would have written it."""
    return {k: v for k, v in supernet.state_dict().items() if not k.startswith("alphas.")}


# -- the evaluation network -------------------------------------------------------------------
def test_darts_v2_evaluation_network_has_the_paper_parameter_count():
    net = selbench.get_space("darts").build_network(Genotype.parse(DARTS_TEXT["DARTS_V2"]), C=36, layers=20,
                                                     num_classes=10, auxiliary=True)
    counted = sum(p.numel() for name, p in net.named_parameters() if not name.startswith("auxiliary_head."))
    assert abs(counted - 3.3e6) <= 0.05e6
    assert counted == 3_349_342  # DARTS logs "param size = 3.349342MB" for this network
    assert sum(p.numel() for p in net.auxiliary_head.parameters()) > 0


def test_discrete_network_names_and_outputs():
    genotype = Genotype.parse(DARTS_TEXT["DARTS_V2"])
    net = selbench.get_space("darts").build_network(genotype, C=4, layers=3, num_classes=5, auxiliary=True,
                                                     in_channels=1)
    keys = set(net.state_dict())
    # normal cell 0: edge 0 is sep_conv_3x3 with affine BNs; the skip edges are identities without tensors
    assert {"stem.0.weight", "cells.0.preprocess0.op.1.weight", "cells.0.preprocess0.op.2.weight",
            "cells.0._ops.0.op.1.weight", "cells.0._ops.0.op.7.bias", "classifier.weight"} <= keys
    assert not any(k.startswith(("cells.0._ops.5.", "cells.0._ops.6.")) for k in keys)
    # DARTS_V2's reduction cell has only pools and stride-1 skips: pools carry no BN in the discrete network
    assert not any(k.startswith("cells.1._ops.") for k in keys)
    assert "cells.2.preprocess0.conv_1.weight" in keys  # after a reduction: factorized reduce
    assert any(k.startswith("auxiliary_head.") for k in keys)
    images = torch.randn(2, 1, 32, 32)
    net.train()
    logits, aux = net(images)
    assert logits.shape == (2, 5) and aux.shape == (2, 5)
    net.eval()
    logits, aux = net(images)
    assert aux is None


def test_discrete_skip_from_an_input_of_a_reduction_cell_is_a_factorized_reduce():
    text = DARTS_TEXT["DARTS_V2"].replace("reduce=[('max_pool_3x3', 0)", "reduce=[('skip_connect', 0)")
    net = selbench.get_space("darts").build_network(Genotype.parse(text), C=4, layers=3, in_channels=1)
    assert "cells.1._ops.0.conv_1.weight" in net.state_dict()


def test_drop_path_zeroes_whole_samples_but_never_an_identity():
    torch.manual_seed(0)
    genotype = Genotype.parse(DARTS_TEXT["DARTS_V2"])
    cell_net = selbench.get_space("darts").build_network(genotype, C=4, layers=1, in_channels=1)
    cell = cell_net.cells[0]  # the only cell is a reduction cell: max pools and skips from node 2 (identities)
    s = torch.randn(64, 4 * 3, 8, 8)
    cell.train()
    out = cell(s, s, drop_prob=0.5).detach()
    nodes = out.split(4 * 2, dim=1)
    # node 2 = maxpool(s0) + maxpool(s1): both dropped for some samples -> exact zeros
    assert (nodes[0].flatten(1).abs().sum(1) == 0).any()
    # node 3 = identity(node 2) + pool: the identity is never dropped, so a sample is zero only where node 2 is
    zero_node2 = nodes[0].flatten(1).abs().sum(1) == 0
    zero_node3 = nodes[1].flatten(1).abs().sum(1) == 0
    assert not (zero_node3 & ~zero_node2).any()


# -- the supernet -------------------------------------------------------------------------------
@pytest.mark.parametrize("ops", [DARTS_OPS, DARTS_PT_OPS], ids=["darts-8-ops", "darts-pt-7-ops"])
@pytest.mark.parametrize("layers,steps", [(3, 4), (2, 2)])
def test_supernet_state_dict_follows_darts_names(ops, layers, steps):
    supernet = selbench.get_space("darts").build_supernet(C=2, layers=layers, steps=steps, num_classes=3, ops=ops)
    expected = expected_supernet_keys(ops, layers, steps)
    assert set(theta_state_dict(supernet)) == expected
    assert set(supernet.state_dict()) == expected | {"alphas.normal", "alphas.reduce"}
    num_edges = sum(2 + node for node in range(steps))
    for alpha in supernet.alphas.values():
        assert tuple(alpha.shape) == (num_edges, len(ops))
    assert tuple(supernet.state_dict()["stem.0.weight"].shape) == (3 * 2, 3, 3, 3)


def test_darts_named_state_dict_without_alpha_loads_strictly():
    source = selbench.get_space("darts").build_supernet(C=2, layers=3, num_classes=3)
    with torch.no_grad():
        for p in source.parameters():
            p.uniform_(-1, 1)
    state_dict = theta_state_dict(source)
    target = selbench.get_space("darts").build_supernet(C=2, layers=3, num_classes=3)
    alphas_before = {k: a.detach().clone() for k, a in target.alphas.items()}
    result = target.load_state_dict(state_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    loaded = target.state_dict()
    for key, value in state_dict.items():
        assert torch.equal(loaded[key], value), key
    for key, alpha in target.alphas.items():
        assert torch.equal(alpha, alphas_before[key])  # α is not in a DARTS state dict: kept as it was
    # strict means strict: a stray key or a missing θ tensor is still refused
    with pytest.raises(RuntimeError):
        target.load_state_dict({**state_dict, "cells.0._ops.99.weight": torch.zeros(1)}, strict=True)
    with pytest.raises(RuntimeError):
        target.load_state_dict({k: v for k, v in state_dict.items() if k != "classifier.bias"}, strict=True)


def test_weight_and_arch_parameters_split_all_parameters():
    supernet = selbench.get_space("darts").build_supernet(C=2, layers=2, num_classes=3)
    theta = {id(p) for p in supernet.weight_parameters()}
    alpha = {id(p) for p in supernet.arch_parameters()}
    assert not theta & alpha
    assert theta | alpha == {id(p) for p in supernet.parameters()}
    assert alpha == {id(a) for a in supernet.alphas.values()}
    assert len(alpha) == 2


def test_supernet_follows_the_protocol():
    supernet = selbench.get_space("darts").build_supernet(C=2, layers=2, num_classes=3)
    assert isinstance(supernet, selbench.Supernet)
    rebuilt = supernet.space.build_supernet(**supernet.space_args)
    assert set(rebuilt.state_dict()) == set(supernet.state_dict())


def test_plain_forward_uses_softmax_alpha():
    supernet = selbench.get_space("darts").build_supernet(C=2, layers=3, num_classes=3, in_channels=1).eval()
    with torch.no_grad():
        for alpha in supernet.alphas.values():
            alpha.normal_()
    x = torch.randn(4, 1, 8, 8)
    explicit = {k: F.softmax(a, dim=-1) for k, a in supernet.alphas.items()}
    assert torch.equal(supernet(x), supernet(x, weights=explicit))
    other_normal = {"normal": torch.rand_like(explicit["normal"])}
    only_normal = supernet(x, weights=other_normal)
    assert not torch.allclose(only_normal, supernet(x))
    assert torch.equal(only_normal, supernet(x, weights={**explicit, **other_normal}))  # reduce keeps its softmax


def test_zero_mixing_weights_silence_every_cell():
    supernet = selbench.get_space("darts").build_supernet(C=2, layers=2, num_classes=3, in_channels=1).eval()
    zeros = {k: torch.zeros_like(a) for k, a in supernet.alphas.items()}
    logits = supernet(torch.randn(4, 1, 8, 8), weights=zeros)
    # every node is Σ 0·op(x) = 0, so the pooled features are 0 and the logits are the classifier bias
    torch.testing.assert_close(logits, supernet.classifier.bias.expand(4, 3), rtol=0, atol=0)


def test_mixing_weights_override_is_differentiable_and_matches_finite_differences():
    torch.manual_seed(0)
    supernet = selbench.get_space("darts").build_supernet(C=2, layers=3, steps=2, num_classes=3, in_channels=1)
    supernet = supernet.double().train()
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    weights = {k: torch.rand(a.shape, dtype=torch.float64, requires_grad=True) for k, a in supernet.alphas.items()}

    def loss(w):
        return F.cross_entropy(supernet(x, weights=w), y)

    loss(weights).backward()
    assert all(a.grad is None for a in supernet.alphas.values())  # α is bypassed entirely
    direction = {k: torch.randn_like(w) for k, w in weights.items()}
    analytic = sum((weights[k].grad * direction[k]).sum() for k in weights)
    eps = 1e-6
    with torch.no_grad():
        plus = loss({k: w + eps * direction[k] for k, w in weights.items()})
        minus = loss({k: w - eps * direction[k] for k, w in weights.items()})
    numeric = (plus - minus) / (2 * eps)
    assert analytic.abs() > 1e-4
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_darts_pt_variant_has_no_none_op_and_runs():
    space = selbench.get_space("darts", ops=DARTS_PT_OPS)
    assert list(space.ops) == DARTS_PT_OPS
    assert [space.ops[i] for i in space.selectable_ops] == DARTS_PT_OPS
    supernet = space.build_supernet(C=2, layers=2, num_classes=3, in_channels=1)
    assert list(supernet.space.ops) == DARTS_PT_OPS
    assert supernet.space_args["ops"] == DARTS_PT_OPS
    assert not any(type(m).__name__ == "Zero" for m in supernet.modules())
    assert supernet(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_default_space_is_darts_with_eight_ops():
    space = selbench.get_space("darts")
    assert list(space.ops) == DARTS_OPS
    assert space.cell_types == ("normal", "reduce")
    assert space.num_edges == 14
    assert [(e.src, e.dst) for e in space.edges_into(4)] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert [space.ops[i] for i in space.selectable_ops] == DARTS_PT_OPS
    assert "darts" in selbench.list_spaces()


@pytest.mark.parametrize("kwargs", [
    dict(C=2, layers=3, num_classes=3),
    dict(C=4, layers=2, num_classes=5, steps=3, ops=DARTS_PT_OPS, in_channels=1),
    dict(C=2, layers=5, num_classes=3, multiplier=2, stem_multiplier=2),
])
def test_supernet_arguments_are_read_back_from_the_tensors(kwargs):
    space = selbench.get_space("darts")
    supernet = space.build_supernet(**kwargs)
    inferred = space.infer_supernet_args(theta_state_dict(supernet), dict(supernet.alphas))
    assert inferred == supernet.space_args


@pytest.mark.parametrize("channels", [2, 6, 8, 16])
def test_strided_pointwise_conv_computes_the_strided_convolution(channels):
    from selbench.supernets.darts_ops import StridedPointwiseConv

    torch.manual_seed(0)
    ours = StridedPointwiseConv(channels, 4, 2).to(memory_format=torch.channels_last)
    plain = torch.nn.Conv2d(channels, 4, 1, stride=2, bias=False)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(8, channels, 8, 8).to(memory_format=torch.channels_last).requires_grad_()
    y = ours(x)
    expected = plain(x.detach().contiguous())
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-6)
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    x_plain = x.detach().contiguous().requires_grad_()
    (expected_grad,) = torch.autograd.grad(plain(x_plain).square().sum(), x_plain)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-6)
