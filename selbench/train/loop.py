"""The supernet training loop shared by `selbench train` and selectors that fine-tune (DARTS-PT).

One epoch walks the train split for θ; depending on the mode, α is updated too:

* ``single-level``: α and θ descend the same training-batch loss together;
* ``bilevel-1st``: α takes a step on a validation batch, then θ on a training batch (DARTS
  first order);
* ``bilevel-2nd``: as ``bilevel-1st``, but α descends the gradient of the validation loss
  after one virtual SGD step of θ (DARTS second order, :func:`second_order_arch_step`);
* ``frozen-alpha``: α never changes;
* ``snas``, ``dsnas``, ``uniform-sampling``: each step draws architecture samples Z
  (:mod:`selbench.train.sampling`) and passes them as the mixing weights; α (unused by
  ``uniform-sampling``) descends the same training-batch loss as θ.

A :class:`StepObserver` may watch every step: it receives the mixing weights softmax(α)
the step used and, when it asks for them, their gradients ∂L/∂m, tagged with the split the
loss came from (``train`` for θ's step, ``valid`` for a bi-level α step).  Observing never
changes the numbers: the loop computes softmax(α) itself, exactly as the supernet would,
and passes it in as the step's mixing weights.  In the stochastic modes the observer sees the
step's samples Z and ∂L/∂Z.

``precision = "bf16"`` runs the forward passes of θ's steps, of DARTS's first-order α steps
and of evaluations under bf16 autocast (:mod:`selbench.core.precision`): parameters,
gradients and optimiser states stay fp32 and losses are reduced in fp32.  The second-order
α step stays fp32, since its finite-difference Hessian-vector product is a difference of two
nearly equal gradients, which bf16's 8-bit mantissa would turn into rounding noise.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from selbench.core.errors import SelbenchError
from selbench.core.precision import DEFAULT_PRECISION, autocast, for_loss
from selbench.core.space import Supernet
from selbench.core.tensors import Batch
from selbench.train.graphs import GraphedStep
from selbench.train.sampling import SAMPLING_DEFAULTS, STOCHASTIC_MODES, ArchSampler

SEARCH_MODES = ("single-level", "bilevel-1st", "bilevel-2nd", "frozen-alpha", *STOCHASTIC_MODES)
UNUSED_ALPHA_MODES = ("frozen-alpha", "uniform-sampling")  # modes that never update α

# The [search] section of a recipe, with DARTS's CIFAR-10 search hyperparameters as defaults.
SEARCH_DEFAULTS: dict[str, Any] = {
    "mode": "bilevel-1st",
    "epochs": 50,
    "lr": 0.025,  # θ: SGD, cosine-annealed from lr to lr_min over the epochs
    "lr_min": 0.001,
    "momentum": 0.9,
    "weight_decay": 3e-4,
    "grad_clip": 5.0,  # max gradient norm of θ
    "arch_lr": 3e-4,  # α: Adam
    "arch_beta1": 0.5,
    "arch_beta2": 0.999,
    "arch_weight_decay": 1e-3,
    "hvp_epsilon": 0.01,  # bilevel-2nd: finite-difference step ε = hvp_epsilon / ‖∇_w' L_val(w')‖
}

WeightsFn = Callable[[], Mapping[str, Tensor]]
ArchStep = Callable[[Tensor, Tensor, Tensor, Tensor], None]


class StepObserver(Protocol):
    """Watches the mixing weights of every training step (see :mod:`selbench.observers`)."""

    needs_gradients: bool  # whether ``step`` needs ∂L/∂m (the loop only then keeps it)

    def step(self, split: str, weights: Mapping[str, Tensor], grads: Mapping[str, Tensor] | None) -> None:
        """One step's detached mixing weights and ∂L/∂m (``None`` unless asked for), cell type -> [E, O]."""


def observed_mixing(supernet: nn.Module, observer: StepObserver | None,
                    weights_fn: WeightsFn | None = None) -> Mapping[str, Tensor] | None:
    """The mixing weights to pass to one step's forward pass.

    With an ``observer``: softmax(α) per cell type, keeping ∂L/∂m when the observer needs it —
    the numbers and the graph the supernet builds from α when it gets no weights, so a step
    run with them is the same step bit for bit.  Without one: ``weights_fn()`` when given,
    else ``None`` (the supernet's own softmax(α)).
    """
    if observer is None:
        return weights_fn() if weights_fn is not None else None
    alphas = cast(Supernet, supernet).alphas
    mixing = {cell_type: F.softmax(alpha, dim=-1) for cell_type, alpha in alphas.items()}
    if observer.needs_gradients:
        keep_gradients(mixing)
    return mixing


def keep_gradients(mixing: Mapping[str, Tensor]) -> None:
    """Make the next backward leave ∂L/∂m in each ``m.grad`` (a constant m becomes a leaf that takes one)."""
    for weights in mixing.values():
        if weights.requires_grad:
            if not weights.is_leaf:
                weights.retain_grad()
        else:
            weights.requires_grad_()


def report_step(observer: StepObserver | None, split: str, mixing: Mapping[str, Tensor] | None,
                grads: Sequence[Tensor | None] | None = None) -> None:
    """Hand one step to ``observer``: ``grads`` in the order of ``mixing``, default the ``.grad`` a backward left."""
    if observer is None or mixing is None:
        return
    weights = list(mixing.values())
    if observer.needs_gradients:
        found = [m.grad for m in weights] if grads is None else grads
        gradients = dict(zip(mixing, _zeros_for_unused(found, weights)))  # a cell type the network lacks
    else:
        gradients = None
    observer.step(split, {cell_type: m.detach() for cell_type, m in mixing.items()}, gradients)


def _no_custom_weights(observer: StepObserver | None, weights_fn: WeightsFn | None) -> None:
    if observer is not None and weights_fn is not None:
        raise ValueError("a step observer watches softmax(α); it cannot be combined with custom mixing weights")


def first_order_arch_step(supernet: nn.Module, a_optimizer: torch.optim.Optimizer,
                          weights_fn: WeightsFn | None = None, observer: StepObserver | None = None,
                          precision: str = DEFAULT_PRECISION) -> ArchStep:
    """DARTS first order: ∇_α L_val(w, α) at the current w, the forward pass in ``precision``."""
    _no_custom_weights(observer, weights_fn)

    def step(train_images: Tensor, train_labels: Tensor, valid_images: Tensor, valid_labels: Tensor) -> None:
        a_optimizer.zero_grad(set_to_none=True)
        mixing = observed_mixing(supernet, observer, weights_fn)
        with autocast(precision, valid_images.device):
            logits = supernet(valid_images, mixing)
        F.cross_entropy(for_loss(logits), valid_labels).backward()
        a_optimizer.step()
        report_step(observer, "valid", mixing)

    return step


def unrolled_weights(weights: Sequence[Tensor], grads: Sequence[Tensor | None],
                     w_optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """w' = w − ξ·(μ·m + ∇_w L_train + λ·w): the step the θ optimiser (SGD) would take, taken virtually.

    ξ is the current learning rate, μ the momentum (m its buffer, absent before the first
    step) and λ the weight decay, all read from ``w_optimizer``.
    """
    settings = {id(p): group for group in w_optimizer.param_groups for p in group["params"]}
    out = []
    for w, grad in zip(weights, _zeros_for_unused(grads, weights)):
        group = settings[id(w)]
        direction = grad + group["weight_decay"] * w.detach()
        momentum_buffer = w_optimizer.state.get(w, {}).get("momentum_buffer")
        if momentum_buffer is not None:
            direction = direction + group["momentum"] * momentum_buffer
        out.append(w.detach() - group["lr"] * direction)
    return out


def finite_difference_hvp(arch_grad: Callable[[Sequence[Tensor]], Sequence[Tensor]], weights: Sequence[Tensor],
                          direction: Sequence[Tensor], epsilon: float = 0.01) -> list[Tensor]:
    """∇²_{α,w} L · v ≈ [∇_α L(w⁺) − ∇_α L(w⁻)] / (2ε), w± = w ± ε·v, ε = epsilon / ‖v‖ (DARTS eq. 8).

    ``arch_grad(w)`` returns ∇_α L at weights ``w``; ‖v‖ is the norm of all of ``direction``.
    """
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in direction]))
    eps = epsilon / norm.clamp_min(1e-12)
    plus = arch_grad([w.detach() + eps * v for w, v in zip(weights, direction)])
    minus = arch_grad([w.detach() - eps * v for w, v in zip(weights, direction)])
    return [(p - m) / (2 * eps) for p, m in zip(plus, minus)]


def second_order_arch_step(supernet: nn.Module, a_optimizer: torch.optim.Optimizer,
                           w_optimizer: torch.optim.Optimizer, weights_fn: WeightsFn | None = None,
                           hvp_epsilon: float = 0.01, observer: StepObserver | None = None) -> ArchStep:
    """DARTS second order: α descends ∇_α L_val(w', α) − ξ·∇²_{α,w} L_train(w, α)·∇_w' L_val(w', α).

    w' = w − ξ·∇_w L_train(w, α) is one virtual θ step (:func:`unrolled_weights`); the
    Hessian-vector product is the central difference of :func:`finite_difference_hvp`.
    θ is untouched, and the BatchNorm statistics of the virtual forward passes are discarded.
    An ``observer`` sees the validation loss's ∂L_val(w', α)/∂m, the direct term's source.
    """
    _no_custom_weights(observer, weights_fn)
    arch = list(cast(Supernet, supernet).arch_parameters())
    arch_ids = {id(a) for a in arch}
    named_weights = [(name, p) for name, p in supernet.named_parameters() if id(p) not in arch_ids]
    names = [name for name, _ in named_weights]
    weights = [p for _, p in named_weights]

    def loss_at(w_values: Sequence[Tensor], images: Tensor, labels: Tensor,
                mixing: Mapping[str, Tensor] | None) -> Tensor:
        buffers = {name: b.clone() for name, b in supernet.named_buffers()}
        logits = functional_call(supernet, {**dict(zip(names, w_values)), **buffers}, (images, mixing))
        return F.cross_entropy(logits, labels)

    def arch_grad(w_values: Sequence[Tensor], images: Tensor, labels: Tensor) -> list[Tensor]:
        loss = loss_at(w_values, images, labels, observed_mixing(supernet, None, weights_fn))
        return _zeros_for_unused(torch.autograd.grad(loss, arch, allow_unused=True), arch)

    def step(train_images: Tensor, train_labels: Tensor, valid_images: Tensor, valid_labels: Tensor) -> None:
        train_loss = loss_at(weights, train_images, train_labels, observed_mixing(supernet, None, weights_fn))
        train_grads = torch.autograd.grad(train_loss, weights, allow_unused=True)
        w_prime = [w.requires_grad_() for w in unrolled_weights(weights, train_grads, w_optimizer)]
        mixing = observed_mixing(supernet, observer, weights_fn)
        watching = observer is not None and observer.needs_gradients
        watched = list(mixing.values()) if watching and mixing is not None else []
        grads = torch.autograd.grad(loss_at(w_prime, valid_images, valid_labels, mixing), arch + w_prime + watched,
                                    allow_unused=True)
        direct = _zeros_for_unused(grads[:len(arch)], arch)
        valid_w_grads = _zeros_for_unused(grads[len(arch):len(arch) + len(w_prime)], w_prime)
        implicit = finite_difference_hvp(lambda w: arch_grad(w, train_images, train_labels), weights,
                                         valid_w_grads, hvp_epsilon)
        xi = w_optimizer.param_groups[0]["lr"]
        a_optimizer.zero_grad(set_to_none=True)
        for alpha, g_direct, g_implicit in zip(arch, direct, implicit):
            alpha.grad = g_direct - xi * g_implicit
        a_optimizer.step()
        report_step(observer, "valid", mixing, grads[len(arch) + len(w_prime):] if watched else None)

    return step


def _zeros_for_unused(grads: Sequence[Tensor | None], inputs: Sequence[Tensor]) -> list[Tensor]:
    """Gradients with ``None`` (an input the loss does not use, e.g. α of an absent cell type) as zeros."""
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def arch_step_for(mode: str, supernet: nn.Module, *, w_optimizer: torch.optim.Optimizer,
                  a_optimizer: torch.optim.Optimizer | None, weights_fn: WeightsFn | None = None,
                  hvp_epsilon: float = 0.01, observer: StepObserver | None = None,
                  precision: str = DEFAULT_PRECISION) -> ArchStep | None:
    """The α update of a bi-level ``mode`` (``None`` for the others, which update α with θ or not at all).

    ``observer`` watches the α steps (split ``valid``).  ``precision`` applies to the first-order
    step; the second-order step computes in fp32 (module docstring).
    """
    if mode not in ("bilevel-1st", "bilevel-2nd"):
        return None
    if a_optimizer is None:
        raise SelbenchError(f"search mode {mode!r} updates α and needs an α optimiser")
    if mode == "bilevel-1st":
        return first_order_arch_step(supernet, a_optimizer, weights_fn, observer, precision)
    return second_order_arch_step(supernet, a_optimizer, w_optimizer, weights_fn, hvp_epsilon, observer)


def search_epoch(supernet: nn.Module, train: Iterable[Batch], valid: Callable[[], Iterable[Batch]] | None, *,
                 w_optimizer: torch.optim.Optimizer, mode: str, a_optimizer: torch.optim.Optimizer | None = None,
                 arch_step: ArchStep | None = None, weights_fn: WeightsFn | None = None, grad_clip: float = 5.0,
                 on_step: Callable[[], None] | None = None, observer: StepObserver | None = None,
                 sampler: ArchSampler | None = None, arch_grad_clip: float = SAMPLING_DEFAULTS["arch_grad_clip"],
                 precision: str = DEFAULT_PRECISION, graphs: bool = False) -> dict[str, Tensor]:
    """One pass over ``train``; returns device tensors ``loss`` and ``accuracy`` (means over the epoch).

    Bi-level modes pair each training batch with the next validation batch; ``valid()``
    starts a fresh pass over the validation split, called again whenever it runs out.
    ``on_step`` runs after every θ update.
    ``observer`` watches the θ steps (split ``train``); the α steps are watched by the
    observer ``arch_step`` was built with (:func:`arch_step_for`), or by this one when the
    step is built here.
    Stochastic modes draw each step's Z with ``sampler`` (default: the mode's reference
    settings) and clip α's gradient norm to ``arch_grad_clip`` (0 = off).
    ``graphs``: replay each full batch's step (α step included) from a CUDA graph
    (:mod:`selbench.train.graphs`) in the modes single-level, bilevel-1st and frozen-alpha
    without an observer or custom mixing weights; elsewhere, and off CUDA, the steps run eagerly.
    ``precision``: the forward passes' (module docstring), also of an α step built here.
    """
    _no_custom_weights(observer, weights_fn)
    if mode not in SEARCH_MODES:
        raise SelbenchError(f"unknown search mode {mode!r}; choose one of {', '.join(SEARCH_MODES)}")
    bilevel = mode.startswith("bilevel")
    if bilevel and valid is None:
        raise SelbenchError(f"search mode {mode!r} needs a validation split")
    if mode not in UNUSED_ALPHA_MODES and a_optimizer is None and (arch_step is None or not bilevel):
        raise SelbenchError(f"search mode {mode!r} updates α and needs an α optimiser")
    if mode in STOCHASTIC_MODES:
        if weights_fn is not None:
            raise ValueError(f"search mode {mode!r} samples its own mixing weights; it takes no weights_fn")
        sampler = sampler if sampler is not None else ArchSampler(mode)
        if sampler.mode != mode:
            raise ValueError(f"a {sampler.mode!r} sampler cannot drive search mode {mode!r}")
    else:
        sampler = None
    if bilevel and arch_step is None:
        arch_step = arch_step_for(mode, supernet, w_optimizer=w_optimizer, a_optimizer=a_optimizer,
                                  weights_fn=weights_fn, observer=observer, precision=precision)
    supernet.train()
    weights = list(cast(Supernet, supernet).weight_parameters())
    valid_batches = _cycle(valid) if bilevel and valid is not None else None
    single_level_optimizer = a_optimizer if mode in ("single-level", "snas", "dsnas") else None
    keep_zero_grads = sampler is not None and sampler.hard
    if keep_zero_grads:
        # as in the reference, every θ holds a (zero) gradient, so the ops a step did not sample still
        # take SGD's momentum and weight-decay update
        for w in weights:
            if w.grad is None:
                w.grad = torch.zeros_like(w)

    def step(images: Tensor, labels: Tensor, *valid_batch: Tensor) -> tuple[Tensor, Tensor]:
        if arch_step is not None and valid_batch:  # the bi-level modes
            arch_step(images, labels, *valid_batch)
        w_optimizer.zero_grad(set_to_none=not keep_zero_grads)
        if single_level_optimizer is not None:
            single_level_optimizer.zero_grad(set_to_none=True)
        with autocast(precision, images.device):
            if sampler is None:
                mixing = observed_mixing(supernet, observer, weights_fn)
                logits = supernet(images, mixing)
            else:
                mixing, logits = _sampled_forward(supernet, sampler, images, observer)
        loss = F.cross_entropy(for_loss(logits), labels)
        loss.backward()
        report_step(observer, "train", mixing)
        nn.utils.clip_grad_norm_(weights, grad_clip)
        if sampler is not None and single_level_optimizer is not None and arch_grad_clip > 0:
            nn.utils.clip_grad_norm_(list(cast(Supernet, supernet).arch_parameters()), arch_grad_clip)
        w_optimizer.step()
        if single_level_optimizer is not None:
            single_level_optimizer.step()
        return loss.detach(), logits.detach()

    optimizers = [w_optimizer, *([a_optimizer] if a_optimizer is not None else [])]
    run = GraphedStep(step, optimizers=optimizers, enabled=graphs, where="search.graphs",
                      eager_reason=_eager_reason(mode, observer, weights_fn))
    loss_sum = torch.zeros(())
    correct = torch.zeros(())
    seen = 0
    for images, labels in train:
        valid_batch = next(valid_batches) if valid_batches is not None and arch_step is not None else ()
        loss, logits = run(images, labels, *valid_batch)
        if on_step is not None:
            on_step()
        loss_sum = loss_sum.to(loss.device) + loss * len(labels)
        correct = correct.to(loss.device) + (logits.argmax(1) == labels).sum()
        seen += len(labels)
    if seen == 0:
        raise SelbenchError("the training split produced no batches")
    return {"loss": loss_sum / seen, "accuracy": correct / seen}


def _eager_reason(mode: str, observer: StepObserver | None, weights_fn: WeightsFn | None) -> str | None:
    """Why a search step cannot be captured in a CUDA graph (``None``: it can)."""
    if mode in ("bilevel-2nd", *STOCHASTIC_MODES):
        return f"search mode {mode} is not captured"
    if observer is not None:
        return "training observers watch the steps"
    if weights_fn is not None:
        return "the steps take custom mixing weights"
    return None


def _sampled_forward(supernet: nn.Module, sampler: ArchSampler, images: Tensor,
                     observer: StepObserver | None) -> tuple[dict[str, Tensor], Tensor]:
    """(this step's samples Z, the logits with Z as the mixing weights and, in hard modes, only the sampled ops)."""
    watching = observer is not None and observer.needs_gradients
    mixing, active = sampler.sample(cast(Supernet, supernet).alphas, track_z=watching)
    if watching:
        keep_gradients(mixing)
    logits = supernet(images, mixing) if active is None else supernet(images, mixing, active=active)
    return mixing, logits


def _cycle(start_pass: Callable[[], Iterable[Batch]]) -> Iterator[Batch]:
    while True:
        empty = True
        for batch in start_pass():
            empty = False
            yield batch
        if empty:
            raise SelbenchError("the validation split produced no batches")


@torch.no_grad()
def evaluate_supernet(supernet: nn.Module, batches: Iterable[Batch], weights_fn: WeightsFn | None = None, *,
                      batch_statistics: bool = False, precision: str = DEFAULT_PRECISION) -> dict[str, Tensor]:
    """Mean ``loss`` and ``accuracy`` (device tensors) over ``batches``, the forward passes in ``precision``.

    BatchNorm uses its running statistics (eval mode, as DARTS's ``infer``) unless
    ``batch_statistics`` (train mode, as DARTS-PT when it scores masked supernets).
    """
    was_training = supernet.training
    supernet.train(batch_statistics)
    loss_sum: Tensor | None = None
    correct: Tensor | None = None
    seen = 0
    for images, labels in batches:
        with autocast(precision, images.device):
            logits = supernet(images, weights_fn() if weights_fn is not None else None)
        batch_loss = F.cross_entropy(for_loss(logits), labels, reduction="sum")
        batch_correct = (logits.argmax(1) == labels).sum()
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        seen += len(labels)
    supernet.train(was_training)
    if seen == 0 or loss_sum is None or correct is None:
        raise SelbenchError("the evaluation split produced no batches")
    return {"loss": loss_sum / seen, "accuracy": correct / seen}
