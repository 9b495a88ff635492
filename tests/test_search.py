"""The supernet search loop: DARTS's second-order step against autograd, and which split feeds what."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import selbench
from conftest import tiny_data, tiny_supernet
from selbench.train.loop import (
    evaluate_supernet,
    finite_difference_hvp,
    search_epoch,
    second_order_arch_step,
    unrolled_weights,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(seed: int, n: int = 8, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g, dtype=dtype), torch.randint(0, 4, (n,), generator=g)


def named_weights(supernet):
    arch = {id(a) for a in supernet.arch_parameters()}
    return [(name, p) for name, p in supernet.named_parameters() if id(p) not in arch]


def loss_with(supernet, values, images, labels):
    """Cross-entropy with θ replaced by ``values`` (BatchNorm on batch statistics, buffers untouched)."""
    names = [name for name, _ in named_weights(supernet)]
    buffers = {name: b.clone() for name, b in supernet.named_buffers()}
    return F.cross_entropy(functional_call(supernet, {**dict(zip(names, values)), **buffers}, (images,)), labels)


def relative_error(approx, exact):
    approx, exact = torch.cat([a.flatten() for a in approx]), torch.cat([e.flatten() for e in exact])
    return (torch.linalg.vector_norm(approx - exact) / torch.linalg.vector_norm(exact)).item()


class SmoothMixture(torch.nn.Module):
    """A tiny smooth model with DARTS's structure: softmax(α)-mixed candidate ops, then a classifier."""

    def __init__(self, features: int = 5, hidden: int = 4, classes: int = 3):
        super().__init__()
        g = torch.Generator().manual_seed(0)

        def make(*shape):
            return torch.nn.Parameter(torch.randn(*shape, generator=g, dtype=torch.float64))

        self.ops = torch.nn.ParameterList([make(features, hidden) for _ in range(3)])
        self.classifier = make(hidden, classes)
        self.alpha = make(3)

    def loss(self, weights, images, labels):
        *ops, classifier = weights
        mixing = self.alpha.softmax(0)
        outputs = (torch.tanh(images @ ops[0]), F.softplus(images @ ops[1]), images @ ops[2])
        hidden = sum(m * o for m, o in zip(mixing, outputs))
        return F.cross_entropy(hidden @ classifier, labels)


def test_finite_difference_hvp_matches_autograd():
    """DARTS's central difference with its own ε = 0.01/‖v‖ against the exact mixed second derivative."""
    model = SmoothMixture()
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)
    weights = [*model.ops, model.classifier]
    direction = [torch.randn(w.shape, generator=g, dtype=w.dtype) for w in weights]
    grad_w = torch.autograd.grad(model.loss(weights, images, labels), weights, create_graph=True)
    exact = torch.autograd.grad(sum((gw * v).sum() for gw, v in zip(grad_w, direction)), [model.alpha])
    approx = finite_difference_hvp(lambda w: torch.autograd.grad(model.loss(w, images, labels), [model.alpha]),
                                   weights, direction, epsilon=0.01)
    assert relative_error(approx, exact) < 1e-2
    assert relative_error([torch.zeros_like(e) for e in exact], exact) == 1.0  # the measure can fail


def test_finite_difference_hvp_matches_autograd_on_a_supernet():
    """The same on a DARTS supernet.

    Its ReLUs and max pools put kinks everywhere: with DARTS's ε = 0.01/‖v‖ the two points
    w ± εv of this tiny network fall on different linear pieces, so ε is taken small here.
    """
    supernet = tiny_supernet(C=2, layers=3).double()
    images, labels = batch(0, dtype=torch.float64)
    weights = [p for _, p in named_weights(supernet)]
    arch = list(supernet.arch_parameters())
    g = torch.Generator().manual_seed(1)
    direction = [torch.randn(w.shape, generator=g, dtype=w.dtype) for w in weights]
    grad_w = torch.autograd.grad(loss_with(supernet, weights, images, labels), weights, create_graph=True)
    exact = torch.autograd.grad(sum((gw * v).sum() for gw, v in zip(grad_w, direction)), arch)
    approx = finite_difference_hvp(
        lambda w: torch.autograd.grad(loss_with(supernet, w, images, labels), arch), weights, direction, epsilon=1e-7)
    assert relative_error(approx, exact) < 1e-2


def test_unrolled_weights_are_the_step_sgd_would_take():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    optimizer = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.01)
    w.grad = torch.tensor([0.3, 0.1, -0.2])
    optimizer.step()  # creates the momentum buffer
    grad = torch.tensor([-0.5, 0.25, 1.0])
    virtual = unrolled_weights([w], [grad], optimizer)[0]
    w.grad = grad.clone()
    optimizer.step()
    assert torch.allclose(virtual, w.detach(), atol=1e-7)


def test_second_order_step_follows_the_exact_unrolled_gradient():
    """α's gradient is d/dα L_val(w − ξ(μm + ∇_w L_train(w, α) + λw), α), computed here by autograd."""
    supernet = tiny_supernet(C=2, layers=3).double()
    train_images, train_labels = batch(2, dtype=torch.float64)
    valid_images, valid_labels = batch(3, dtype=torch.float64)
    weights = [p for _, p in named_weights(supernet)]
    arch = list(supernet.arch_parameters())
    w_optimizer = torch.optim.SGD(weights, lr=0.05, momentum=0.9, weight_decay=3e-4)
    loss_with(supernet, weights, *batch(4, dtype=torch.float64)).backward()
    w_optimizer.step()  # a real step first, so the momentum term takes part
    w_optimizer.zero_grad()

    grad_w = torch.autograd.grad(loss_with(supernet, weights, train_images, train_labels), weights, create_graph=True)
    xi, mu, lam = 0.05, 0.9, 3e-4
    w_prime = [w - xi * (mu * w_optimizer.state[w]["momentum_buffer"] + g + lam * w) for w, g in zip(weights, grad_w)]
    exact = torch.autograd.grad(loss_with(supernet, w_prime, valid_images, valid_labels), arch)

    before = [a.detach().clone() for a in arch]
    theta_before = [w.detach().clone() for w in weights]
    a_optimizer = torch.optim.SGD(arch, lr=1.0)  # α ← α − grad: the step reveals the gradient
    arch_step = second_order_arch_step(supernet, a_optimizer, w_optimizer, hvp_epsilon=1e-7)
    arch_step(train_images, train_labels, valid_images, valid_labels)
    used = [b - a.detach() for a, b in zip(arch, before)]
    assert relative_error(used, exact) < 1e-2
    first_order = torch.autograd.grad(loss_with(supernet, weights, valid_images, valid_labels), arch)
    assert relative_error(first_order, exact) > 1e-2  # the second-order term is visible
    assert all(torch.equal(w, t) for w, t in zip(weights, theta_before))  # θ untouched


class SplitLog:
    """Records which split each supernet forward pass read, and what was forwarded before each update."""

    def __init__(self, supernet, data, w_optimizer, a_optimizer):
        self.split_of = {x.data_ptr(): split for split in ("train", "valid") for x, _ in data.batches(split)}
        self.pending: set[str] = set()
        self.before = {"theta": [], "alpha": []}
        supernet.register_forward_pre_hook(lambda module, args: self.pending.add(self.split_of[args[0].data_ptr()]))
        self._wrap(w_optimizer, "theta")
        if a_optimizer is not None:
            self._wrap(a_optimizer, "alpha")

    def _wrap(self, optimizer, name):
        step = optimizer.step

        def logged_step(*args, **kwargs):
            self.before[name].append(frozenset(self.pending))
            self.pending = set()
            return step(*args, **kwargs)

        optimizer.step = logged_step


def run_epoch(mode):
    supernet, data = tiny_supernet(), tiny_data()
    w_optimizer = torch.optim.SGD(supernet.weight_parameters(), lr=0.05, momentum=0.9)
    a_optimizer = None if mode == "frozen-alpha" else torch.optim.Adam(supernet.arch_parameters(), lr=0.01)
    log = SplitLog(supernet, data, w_optimizer, a_optimizer)
    alphas_before = {k: a.detach().clone() for k, a in supernet.alphas.items()}
    metrics = search_epoch(supernet, data.batches("train"), lambda: data.batches("valid"), w_optimizer=w_optimizer,
                           a_optimizer=a_optimizer, mode=mode)
    return supernet, log, alphas_before, metrics


def test_single_level_uses_only_the_training_split():
    supernet, log, before, _ = run_epoch("single-level")
    assert log.before["theta"] == [frozenset({"train"})] * 2
    # θ and α step on the same forward pass: α's step follows θ's without a new forward
    assert log.before["alpha"] == [frozenset()] * 2
    assert not torch.equal(supernet.alphas["reduce"], before["reduce"])  # (both tiny cells reduce)


def test_first_order_bilevel_steps_alpha_on_valid_and_theta_on_train():
    supernet, log, before, _ = run_epoch("bilevel-1st")
    assert log.before["alpha"] == [frozenset({"valid"})] * 2
    assert log.before["theta"] == [frozenset({"train"})] * 2
    assert not torch.equal(supernet.alphas["reduce"], before["reduce"])  # (both tiny cells reduce)


def test_second_order_bilevel_reads_both_splits_for_alpha():
    supernet, log, before, _ = run_epoch("bilevel-2nd")
    assert log.before["alpha"] == [frozenset({"train", "valid"})] * 2  # unrolled θ step, L_val, Hessian term
    assert log.before["theta"] == [frozenset({"train"})] * 2
    assert not torch.equal(supernet.alphas["reduce"], before["reduce"])


def test_frozen_alpha_leaves_alpha_bit_identical():
    supernet, log, before, _ = run_epoch("frozen-alpha")
    assert log.before["theta"] == [frozenset({"train"})] * 2 and log.before["alpha"] == []
    assert all(torch.equal(supernet.alphas[k], before[k]) for k in before)
    assert not torch.equal(supernet.stem[0].weight, tiny_supernet().stem[0].weight)  # θ did train


def test_search_epoch_reports_the_mean_loss_and_accuracy():
    _, _, _, metrics = run_epoch("frozen-alpha")
    assert metrics["loss"].dim() == 0 and 0 <= metrics["accuracy"].item() <= 1


def test_evaluate_supernet_matches_a_direct_count():
    supernet, data = tiny_supernet(), tiny_data()
    supernet.eval()
    images, labels = data.splits["valid"]
    with torch.no_grad():
        logits = supernet(images)
    expected_accuracy = (logits.argmax(1) == labels).double().mean().item()
    expected_loss = F.cross_entropy(logits, labels).item()
    supernet.train()
    metrics = evaluate_supernet(supernet, data.batches("valid"))
    assert abs(metrics["accuracy"].item() - expected_accuracy) < 1e-9
    assert abs(metrics["loss"].item() - expected_loss) < 1e-5
    assert supernet.training


def test_bilevel_without_validation_data_is_a_clear_error():
    supernet = tiny_supernet()
    w_optimizer = torch.optim.SGD(supernet.weight_parameters(), lr=0.1)
    a_optimizer = torch.optim.Adam(supernet.arch_parameters())
    with pytest.raises(selbench.SelbenchError, match="needs a validation split"):
        search_epoch(supernet, tiny_data().batches("train"), None, w_optimizer=w_optimizer, a_optimizer=a_optimizer,
                     mode="bilevel-2nd")
