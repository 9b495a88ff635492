"""Look-ups of what plugins registered, by kind and name: spaces, selectors, datasets, scorers, tables, observers."""
from __future__ import annotations

from typing import Any

from selbench.core.errors import SelbenchError
from selbench.core.space import SearchSpace
from selbench.data.dataset import Dataset
from selbench.plugin.host import plugin_host
from selbench.retrain.scorer import Scorer
from selbench.retrain.table_source import TableSource
from selbench.select.contract import Selector
from selbench.train.observers import TrainingObserver


def get_space(name: str, **structure: Any) -> SearchSpace:
    """The registered space ``name``; ``structure`` (e.g. ``ops=...``) picks a variant."""
    space: SearchSpace = plugin_host().get("space", name).obj
    return space.variant(**structure) if structure else space


def list_spaces() -> list[str]:
    """Names of the registered search spaces, sorted."""
    return sorted(plugin_host().registrations("space"))


def get_selector(name: str) -> Selector:
    """The registered selector ``name``; an unknown name is one error listing the known ones."""
    selector: Selector = plugin_host().get("selector", name).obj
    return selector


def list_selectors() -> list[str]:
    """Names of the registered selectors, sorted."""
    return sorted(plugin_host().registrations("selector"))


def get_dataset(name: str) -> Dataset:
    """The registered dataset ``name``; ``"base:arg"`` asks dataset ``base`` for its variant ``arg``."""
    base, _, arg = name.partition(":")
    dataset: Dataset = plugin_host().get("dataset", base).obj
    if not arg:
        return dataset
    variant = getattr(dataset, "variant", None)
    if variant is None:
        raise SelbenchError(f"dataset {base!r} has no variants; use plain {base!r} instead of {name!r}")
    chosen: Dataset = variant(arg)
    return chosen


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(plugin_host().registrations("dataset"))


def get_scorer(name: str) -> Scorer:
    """The registered scorer ``name``."""
    scorer: Scorer = plugin_host().get("scorer", name).obj
    return scorer


def list_scorers() -> list[str]:
    """Names of the registered scorers, sorted."""
    return sorted(plugin_host().registrations("scorer"))


def table_sources() -> list[TableSource]:
    """The table sources every installed, enabled plugin registered, in name order (the ``table`` scorer's)."""
    return [registration.obj for _, registration in sorted(plugin_host().registrations("table source").items())]


def training_observers() -> list[TrainingObserver]:
    """The observers every installed, enabled plugin registered, in name order."""
    return [registration.obj for _, registration in sorted(plugin_host().registrations("training observer").items())]
