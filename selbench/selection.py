"""Selectors, their context and their result: the contract between the harness and selection plugins."""
from __future__ import annotations

import copy
import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import SelbenchError
from .genotype import Genotype
from .options import Option, resolve_options
from .registry import plugin_host
from .search import evaluate_supernet, search_epoch
from .space import SearchSpace

Batch = tuple[Tensor, Tensor]


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


@dataclass(frozen=True)
class Selection:
    """What a selector returns; the harness fills in who ran, with which options, and how long.

    ``genotype`` is ``None`` for a *failed* selection (``failure`` says why); ``scores`` maps
    cell types to ``Tensor[E, O]`` per-op scores (larger = more important) for diagnostics.
    ``variable_in_degree`` says whether the cells may have any number of inputs per node
    (validated and retrained that way); ``None`` means "as the selector is registered", and
    :func:`select` fills in the resolved value.
    """

    genotype: Genotype | None
    scores: Mapping[str, Tensor] | None = field(default=None, repr=False)
    counters: Mapping[str, int] = field(default_factory=dict)
    failure: str | None = None
    seconds: float = 0.0
    selector: str = ""
    distribution: str | None = None
    version: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = ""
    variable_in_degree: bool | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["genotype"] = None if self.genotype is None else self.genotype.to_dict()
        out["genotype_text"] = None if self.genotype is None else str(self.genotype)
        out["scores"] = None if self.scores is None else {k: v.detach().cpu().tolist() for k, v in self.scores.items()}
        out["counters"] = dict(self.counters)
        out["options"] = dict(self.options)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Selection":
        fields = dict(data)
        fields.pop("genotype_text", None)
        fields["genotype"] = None if fields.get("genotype") is None else Genotype.from_json(fields["genotype"])
        if fields.get("scores") is not None:
            fields["scores"] = {k: torch.tensor(v) for k, v in fields["scores"].items()}
        return cls(**fields)


@dataclass(frozen=True)
class Selector:
    """A registered selection method.

    ``run(ctx)`` returns a :class:`Selection` (or just a :class:`Genotype`).  ``options``
    declares every option with its default; ``needs_data`` makes the harness refuse to run
    without data; ``variable_in_degree`` lets its cells have any number of inputs per node
    (a selector with several derivations says per result, in ``Selection.variable_in_degree``).
    """

    name: str
    run: Callable[["SelectionContext"], "Selection | Genotype"]
    options: Mapping[str, Option] = field(default_factory=dict)
    needs_data: bool = False
    description: str = ""
    variable_in_degree: bool = False


class SelectionContext:
    """Everything a selector may use: a private supernet copy, data, RNG, options, helpers."""

    def __init__(self, supernet: nn.Module, *, options: Mapping[str, Any], seed: int, device: torch.device,
                 data: SupernetData | None, selector: str, progress: Callable[[str, int, int], None] | None = None):
        self.supernet = supernet
        self.space: SearchSpace = supernet.space
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
        self.counters[name] += n

    def progress(self, label: str, done: int, total: int) -> None:
        """Report progress of a long loop (shown by the CLI as a progress bar)."""
        if self._progress is not None:
            self._progress(label, done, total)

    def batches(self, split: str, limit: int | None = None) -> Iterator[Batch]:
        """Batches of ``split`` ("train" or "valid") on the device; at most ``limit`` of them."""
        if self.data is None:
            raise SelbenchError(f"selector {self.selector!r} needs data, but none was given")
        for i, (images, labels) in enumerate(self.data.batches(split)):
            if limit is not None and i >= limit:
                return
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def mixing_weights(self) -> dict[str, Tensor]:
        """softmax(α) per cell type, detached."""
        return {cell_type: F.softmax(alpha.detach(), dim=-1) for cell_type, alpha in self.supernet.alphas.items()}

    @torch.no_grad()
    def evaluate(self, weights: Mapping[str, Tensor] | None = None, *, split: str = "valid",
                 limit: int | None = None, bn: str = "train") -> tuple[float, float]:
        """Accuracy and mean loss of the supernet on ``split`` under ``weights``.

        ``bn="train"`` normalises with batch statistics, as DARTS-PT does when it scores
        masked supernets; ``bn="eval"`` uses the running statistics.
        """
        def counted() -> Iterator[Batch]:
            for batch in self.batches(split, limit):
                self.count("forward_passes")
                yield batch

        metrics = evaluate_supernet(self.supernet, counted(), (lambda: weights) if weights is not None else None,
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
        w_optimizer = torch.optim.SGD(self.supernet.weight_parameters(), lr=lr, momentum=momentum,
                                      weight_decay=weight_decay)
        a_optimizer = torch.optim.Adam(self.supernet.arch_parameters(), lr=arch_lr, betas=(0.5, 0.999),
                                       weight_decay=arch_weight_decay) if train_alphas else None
        for epoch in range(epochs):
            search_epoch(self.supernet, self.batches("train"), lambda: self.batches("valid"),
                         w_optimizer=w_optimizer, a_optimizer=a_optimizer,
                         mode="bilevel-1st" if train_alphas else "frozen-alpha", weights_fn=weights,
                         grad_clip=grad_clip, on_step=lambda: self.count("finetune_steps"))
            self.progress("fine-tune", epoch + 1, epochs)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def get_selector(name: str) -> Selector:
    return plugin_host().get("selector", name).obj


def list_selectors() -> list[str]:
    return sorted(plugin_host().registrations("selector"))


def select(supernet: nn.Module, selector: str | Selector, *, data: SupernetData | None = None, seed: int = 0,
           device: str | torch.device | None = None, progress: Callable[[str, int, int], None] | None = None,
           **options: Any) -> Selection:
    """Run one selector on (a private copy of) ``supernet`` and return its :class:`Selection`."""
    if isinstance(selector, str):
        registration = plugin_host().get("selector", selector)
        chosen, dist, version = registration.obj, registration.distribution, registration.version
    else:
        chosen, dist, version = selector, None, None
    resolved = resolve_options(chosen.options, options, f"selector {chosen.name!r}")
    if chosen.needs_data and data is None:
        raise SelbenchError(
            f"selector {chosen.name!r} needs the supernet's train/valid data; pass data=... "
            "(on the command line: --recipe or a checkpoint written by `selbench train`)")
    target = torch.device(device) if device is not None else next(supernet.parameters()).device
    private = copy.deepcopy(supernet).to(target)
    torch.manual_seed(seed)
    random.seed(seed)
    ctx = SelectionContext(private, options=resolved, seed=seed, device=target, data=data,
                           selector=chosen.name, progress=progress)
    _synchronize(target)
    start = time.perf_counter()
    result = chosen.run(ctx)
    _synchronize(target)
    seconds = time.perf_counter() - start
    if isinstance(result, Genotype):
        result = Selection(genotype=result)
    variable_in_degree = chosen.variable_in_degree if result.variable_in_degree is None else result.variable_in_degree
    if variable_in_degree and not chosen.variable_in_degree:
        raise SelbenchError(f"selector {chosen.name!r} returned a variable in-degree selection "
                            "but is not registered with variable_in_degree=True")
    if result.genotype is not None:
        result.genotype.validate(ctx.space, variable_in_degree=variable_in_degree)
    elif not result.failure:
        raise SelbenchError(f"selector {chosen.name!r} returned no genotype and no failure reason")
    selection = replace(
        result, seconds=seconds, selector=chosen.name, distribution=dist, version=version, options=resolved,
        seed=seed, device=str(target), counters={**ctx.counters, **result.counters},
        variable_in_degree=variable_in_degree)
    plugin_host().hook.selbench_selection_finished(selection=selection)
    return selection
