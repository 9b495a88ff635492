"""What a selector gets to work with: the supernet's data, the selection context and its helpers."""
from __future__ import annotations

import contextlib
import random
from collections import Counter
from typing import (
    Any,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Protocol,
    cast,
    runtime_checkable,
)

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selbench.core.errors import SelbenchError
from selbench.core.space import SearchSpace, Supernet
from selbench.core.tensors import Batch
from selbench.train.loop import evaluate_supernet, search_epoch

BN_MODES = ("train", "eval")


@runtime_checkable
class SupernetData(Protocol):
    """The supernet's data splits as the harness hands them to selectors.

    ``batches(split)`` starts a fresh pass over ``"train"`` or ``"valid"`` and yields
    ``(images, labels)`` batches already on the target device.
    """

    def batches(self, split: str) -> Iterable[Batch]: ...


class TensorData:
    """In-memory splits: ``TensorData(train=(x, y), valid=(x, y), batch_size=64)``; batches in order."""

    def __init__(self, *, batch_size: int = 64, **splits: tuple[Tensor, Tensor]):
        self.splits = splits
        self.batch_size = batch_size

    def batches(self, split: str) -> Iterator[Batch]:
        if split not in self.splits:
            raise SelbenchError(f"no {split!r} split in this data; it has {sorted(self.splits)}")
        images, labels = self.splits[split]
        for start in range(0, len(labels), self.batch_size):
            yield images[start : start + self.batch_size], labels[start : start + self.batch_size]


class SelectionContext:
    """Everything a selector may use: a private supernet copy, data, RNG, options, helpers."""

    def __init__(self, supernet: nn.Module, *, options: Mapping[str, Any], seed: int, device: torch.device,
                 data: SupernetData | None, selector: str, progress: Callable[[str, int, int], None] | None = None):
        self.supernet = supernet
        self.space: SearchSpace = cast(Supernet, supernet).space
        self.options = dict(options)
        self.seed = seed
        self.device = device
        self.data = data
        self.selector = selector
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = random.Random(seed)
        self.counters: Counter[str] = Counter()
        self._progress = progress

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (forward passes, HVPs, ...) kept in the selection's record."""
        self.counters[name] += n

    def progress(self, label: str, done: int, total: int) -> None:
        """Report progress of a long loop (shown by the CLI as a progress bar)."""
        if self._progress is not None:
            self._progress(label, done, total)

    def batches(self, split: str, limit: int | None = None, *, progress: str | None = None) -> Iterator[Batch]:
        """Batches of ``split`` ("train" or "valid") on the device; at most ``limit`` of them.

        ``progress``: a label under which every batch handed out is reported to :meth:`progress`
        (the total is ``limit``, else the split's length when the data knows it, else 0 = unknown).
        """
        if self.data is None:
            raise SelbenchError(f"selector {self.selector!r} needs data, but none was given")
        total = limit or _split_length(self.data, split)
        for done, (images, labels) in enumerate(self.data.batches(split), start=1):
            if limit is not None and done > limit:
                return
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            if progress is not None:
                self.progress(progress, done, total)

    def mixing_weights(self) -> dict[str, Tensor]:
        """softmax(α) per cell type, detached."""
        alphas = cast(Supernet, self.supernet).alphas
        return {cell_type: F.softmax(alpha.detach(), dim=-1) for cell_type, alpha in alphas.items()}

    @torch.no_grad()
    def evaluate(self, weights: Mapping[str, Tensor] | None = None, *, split: str = "valid",
                 limit: int | None = None, bn: str = "train") -> tuple[float, float]:
        """Accuracy and mean loss of the supernet on ``split`` under ``weights``.

        ``bn`` as in :func:`batchnorm_mode`: ``"train"`` normalises with batch statistics, as
        DARTS-PT does when it scores masked supernets; ``"eval"`` uses the running statistics.
        """
        def counted() -> Iterator[Batch]:
            for batch in self.batches(split, limit):
                self.count("forward_passes")
                yield batch

        with batchnorm_mode(self.supernet, bn):
            metrics = evaluate_supernet(self.supernet, counted(),
                                        (lambda: weights) if weights is not None else None,
                                        batch_statistics=bn == "train")
        accuracy, loss = torch.stack([metrics["accuracy"].to(metrics["loss"].dtype), metrics["loss"]]).tolist()
        return accuracy, loss

    def finetune(self, epochs: int, *, weights: Callable[[], Mapping[str, Tensor]] | None = None,
                 train_alphas: bool = True, lr: float = 0.0025, momentum: float = 0.9, weight_decay: float = 3e-4,
                 arch_lr: float = 3e-4, arch_weight_decay: float = 1e-3, grad_clip: float = 5.0) -> None:
        """Keep training the private supernet for ``epochs`` passes over the train split.

        θ: SGD with a constant ``lr`` (DARTS-PT's fine-tuning); α, when ``train_alphas``,
        takes DARTS's first-order step (Adam, betas 0.5/0.999) on validation batches.
        ``weights()`` supplies the mixing weights for each step (e.g. some edges fixed
        one-hot), computed from the current α; default softmax(α).
        """
        if epochs <= 0:
            return
        net = cast(Supernet, self.supernet)
        w_optimizer = torch.optim.SGD(net.weight_parameters(), lr=lr, momentum=momentum,
                                      weight_decay=weight_decay)
        a_optimizer = torch.optim.Adam(net.arch_parameters(), lr=arch_lr, betas=(0.5, 0.999),
                                       weight_decay=arch_weight_decay) if train_alphas else None
        for epoch in range(epochs):
            search_epoch(self.supernet, self.batches("train"), lambda: self.batches("valid"),
                         w_optimizer=w_optimizer, a_optimizer=a_optimizer,
                         mode="bilevel-1st" if train_alphas else "frozen-alpha", weights_fn=weights,
                         grad_clip=grad_clip, on_step=lambda: self.count("finetune_steps"))
            self.progress("fine-tune", epoch + 1, epochs)


@contextlib.contextmanager
def batchnorm_mode(module: nn.Module, bn: str) -> Iterator[None]:
    """Inside the block, BatchNorm layers normalise as ``bn`` says and never change their running statistics.

    ``"train"``: with the statistics of each batch (as DARTS-PT measures masked supernets);
    ``"eval"``: with the stored running statistics.  Either way the running statistics and
    ``num_batches_tracked`` are left as they were (a measurement must not alter the supernet,
    and ``torch.func`` transforms cannot batch those in-place updates); the module's
    train/eval mode is restored on exit.
    """
    if bn not in BN_MODES:
        raise SelbenchError(f"BatchNorm mode {bn!r} is not one of {', '.join(BN_MODES)}")
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracking = [m.track_running_stats for m in norms]
    was_training = module.training
    module.train(bn == "train")
    if bn == "train":
        for m in norms:
            m.track_running_stats = False
    try:
        yield
    finally:
        for m, track in zip(norms, tracking):
            m.track_running_stats = track
        module.train(was_training)


def _split_length(data: Any, split: str) -> int:
    """Batches in one pass over ``split`` when ``data`` can tell (``num_batches(split)``), else 0."""
    num_batches = getattr(data, "num_batches", None)
    return int(num_batches(split)) if callable(num_batches) else 0
