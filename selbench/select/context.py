"""What a selector gets to work with: the supernet's data, the selection context and its helpers."""
from __future__ import annotations

import contextlib
import logging
import random
from collections import Counter
from typing import (
    Any,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Protocol,
    Sequence,
    cast,
    runtime_checkable,
)

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selbench.core.errors import SelbenchError
from selbench.core.precision import DEFAULT_PRECISION, check_precision
from selbench.core.space import SearchSpace, Supernet
from selbench.core.tensors import Batch
from selbench.data.augment import crop_and_flip
from selbench.select.candidates import NotVectorisable, evaluate_candidates
from selbench.train.loop import SEARCH_DEFAULTS, evaluate_supernet, search_epoch

BN_MODES = ("train", "eval")

log = logging.getLogger(__name__)


@runtime_checkable
class SupernetData(Protocol):
    """The supernet's data splits as the harness hands them to selectors.

    ``batches(split)`` starts a fresh pass over ``"train"`` or ``"valid"`` and yields
    ``(images, labels)`` batches already on the target device.
    """

    def batches(self, split: str) -> Iterable[Batch]: ...


@runtime_checkable
class AugmentingData(Protocol):
    """Supernet data that can also serve a split as training sees it (see :meth:`SelectionContext.batches`).

    ``augmented_batches(split, generator)`` starts a reshuffled, augmented pass over ``split``,
    drawing every random number from ``generator``, a generator on ``device``.
    """

    device: torch.device

    def augmented_batches(self, split: str, generator: torch.Generator) -> Iterable[Batch]: ...


class TensorData:
    """In-memory splits: ``TensorData(train=(x, y), valid=(x, y), batch_size=64)``; batches in order.

    Its augmented passes (:class:`AugmentingData`) reshuffle the split and, when asked with
    ``crop_padding`` / ``flip``, apply the same batched random crop and flip as the built-in
    datasets, here to the images as given (zero padding, after any normalisation).
    """

    def __init__(self, *, batch_size: int = 64, crop_padding: int = 0, flip: bool = False, **splits: Batch):
        self.splits = splits
        self.batch_size = batch_size
        self.crop_padding = crop_padding
        self.flip = flip

    @property
    def device(self) -> torch.device:
        """Where the images are (the first split's)."""
        return next(iter(self.splits.values()))[0].device if self.splits else torch.device("cpu")

    def batches(self, split: str) -> Iterator[Batch]:
        images, labels = self._split(split)
        for start in range(0, len(labels), self.batch_size):
            yield images[start : start + self.batch_size], labels[start : start + self.batch_size]

    def augmented_batches(self, split: str, generator: torch.Generator) -> Iterator[Batch]:
        images, labels = self._split(split)
        order = torch.randperm(len(labels), generator=generator, device=generator.device).to(labels.device)
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            batch = images[chosen]
            if self.crop_padding or self.flip:
                batch = crop_and_flip(batch.to(generator.device), padding=self.crop_padding, flip=self.flip,
                                      generator=generator).to(images.device)
            yield batch, labels[chosen]

    def _split(self, split: str) -> Batch:
        if split not in self.splits:
            raise SelbenchError(f"no {split!r} split in this data; it has {sorted(self.splits)}")
        return self.splits[split]


class SelectionContext:
    """Everything a selector may use: a private supernet copy, data, RNG, options, helpers."""

    def __init__(self, supernet: nn.Module, *, options: Mapping[str, Any], seed: int, device: torch.device,
                 data: SupernetData | None, selector: str, progress: Callable[[str, int, int], None] | None = None,
                 search: Mapping[str, Any] | None = None):
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
        self.finetuning = finetune_settings(search or {})
        self._w_optimizer: torch.optim.Optimizer | None = None
        self._a_optimizer: torch.optim.Optimizer | None = None
        self._augment_generator: torch.Generator | None = None
        self._vectorise = True  # until torch.func.vmap fails on this supernet (see evaluate_each)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (forward passes, HVPs, ...) kept in the selection's record."""
        self.counters[name] += n

    def progress(self, label: str, done: int, total: int) -> None:
        """Report progress of a long loop (shown by the CLI as a progress bar)."""
        if self._progress is not None:
            self._progress(label, done, total)

    def batches(self, split: str, limit: int | None = None, *, progress: str | None = None,
                augmented: bool = False) -> Iterator[Batch]:
        """Batches of ``split`` ("train" or "valid") on the device; at most ``limit`` of them.

        ``progress``: a label under which every batch handed out is reported to :meth:`progress`
        (the total is ``limit``, else the split's length when the data knows it, else 0 = unknown).
        ``augmented``: a reshuffled pass under the training augmentation (data that offers
        :class:`AugmentingData`), drawn from a generator seeded with the selection's seed, so
        each pass differs and the sequence of passes is the same for the same seed.
        """
        if self.data is None:
            raise SelbenchError(f"selector {self.selector!r} needs data, but none was given")
        total = limit or _split_length(self.data, split)
        passes = self._augmented_pass(split) if augmented else self.data.batches(split)
        for done, (images, labels) in enumerate(passes, start=1):
            if limit is not None and done > limit:
                return
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            if progress is not None:
                self.progress(progress, done, total)

    def _augmented_pass(self, split: str) -> Iterable[Batch]:
        if not isinstance(self.data, AugmentingData):
            raise SelbenchError(f"selector {self.selector!r} asks for augmented {split!r} batches, which this "
                                f"{type(self.data).__name__} cannot serve (it has no augmented_batches); use "
                                "selbench's datasets or TensorData, or the selector's option for fixed batches")
        if self._augment_generator is None:
            self._augment_generator = torch.Generator(device=self.data.device).manual_seed(self.seed)
        return self.data.augmented_batches(split, self._augment_generator)

    def mixing_weights(self) -> dict[str, Tensor]:
        """softmax(α) per cell type, detached."""
        alphas = cast(Supernet, self.supernet).alphas
        return {cell_type: F.softmax(alpha.detach(), dim=-1) for cell_type, alpha in alphas.items()}

    @torch.no_grad()
    def evaluate(self, weights: Mapping[str, Tensor] | None = None, *, split: str = "valid",
                 limit: int | None = None, bn: str = "train", augmented: bool = False,
                 precision: str = DEFAULT_PRECISION) -> tuple[float, float]:
        """Accuracy and mean loss of the supernet on ``split`` under ``weights``.

        ``augmented``: measured on a fresh augmented pass (see :meth:`batches`).
        ``precision``: the forward passes' (``fp32`` or ``bf16`` autocast, see :func:`selbench.autocast`).

        ``bn`` as in :func:`batchnorm_mode`: ``"train"`` normalises with batch statistics, as
        DARTS-PT does when it scores masked supernets; ``"eval"`` uses the running statistics.
        """
        def counted() -> Iterator[Batch]:
            for batch in self.batches(split, limit, augmented=augmented):
                self.count("forward_passes")
                yield batch

        with batchnorm_mode(self.supernet, bn):
            metrics = evaluate_supernet(self.supernet, counted(),
                                        _constant(weights) if weights is not None else None,
                                        batch_statistics=bn == "train", precision=precision)
        accuracy, loss = torch.stack([metrics["accuracy"].to(metrics["loss"].dtype), metrics["loss"]]).tolist()
        return accuracy, loss

    @torch.no_grad()
    def evaluate_each(self, candidates: Sequence[Mapping[str, Tensor]], *, split: str = "valid",
                      limit: int | None = None, bn: str = "train",
                      augmented: bool = False, precision: str = DEFAULT_PRECISION) -> list[tuple[float, float]]:
        """:meth:`evaluate` for each of several mixing weights, measured together in one vectorised pass.

        The result equals ``[self.evaluate(w, ...) for w in candidates]`` up to float rounding:
        with ``augmented``, candidate k gets the k-th of K fresh passes, drawn in that order
        from the same generator (so the random stream afterwards is the same too); otherwise
        all share the one fixed pass.  BatchNorm statistics are per candidate (see
        :mod:`selbench.select.candidates`).  A supernet that ``torch.func.vmap`` cannot run is
        measured one candidate at a time on the same batches instead (one warning per
        context).  Memory: the K passes' batches at once, and K× a forward pass.
        ``precision``: the forward passes', as in :meth:`evaluate`; vmap's batched kernels
        ignore autocast, so bf16 candidates are measured one at a time on the same batches.
        """
        if not candidates:
            return []
        if augmented:
            passes = [list(self.batches(split, limit, augmented=True)) for _ in candidates]
        else:
            passes = [list(self.batches(split, limit))] * len(candidates)
        self.count("forward_passes", len(candidates) * len(passes[0]))
        check_precision(precision, self.device)
        vectorised = self._vectorise and precision == "fp32"
        with batchnorm_mode(self.supernet, bn):
            if vectorised:
                try:
                    accuracy, loss = evaluate_candidates(self.supernet, candidates, passes, shared=not augmented)
                except NotVectorisable as exc:
                    log.warning("%s cannot be vectorised over mixing weights by torch.func.vmap (%s); measuring "
                                "one candidate at a time", type(self.supernet).__name__, exc)
                    self._vectorise = vectorised = False
            if not vectorised:
                metrics = [evaluate_supernet(self.supernet, batches, _constant(weights),
                                             batch_statistics=bn == "train", precision=precision)
                           for weights, batches in zip(candidates, passes)]
                accuracy, loss = (torch.stack([m[key] for m in metrics]) for key in ("accuracy", "loss"))
        return [(acc, mean_loss) for acc, mean_loss in torch.stack([accuracy.to(loss.dtype), loss], dim=1).tolist()]

    def finetune(self, epochs: int, *, weights: Callable[[], Mapping[str, Tensor]] | None = None,
                 train_alphas: bool = True, augmented_valid: bool = False, precision: str = DEFAULT_PRECISION,
                 **settings: float) -> None:
        """Keep training the private supernet for ``epochs`` passes over the train split.

        θ: SGD with a constant lr (DARTS-PT's fine-tuning); α, when ``train_alphas``, takes
        DARTS's first-order step (Adam) on validation batches.  The hyper-parameters are
        :attr:`finetuning` (from the recipe's ``[search]``: θ lr = search lr / 10, the rest as
        searched), each overridable here by name (``lr``, ``momentum``, ``weight_decay``,
        ``grad_clip``, ``arch_lr``, ``arch_beta1``, ``arch_beta2``, ``arch_weight_decay``).
        As in DARTS-PT, both optimisers are created once per selection and keep their state
        (momentum, Adam moments) from one call to the next; the α optimiser starts from the
        checkpoint's ``arch_optimizer`` state when the supernet carries one.  ``weights()``
        supplies the mixing weights for each step (e.g. some edges fixed one-hot), computed
        from the current α; default softmax(α).  ``augmented_valid``: α steps take their batches
        from augmented validation passes (see :meth:`batches`), as DARTS-PT's α steps do.
        ``precision``: the forward passes' (θ and α stay fp32; see :func:`selbench.autocast`).
        """
        unknown = sorted(set(settings) - set(self.finetuning))
        if unknown:
            raise SelbenchError(f"finetune() has no setting {unknown[0]!r}; settings: {', '.join(self.finetuning)}")
        if epochs <= 0:
            return
        hyper = {**self.finetuning, **settings}
        w_optimizer = self._theta_optimizer(hyper)
        a_optimizer = self._alpha_optimizer(hyper) if train_alphas else None
        for epoch in range(epochs):
            search_epoch(self.supernet, self.batches("train"), lambda: self.batches("valid", augmented=augmented_valid),
                         w_optimizer=w_optimizer, a_optimizer=a_optimizer,
                         mode="bilevel-1st" if train_alphas else "frozen-alpha", weights_fn=weights,
                         grad_clip=hyper["grad_clip"], on_step=lambda: self.count("finetune_steps"),
                         precision=precision)
            self.progress("fine-tune", epoch + 1, epochs)

    def _theta_optimizer(self, hyper: Mapping[str, float]) -> torch.optim.Optimizer:
        """The selection's one SGD for θ, with ``hyper``'s lr, momentum and weight decay."""
        if self._w_optimizer is None:
            self._w_optimizer = torch.optim.SGD(cast(Supernet, self.supernet).weight_parameters(), lr=hyper["lr"])
        for group in self._w_optimizer.param_groups:
            group.update(lr=hyper["lr"], momentum=hyper["momentum"], weight_decay=hyper["weight_decay"])
        return self._w_optimizer

    def _alpha_optimizer(self, hyper: Mapping[str, float]) -> torch.optim.Optimizer:
        """The selection's one Adam for α, continued from the checkpoint's ``arch_optimizer`` state if any."""
        if self._a_optimizer is None:
            self._a_optimizer = torch.optim.Adam(cast(Supernet, self.supernet).arch_parameters(), lr=hyper["arch_lr"])
            state = getattr(self.supernet, "arch_optimizer_state", None)
            if state is not None:
                try:
                    self._a_optimizer.load_state_dict(state)
                except (ValueError, KeyError) as exc:
                    raise SelbenchError(f"the checkpoint's arch_optimizer state does not fit this supernet's α "
                                        f"({exc}); remove it from the checkpoint to start a fresh Adam") from None
        for group in self._a_optimizer.param_groups:
            group.update(lr=hyper["arch_lr"], betas=(hyper["arch_beta1"], hyper["arch_beta2"]),
                         weight_decay=hyper["arch_weight_decay"])
        return self._a_optimizer


def finetune_settings(search: Mapping[str, Any]) -> dict[str, float]:
    """Fine-tuning hyper-parameters from a recipe's ``[search]`` section (missing keys: DARTS's).

    As DARTS-PT: θ's SGD runs at a constant tenth of the search lr (0.0025 for DARTS) with
    the search's momentum, weight decay and gradient clip; α's Adam keeps the search's settings.
    """
    merged = {**SEARCH_DEFAULTS, **search}
    return {"lr": merged["lr"] / 10, **{key: float(merged[key]) for key in (
        "momentum", "weight_decay", "grad_clip", "arch_lr", "arch_beta1", "arch_beta2", "arch_weight_decay")}}


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


def _constant(weights: Mapping[str, Tensor]) -> Callable[[], Mapping[str, Tensor]]:
    """A ``weights_fn`` that always gives ``weights``."""
    return lambda: weights


def _split_length(data: Any, split: str) -> int:
    """Batches in one pass over ``split`` when ``data`` can tell (``num_batches(split)``), else 0."""
    num_batches = getattr(data, "num_batches", None)
    return int(num_batches(split)) if callable(num_batches) else 0
