"""Training observers: plugins that watch every step of supernet training and add per-epoch data to the record.

A plugin registers a :class:`TrainingObserver` through the ``selbench_register_training_observers``
hook.  At the start of every epoch `selbench train` asks each observer for a fresh
:class:`EpochObserver`, hands it every step's mixing weights softmax(α) (and, when the
observer asks for them, their gradients ∂L/∂m), and stores what it returns at the end of the
epoch under ``epochs[i]["observers"][name]`` in ``supernet.json``.

Observers only read: a run with observers computes the very same supernet, bit for bit, as
a run without.  Steps are handed over as device tensors; an observer accumulates them on
the device and returns tensors, which the harness brings to the host once per epoch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from torch import Tensor

from selbench.core.space import SearchSpace
from selbench.train.trajectory import ObservedQuantity


class EpochObserver(Protocol):
    """What one observer collects during one epoch."""

    def step(self, split: str, weights: Mapping[str, Tensor], grads: Mapping[str, Tensor] | None) -> None:
        """One step: ``split`` is ``train`` (θ's step) or ``valid`` (a bi-level α step); ``weights`` the
        detached mixing weights and ``grads`` ∂L/∂m of the step's batch-mean loss, cell type -> ``Tensor[E, O]``
        on the training device (``grads`` is ``None`` unless the observer asked for gradients).
        Cells of one type share their weights, so ``grads`` sums over those cells."""

    def result(self) -> Mapping[str, Any]:
        """The epoch's data: nested dicts / lists whose leaves are JSON values or tensors (sent to the host
        together with the epoch's other numbers and stored as nested lists)."""


@dataclass(frozen=True)
class TrainingObserver:
    """A per-step watcher of supernet training, registered by a plugin.

    ``new_epoch(space)`` returns a fresh :class:`EpochObserver` for each epoch (so a resumed
    run needs no observer state).  ``needs_gradients``: whether steps must carry ∂L/∂m; only
    then does the loop keep those gradients.  ``quantities``: what `selbench analyze` can
    summarise and plot from the stored results (see :class:`selbench.ObservedQuantity`).
    """

    name: str
    new_epoch: Callable[[SearchSpace], EpochObserver]
    needs_gradients: bool = False
    description: str = ""
    quantities: Sequence[ObservedQuantity] = ()


class ObserverSet:
    """Several observers behind one :class:`selbench.search.StepObserver`, restarted every epoch."""

    def __init__(self, observers: Iterable[TrainingObserver], space: SearchSpace):
        self.observers: Sequence[TrainingObserver] = tuple(observers)
        names = [observer.name for observer in self.observers]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"training observers with the same name: {', '.join(duplicates)}")
        self.space = space
        self.needs_gradients = any(observer.needs_gradients for observer in self.observers)
        self._epoch: dict[str, EpochObserver] = {}

    def start_epoch(self) -> None:
        self._epoch = {observer.name: observer.new_epoch(self.space) for observer in self.observers}

    def step(self, split: str, weights: Mapping[str, Tensor], grads: Mapping[str, Tensor] | None) -> None:
        for observer in self.observers:
            self._epoch[observer.name].step(split, weights, grads if observer.needs_gradients else None)

    def end_epoch(self) -> dict[str, Mapping[str, Any]]:
        """Each observer's result for the epoch that just ended, by name (tensors still on the device)."""
        results = {name: epoch.result() for name, epoch in self._epoch.items()}
        self._epoch = {}
        return results
