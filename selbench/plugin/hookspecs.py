"""The hooks a selbench plugin may implement (pluggy project name ``selbench``).

A plugin is any module or object with functions marked ``@selbench.hookimpl`` whose names
match the specs below, registered under the ``selbench`` entry-point group of its
distribution.  Registration hooks receive a ``register`` callback: call it once per thing
the plugin provides; each callback takes exactly one kind of object and refuses others.
Observer hooks are called by the harness; their return value is ignored.
"""
from __future__ import annotations

from typing import Callable

import pluggy

from selbench.core.space import SearchSpace
from selbench.data.dataset import Dataset
from selbench.retrain.scorer import Scorer
from selbench.retrain.table_source import TableSource
from selbench.select.contract import SelectionRun, Selector
from selbench.train.observers import TrainingObserver

hookspec = pluggy.HookspecMarker("selbench")

RegisterSelector = Callable[[Selector], None]
RegisterSpace = Callable[[SearchSpace], None]
RegisterDataset = Callable[[Dataset], None]
RegisterScorer = Callable[[Scorer], None]
RegisterTableSource = Callable[[TableSource], None]
RegisterTrainingObserver = Callable[[TrainingObserver], None]


@hookspec
def selbench_register_selectors(register: RegisterSelector) -> None:
    """Register architecture-selection methods.

    Call ``register(selbench.Selector(name=..., run=..., options=..., needs_data=...))`` once
    per selector.  ``run(ctx: SelectionContext) -> Selection`` turns the supernet in the
    context into a genotype.  Names are global: two plugins registering the same name is an
    error that names both.
    """


@hookspec
def selbench_register_spaces(register: RegisterSpace) -> None:
    """Register search spaces.

    Call ``register(space)`` with a :class:`selbench.SearchSpace` instance (its default
    configuration); ``space.name`` is the name ``get_space`` and checkpoints use.
    """


@hookspec
def selbench_register_datasets(register: RegisterDataset) -> None:
    """Register datasets that recipes can name in ``[data] dataset = ...``.

    Call ``register(dataset)`` with an object that has a ``name`` and loads the train and
    test images as uint8 tensors: see :class:`selbench.Dataset` (``name``, ``description``,
    ``load(root, download=...) -> selbench.ImageSet``).
    """


@hookspec
def selbench_register_scorers(register: RegisterScorer) -> None:
    """Register scorers: ways to turn a genotype into a leaderboard number (e.g. retraining).

    Call ``register(selbench.Scorer(name=..., score=..., check=...))`` once per scorer;
    ``score(ctx: selbench.ScoringContext) -> dict`` returns at least ``test_accuracy``.
    """


@hookspec
def selbench_register_table_sources(register: RegisterTableSource) -> None:
    """Register tables of every cell of a space that the ``table`` scorer reads (e.g. NAS-Bench-201).

    Call ``register(selbench.TableSource(name=..., check=..., score=...))`` once per source;
    ``check(recipe)`` raises for a recipe the source has no table of, ``score(genotype, recipe)``
    returns the cell's score dict (``test_accuracy``: the mean over the table's seeds).
    """


@hookspec
def selbench_register_training_observers(register: RegisterTrainingObserver) -> None:
    """Register observers of supernet training.

    Call ``register(selbench.TrainingObserver(name=..., new_epoch=..., needs_gradients=...))``
    once per observer.  `selbench train` calls ``new_epoch(space)`` at the start of every
    epoch, hands the returned object every step's mixing weights (and their gradients when
    ``needs_gradients``) and stores its ``result()`` in the epoch's entry of the run record
    under ``observers[name]``.  Observers never change what is trained.
    """


@hookspec
def selbench_selection_finished(selection: SelectionRun) -> None:
    """Observe a finished selection run (genotype, counters, seconds, who ran it); e.g. to log it to a tracker."""
