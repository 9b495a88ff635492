"""The truth table: cell → per-seed test and validation accuracy, parameters, MACs, for one recipe.

A table is a JSON file::

    {"format": "selbench-truth-table", "version": 1,
     "recipe": <name>, "recipe_hash": <sha256 of truth_config(recipe)>, "selbench": <version>,
     "config": truth_config(recipe), "seeds": [0, 1, 2], "build_seconds": <sum over the trainings>,
     "cells": {<cell text>: {"test_accuracy": [per seed], "test_accuracy_mean": ...,
                             "valid_accuracy": [per seed], "valid_accuracy_mean": ...,
                             "params_m": ..., "macs_m": ..., "seconds": [per seed]}},
     "noise": {...}}

Accuracies are fractions, as every scorer returns them; a cell's text is its genotype's string
(NAS-Bench-201's ``|op~0|+|op~0|op~1|``).  ``config`` is what the table depends on — the space
(name, ops, edges), the ``[data]`` section used for retraining and the ``[retrain]`` section — and
``recipe_hash`` its content key: a recipe that differs only elsewhere (its name, ``[search]``,
the supernet's width) has the same truth.  Means and ``noise`` (:mod:`selbench.truth.noise`)
are derived from the per-seed values and checked against them when a table is read, so an
edited number is caught.
"""
from __future__ import annotations

import inspect
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from selbench.core.errors import SelbenchError
from selbench.core.files import atomic_write_json, config_key
from selbench.core.genotype import Genotype
from selbench.core.space import SearchSpace, space_layout
from selbench.core.version import __version__
from selbench.plugin.lookup import get_space
from selbench.recipes.recipe import Recipe, without_location_keys
from selbench.truth.noise import NoiseSummary, noise_summary

FORMAT = "selbench-truth-table"
FORMAT_VERSION = 1
_MEANS = ("test_accuracy", "valid_accuracy")


class TableError(SelbenchError):
    """A truth table that cannot be used: unreadable, of another format, inconsistent, or without a cell."""


def recipe_space(recipe: Recipe) -> SearchSpace:
    """The space variant a recipe searches: its ``[supernet]`` keys that are structure arguments (e.g. ops, steps)."""
    space = get_space(recipe.supernet["space"])
    structure = {k: v for k, v in recipe.supernet.items() if k in inspect.signature(space.variant).parameters}
    return space.variant(**structure) if structure else space


def truth_config(recipe: Recipe) -> dict[str, Any]:
    """What a recipe's truth depends on: the space's layout, the retraining ``[data]`` and ``[retrain]``."""
    return {"space": space_layout(recipe_space(recipe)),
            "data": without_location_keys("data", recipe.retrain_data()), "retrain": dict(recipe.retrain)}


def truth_hash(recipe: Recipe) -> str:
    """The content key (sha256) of :func:`truth_config`: equal for every recipe with the same truth."""
    return config_key(truth_config(recipe))


@dataclass(frozen=True)
class CellEntry:
    """One cell of a table: per-seed accuracies (fractions, in the table's seed order), size and wall time."""

    test_accuracy: tuple[float, ...]
    valid_accuracy: tuple[float, ...]
    params_m: float
    macs_m: float
    seconds: tuple[float, ...]

    @property
    def test_mean(self) -> float:
        return math.fsum(self.test_accuracy) / len(self.test_accuracy)

    @property
    def valid_mean(self) -> float:
        return math.fsum(self.valid_accuracy) / len(self.valid_accuracy)

    def to_dict(self) -> dict[str, Any]:
        return {"test_accuracy": list(self.test_accuracy), "test_accuracy_mean": self.test_mean,
                "valid_accuracy": list(self.valid_accuracy), "valid_accuracy_mean": self.valid_mean,
                "params_m": self.params_m, "macs_m": self.macs_m, "seconds": list(self.seconds)}


@dataclass(frozen=True)
class TruthTable:
    """Every cell of a recipe's space, trained with every seed of ``seeds`` (see the module docstring)."""

    recipe: str
    recipe_hash: str
    config: Mapping[str, Any]
    seeds: tuple[int, ...]
    cells: Mapping[str, CellEntry]
    selbench: str = __version__

    @property
    def build_seconds(self) -> float:
        return math.fsum(s for entry in self.cells.values() for s in entry.seconds)

    @property
    def noise(self) -> NoiseSummary:
        return noise_summary([entry.test_accuracy for entry in self.cells.values()])

    def means(self) -> dict[str, float]:
        """Cell text → mean test accuracy over the seeds (a fraction): the truth every score is read from."""
        return {cell: entry.test_mean for cell, entry in self.cells.items()}

    def entry(self, genotype: Genotype) -> CellEntry:
        """The row of ``genotype``; a cell the table does not hold is a :class:`TableError`."""
        cell = str(genotype)
        if cell not in self.cells:
            space = self.config["space"]
            raise TableError(f"the {self.recipe} table has no cell {cell} (it holds the {len(self.cells)} cells of "
                             f"the {space['name']} space with ops {', '.join(space['ops'])} on {len(space['edges'])} "
                             "edges)")
        return self.cells[cell]

    def genotypes(self) -> Iterator[tuple[Genotype, CellEntry]]:
        for cell, entry in self.cells.items():
            yield Genotype.parse(cell), entry

    def check_recipe(self, recipe: Recipe) -> None:
        """Refuse a recipe whose truth configuration is not the one this table was made from."""
        if truth_hash(recipe) != self.recipe_hash:
            raise TableError(f"the {self.recipe} table was made from another configuration than recipe {recipe.name!r} "
                             f"(hash {self.recipe_hash[:12]}…, the recipe's {truth_hash(recipe)[:12]}…)")

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "recipe": self.recipe, "recipe_hash": self.recipe_hash,
                "selbench": self.selbench, "config": dict(self.config), "seeds": list(self.seeds),
                "build_seconds": self.build_seconds,
                "cells": {cell: entry.to_dict() for cell, entry in sorted(self.cells.items())},
                "noise": self.noise.to_dict()}

    @classmethod
    def from_dict(cls, data: Any, where: str = "truth table") -> TruthTable:
        """Read a table, checking its format and that every derived number matches the per-seed values."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TableError(f"{where} is not a selbench truth table")
        if data.get("version") != FORMAT_VERSION:
            raise TableError(f"{where} has format version {data.get('version')!r}; "
                             f"this selbench reads {FORMAT_VERSION}")
        missing = [k for k in ("recipe", "recipe_hash", "config", "seeds", "cells") if k not in data]
        if missing:
            raise TableError(f"{where} lacks {', '.join(missing)}")
        if data["recipe_hash"] != config_key(data["config"]):
            raise TableError(f"{where}: recipe_hash does not match the configuration it records")
        seeds = tuple(int(s) for s in data["seeds"])
        if not seeds or not data["cells"]:
            raise TableError(f"{where} has no seeds or no cells")
        cells = {cell: _read_entry(row, len(seeds), f"{where}, cell {cell}") for cell, row in data["cells"].items()}
        table = cls(str(data["recipe"]), str(data["recipe_hash"]), data["config"], seeds, cells,
                    str(data.get("selbench", "")))
        if "noise" in data and not _close(data["noise"], table.noise.to_dict()):
            raise TableError(f"{where}: its noise summary does not match its per-seed accuracies")
        return table


def _read_entry(row: Any, num_seeds: int, where: str) -> CellEntry:
    try:
        entry = CellEntry(tuple(map(float, row["test_accuracy"])), tuple(map(float, row["valid_accuracy"])),
                          float(row["params_m"]), float(row["macs_m"]), tuple(map(float, row["seconds"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise TableError(f"{where}: malformed row ({type(exc).__name__}: {exc})") from None
    if not len(entry.test_accuracy) == len(entry.valid_accuracy) == len(entry.seconds) == num_seeds:
        raise TableError(f"{where}: expected one value per seed ({num_seeds})")
    if not all(0.0 <= a <= 1.0 for a in entry.test_accuracy + entry.valid_accuracy):
        raise TableError(f"{where}: accuracies must be fractions in [0, 1]")
    for name, mean in (("test_accuracy", entry.test_mean), ("valid_accuracy", entry.valid_mean)):
        stored = row.get(f"{name}_mean", mean)
        if not isinstance(stored, (int, float)) or not math.isclose(stored, mean, rel_tol=0, abs_tol=1e-9):
            raise TableError(f"{where}: {name}_mean {stored!r} is not the mean of its seeds ({mean!r})")
    return entry


def _close(stored: Any, computed: Mapping[str, Any]) -> bool:
    if not isinstance(stored, dict) or set(stored) != set(computed):
        return False
    return all(stored[k] is None if v is None else
               isinstance(stored[k], (int, float)) and math.isclose(stored[k], v, rel_tol=1e-9, abs_tol=1e-12)
               for k, v in computed.items())


def read_table(path: str | os.PathLike) -> TruthTable:
    """A table from a JSON file; unreadable or inconsistent files are one :class:`TableError`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TableError(f"truth table {path} cannot be read ({type(exc).__name__}: {str(exc)[:80]})") from None
    return TruthTable.from_dict(data, where=f"truth table {path}")


def write_table(table: TruthTable, path: str | os.PathLike) -> Path:
    """Write ``table`` atomically as JSON; return the path."""
    atomic_write_json(table.to_dict(), Path(path))
    return Path(path)


def seed_order(seeds: Sequence[int]) -> tuple[int, ...]:
    """Seeds as a table keeps them: distinct, in the order given; an empty or repeated list is an error."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise TableError(f"seeds must be distinct and at least one, got {list(seeds)}")
    return tuple(int(s) for s in seeds)
