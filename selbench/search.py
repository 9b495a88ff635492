"""The supernet training loop shared by `selbench train` and selectors that fine-tune (DARTS-PT).

One epoch walks the train split for θ; depending on the mode, α is updated too:

* ``single-level``: α and θ descend the same training-batch loss together;
* ``bilevel-1st``: α takes a step on a validation batch, then θ on a training batch (DARTS
  first order);
* ``frozen-alpha``: α never changes.

``bilevel-2nd`` (DARTS's unrolled step) plugs in through ``arch_step``.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import SelbenchError

SEARCH_MODES = ("single-level", "bilevel-1st", "bilevel-2nd", "frozen-alpha")

WeightsFn = Callable[[], Mapping[str, Tensor]]
ArchStep = Callable[[Tensor, Tensor, Tensor, Tensor], None]
Batch = tuple[Tensor, Tensor]


def supernet_loss(supernet: nn.Module, images: Tensor, labels: Tensor, weights_fn: WeightsFn | None = None) -> Tensor:
    """Cross-entropy of the supernet, with mixing weights from ``weights_fn`` (default softmax(α))."""
    return F.cross_entropy(supernet(images, weights_fn() if weights_fn is not None else None), labels)


def first_order_arch_step(supernet: nn.Module, a_optimizer: torch.optim.Optimizer,
                          weights_fn: WeightsFn | None = None) -> ArchStep:
    """DARTS first order: ∇_α L_val(w, α) at the current w."""

    def step(train_images: Tensor, train_labels: Tensor, valid_images: Tensor, valid_labels: Tensor) -> None:
        a_optimizer.zero_grad(set_to_none=True)
        supernet_loss(supernet, valid_images, valid_labels, weights_fn).backward()
        a_optimizer.step()

    return step


def search_epoch(supernet: nn.Module, train: Iterable[Batch], valid: Callable[[], Iterable[Batch]] | None, *,
                 w_optimizer: torch.optim.Optimizer, mode: str, a_optimizer: torch.optim.Optimizer | None = None,
                 arch_step: ArchStep | None = None, weights_fn: WeightsFn | None = None, grad_clip: float = 5.0,
                 on_step: Callable[[], None] | None = None) -> dict[str, Tensor]:
    """One pass over ``train``; returns device tensors ``loss`` and ``accuracy`` (means over the epoch).

    Bi-level modes pair each training batch with the next validation batch; ``valid()``
    starts a fresh pass over the validation split, called again whenever it runs out.  ``on_step`` runs after every θ update.
    """
    if mode not in SEARCH_MODES:
        raise SelbenchError(f"unknown search mode {mode!r}; choose one of {', '.join(SEARCH_MODES)}")
    bilevel = mode.startswith("bilevel")
    if bilevel and valid is None:
        raise SelbenchError(f"search mode {mode!r} needs a validation split")
    if mode != "frozen-alpha" and a_optimizer is None and arch_step is None:
        raise SelbenchError(f"search mode {mode!r} updates α and needs an α optimiser")
    if bilevel and arch_step is None:
        arch_step = first_order_arch_step(supernet, a_optimizer, weights_fn)
    supernet.train()
    weights = list(supernet.weight_parameters())
    valid_batches = _cycle(valid) if bilevel else None
    loss_sum = torch.zeros(())
    correct = torch.zeros(())
    seen = 0
    for images, labels in train:
        if bilevel:
            valid_images, valid_labels = next(valid_batches)
            arch_step(images, labels, valid_images, valid_labels)
        w_optimizer.zero_grad(set_to_none=True)
        if mode == "single-level":
            a_optimizer.zero_grad(set_to_none=True)
        logits = supernet(images, weights_fn() if weights_fn is not None else None)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        nn.utils.clip_grad_norm_(weights, grad_clip)
        w_optimizer.step()
        if mode == "single-level":
            a_optimizer.step()
        if on_step is not None:
            on_step()
        loss_sum = loss_sum.to(loss.device) + loss.detach() * len(labels)
        correct = correct.to(loss.device) + (logits.detach().argmax(1) == labels).sum()
        seen += len(labels)
    if seen == 0:
        raise SelbenchError("the training split produced no batches")
    return {"loss": loss_sum / seen, "accuracy": correct / seen}


def _cycle(start_pass: Callable[[], Iterable[Batch]]):
    while True:
        empty = True
        for batch in start_pass():
            empty = False
            yield batch
        if empty:
            raise SelbenchError("the validation split produced no batches")
