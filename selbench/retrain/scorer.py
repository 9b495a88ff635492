"""The scorer contract: how a genotype becomes a leaderboard number (retraining it, or looking it up).

A plugin registers ``Scorer(name, score)`` through ``selbench_register_scorers``.  The harness
calls ``score(ctx)`` with a :class:`ScoringContext`:

* ``genotype``: the cell to score;
* ``recipe``: the recipe the genotype's supernet came from (its ``[retrain]`` section says
  how to train the discrete network);
* ``seed``: the retrain seed; ``device``: a ``torch.device``;
* ``out_dir``: a directory owned by this one scoring run — the place for resume checkpoints
  (it survives an interruption) and for artifacts;
* ``progress(label, done, total)``: reports a long loop (the CLI shows a bar).

A scorer may also give ``check(recipe)``: the harness calls it once per recipe before any
training, so that a recipe the scorer cannot score (another space, an unknown dataset, a
missing benchmark file) is one clear error up front, not after hours of supernet training.

``score`` returns a dict with (``SCORE_FIELDS``):

* ``test_accuracy`` — required, top-1 accuracy on the test set as a fraction in [0, 1];
* ``params_m``, ``macs_m`` — parameters and multiply-adds in millions (auxiliary head excluded);
* ``seconds`` — wall time of the scoring run; ``device`` — where it ran, e.g. ``"cuda:0"``;
* ``artifacts`` — file names inside ``out_dir`` whose hashes the run record must keep;
* ``precision`` — ``fp32`` or ``bf16``: what the scoring run computed in (absent: fp32, e.g. a
  table lookup that trains nothing).

Other keys are kept in the record as they are (plain JSON).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeGuard

import torch

from selbench.core.errors import PluginError
from selbench.core.genotype import Genotype
from selbench.core.precision import PRECISIONS

SCORE_FIELDS = ("test_accuracy", "params_m", "macs_m", "seconds", "device", "artifacts", "precision")
_OPTIONAL_NUMBERS = ("params_m", "macs_m", "seconds")

Progress = Callable[[str, int, int], None]


def no_progress(label: str, done: int, total: int) -> None:
    """The default progress callback: report nothing."""


@dataclass(frozen=True)
class ScoringContext:
    """What a scorer gets: the genotype, the recipe (a :class:`selbench.Recipe`), the seed, the device,
    its own output directory and a progress callback."""

    genotype: Genotype
    recipe: Any
    seed: int
    device: torch.device
    out_dir: Path
    progress: Progress = no_progress


ScoreFn = Callable[[ScoringContext], Mapping[str, Any]]


@dataclass(frozen=True)
class Scorer:
    """A registered way to score a genotype: ``score(ctx: ScoringContext) -> dict``.

    ``check(recipe)``, when given, raises a :class:`selbench.SelbenchError` for a recipe whose cells
    this scorer cannot score; the grid calls it before training anything.
    """

    name: str
    score: ScoreFn
    description: str = ""
    check: Callable[[Any], None] | None = None


def validate_score(scorer: str, result: Any) -> dict[str, Any]:
    """Check a scorer's returned dict against the contract above; a violation names the scorer."""
    where = f"scorer {scorer!r}"
    if not isinstance(result, Mapping):
        raise PluginError(f"{where} returned a {type(result).__name__}, expected a dict with 'test_accuracy'")
    accuracy = result.get("test_accuracy")
    if not _is_number(accuracy) or not 0.0 <= accuracy <= 1.0:
        raise PluginError(f"{where} returned test_accuracy={accuracy!r}; expected a fraction in [0, 1]")
    for name in _OPTIONAL_NUMBERS:
        value = result.get(name)
        if value is not None and (not _is_number(value) or value < 0):
            raise PluginError(f"{where} returned {name}={value!r}; expected a non-negative number or nothing")
    artifacts = result.get("artifacts", [])
    if not isinstance(artifacts, (list, tuple)) or not all(isinstance(a, str) for a in artifacts):
        raise PluginError(f"{where} returned artifacts={artifacts!r}; expected a list of file names in out_dir")
    precision = result.get("precision")
    if precision is not None and precision not in PRECISIONS:
        raise PluginError(f"{where} returned precision={precision!r}; expected one of {', '.join(PRECISIONS)}")
    return {**result, "test_accuracy": float(accuracy), "artifacts": list(artifacts)}


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
