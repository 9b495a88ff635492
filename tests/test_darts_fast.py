"""The fast DARTS supernet computes the reference's function: logits, gradients, BatchNorm state, HVPs, checkpoints."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import selbench
from conftest import tiny_supernet
from selbench import batchnorm_mode
from selbench.plugins.influence import weight_hvps
from selbench.plugins.influential_magnitude import batch_loss
from selbench.train.loop import second_order_arch_step

pytestmark = pytest.mark.usefixtures("one_thread")

RTOL, ATOL = 1e-5, 1e-6


def twin_supernets(**kwargs):
    """The same supernet (random, non-uniform α) as ``reference`` and as ``fast``."""
    reference = tiny_supernet(C=4, layers=3, **kwargs)
    with torch.no_grad():
        for alpha in reference.alphas.values():
            alpha.normal_()
    reference.implementation = "reference"
    fast = copy.deepcopy(reference)
    fast.implementation = "fast"
    return reference, fast


def batch(n: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=generator), torch.randint(0, 4, (n,), generator=generator)


def assert_close_relative(actual, expected):
    """Equal to 1e-5 of the expected tensor's largest magnitude."""
    scale = expected.abs().max().clamp_min(1e-12)
    torch.testing.assert_close(actual / scale, expected / scale, rtol=RTOL, atol=RTOL)


def step(supernet, images, labels, weights=None):
    supernet.zero_grad(set_to_none=True)
    logits = supernet(images, weights)
    F.cross_entropy(logits, labels).backward()
    return logits.detach()


@pytest.mark.parametrize("kwargs, memory_format", [
    ({}, torch.contiguous_format), ({}, torch.channels_last),
    ({"ops": selbench.get_space("darts").ops[1:]}, torch.channels_last), ({"steps": 2}, torch.contiguous_format),
], ids=["darts", "darts-channels-last", "darts-pt-channels-last", "two-steps"])
def test_train_step_logits_gradients_and_running_statistics_agree(kwargs, memory_format):
    reference, fast = twin_supernets(**kwargs)
    reference.to(memory_format=memory_format), fast.to(memory_format=memory_format)
    images, labels = batch()
    images = images.contiguous(memory_format=memory_format)
    for _ in range(2):  # the second step runs on running statistics the first one updated
        expected, actual = step(reference, images, labels), step(fast, images, labels)
        assert_close_relative(actual, expected)
    for (name, p_ref), p_fast in zip(reference.named_parameters(), fast.parameters()):
        assert p_fast.grad is not None, name
        assert_close_relative(p_fast.grad, p_ref.grad)
    for (name, b_ref), b_fast in zip(reference.named_buffers(), fast.buffers()):
        if b_ref.is_floating_point():
            torch.testing.assert_close(b_fast, b_ref, rtol=RTOL, atol=1e-6, msg=name)
        else:
            assert torch.equal(b_fast, b_ref), name  # num_batches_tracked


def test_eval_mode_uses_each_ops_running_statistics():
    reference, fast = twin_supernets()
    images, labels = batch()
    step(reference, images, labels), step(fast, images, labels)  # running statistics now differ op by op
    reference.eval(), fast.eval()
    with torch.no_grad():
        assert_close_relative(fast(images), reference(images))


def test_mixing_weight_gradients_agree_and_none_gets_zero():
    reference, fast = twin_supernets()
    images, labels = batch()
    gradients = []
    for supernet in (reference, fast):
        weights = {k: F.softmax(a.detach(), dim=-1) for k, a in supernet.alphas.items()}
        weights["normal"][3, 4] = 0.0  # an op with exactly zero weight still gets its gradient
        weights = {k: w.requires_grad_() for k, w in weights.items()}
        step(supernet, images, labels, weights)
        gradients.append({k: w.grad for k, w in weights.items()})
    none = supernet.space.ops.index("none")
    for cell_type in gradients[0]:
        assert_close_relative(gradients[1][cell_type], gradients[0][cell_type])
        assert torch.equal(gradients[1][cell_type][:, none], torch.zeros(supernet.space.num_edges))
        assert gradients[1][cell_type][3, 4].abs() > 0


def test_hessian_vector_products_with_torch_func_agree():
    reference, fast = twin_supernets()
    images, labels = batch()
    vectors = torch.randn(3, 2 * 14 * 8, generator=torch.Generator().manual_seed(1))
    products = []
    for supernet in (reference, fast):
        like = {k: F.softmax(a.detach(), dim=-1) for k, a in supernet.alphas.items()}
        point = torch.cat([w.reshape(-1) for w in like.values()])
        with batchnorm_mode(supernet, "train"):
            products.append(weight_hvps(batch_loss(supernet, images, labels, like, "weights"), point, vectors))
    assert_close_relative(products[1], products[0])


def test_double_backward_agrees():
    reference, fast = twin_supernets()
    images, labels = batch()
    products = []
    for supernet in (reference, fast):
        weights = {k: F.softmax(a.detach(), dim=-1).requires_grad_() for k, a in supernet.alphas.items()}
        loss = F.cross_entropy(supernet(images, weights), labels)
        gradient = torch.autograd.grad(loss, weights["normal"], create_graph=True)[0]
        products.append(torch.autograd.grad(gradient.square().sum(), weights["normal"])[0])
    assert_close_relative(products[1], products[0])


def test_second_order_arch_step_agrees():
    reference, fast = twin_supernets()
    images, labels = batch()
    valid_images, valid_labels = batch(seed=1)
    for supernet in (reference, fast):
        w_optimizer = torch.optim.SGD(supernet.weight_parameters(), lr=0.1, momentum=0.9)
        a_optimizer = torch.optim.SGD(supernet.arch_parameters(), lr=1.0)
        second_order_arch_step(supernet, a_optimizer, w_optimizer)(images, labels, valid_images, valid_labels)
    for alpha_ref, alpha_fast in zip(reference.arch_parameters(), fast.arch_parameters()):
        assert_close_relative(alpha_fast.grad, alpha_ref.grad)


def test_active_ops_agree():
    """Some edges computing two ops, some one, some none; ops left out count as zero in both."""
    reference, fast = twin_supernets()
    images, labels = batch()
    active = {"normal": [(0, 4), (3, 7), (5,)] * 4 + [(), ()], "reduce": [(1,)] * 7 + [()] * 2 + [(2, 3, 6)] * 5}
    results = []
    for supernet in (reference, fast):
        supernet.zero_grad(set_to_none=True)
        with supernet.active_ops(active):
            logits = supernet(images)
        F.cross_entropy(logits, labels).backward()
        results.append((logits.detach(), [p.grad for p in supernet.arch_parameters()]))
    assert_close_relative(results[1][0], results[0][0])
    for grad_fast, grad_reference in zip(results[1][1], results[0][1]):
        assert_close_relative(grad_fast, grad_reference)


def test_implementation_is_no_architecture_argument(tmp_path):
    reference, _ = twin_supernets()
    path = tmp_path / "supernet.pt"
    selbench.save_supernet(reference, path)
    loaded = selbench.load_supernet(path)
    assert loaded.implementation == "fast" and "implementation" not in loaded.space_args
    assert list(loaded.state_dict()) == list(reference.state_dict())
    images, _ = batch()
    reference.eval(), loaded.eval()
    with torch.no_grad():
        assert_close_relative(loaded(images), reference(images))
    original_darts = {k: v for k, v in reference.state_dict().items() if not k.startswith("alphas.")}
    fresh = selbench.get_space("darts").build_supernet(C=4, layers=3, num_classes=4, in_channels=1,
                                                       implementation="fast")
    fresh.load_state_dict(original_darts, strict=True)


def test_unknown_implementation_is_one_clear_error():
    with pytest.raises(selbench.GenotypeError, match="implementation must be one of"):
        selbench.get_space("darts").build_supernet(C=4, layers=1, implementation="quick")
    with pytest.raises(ValueError, match="unknown DARTS supernet implementation"):
        tiny_supernet().implementation = "quick"
