"""What the ``selection`` and ``retrain`` units of the run store keep in their ``result``.

The leaderboard reads these and nothing else, so any code that fills a runs directory
writes them through :meth:`SelectionRecord.to_result` and :meth:`RetrainRecord.to_result`.

Selection result: every field of :meth:`selbench.SelectionRun.to_dict` (``genotype`` (JSON or
``null`` when it failed), ``failure``, ``selector``, ``distribution``, ``version``,
``options``, ``seconds``, ``counters``, ``seed``, ``device``, ``scores``) plus ``recipe``
(the recipe's name), ``supernet_key`` (the key of the supernet unit), ``supernet_seed`` and
``supernet_precision`` (the recipe's ``search.precision``; absent in older records: fp32).

Retrain result (one scorer run on one selected genotype):

=================  ==========================================================================
recipe             recipe name
selector           selector name; ``distribution``, ``version``: where it came from
supernet_key       key of the supernet unit the genotype was selected on; ``supernet_seed``
selection_key      key of the selection unit
retrain_seed       seed of this retrain
scorer             scorer name (``retrain`` for training from scratch)
genotype           the genotype's JSON (``genotype_text``: its DARTS / NAS-Bench-201 text)
test_accuracy      top-1 test accuracy, a fraction in [0, 1]
params_m, macs_m   parameters / multiply-adds in millions (auxiliary head excluded), or null
seconds            wall time of the retrain, or null; ``device``: where it ran
precision          ``fp32`` or ``bf16``: what the retrain computed in (absent in older records: fp32)
extra              any further numbers the scorer returned
=================  ==========================================================================
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from selbench.core.errors import SelbenchError
from selbench.core.genotype import Genotype
from selbench.core.precision import DEFAULT_PRECISION
from selbench.retrain.scorer import SCORE_FIELDS
from selbench.select.contract import SelectionRun

_CONTEXT_FIELDS = ("recipe", "supernet_key", "supernet_seed")


class RecordError(SelbenchError):
    """A unit's result does not follow the record schema."""


@dataclass(frozen=True)
class SelectionRecord:
    """A selection together with the recipe and supernet it was made on."""

    recipe: str
    supernet_key: str
    supernet_seed: int
    selection: SelectionRun
    supernet_precision: str = DEFAULT_PRECISION

    @property
    def failed(self) -> bool:
        return self.selection.genotype is None

    def to_result(self) -> dict[str, Any]:
        return {**self.selection.to_dict(), "recipe": self.recipe, "supernet_key": self.supernet_key,
                "supernet_seed": self.supernet_seed, "supernet_precision": self.supernet_precision}

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> SelectionRecord:
        _require(result, _CONTEXT_FIELDS + ("selector", "genotype", "seconds"), "selection")
        fields = {k: v for k, v in result.items() if k not in (*_CONTEXT_FIELDS, "supernet_precision")}
        try:
            selection = SelectionRun.from_dict(fields)
        except TypeError as exc:
            raise RecordError(f"selection record does not match this selbench's SelectionRun ({exc})") from None
        return cls(str(result["recipe"]), str(result["supernet_key"]), int(result["supernet_seed"]), selection,
                   str(result.get("supernet_precision", DEFAULT_PRECISION)))


@dataclass(frozen=True)
class RetrainRecord:
    """One scored genotype; see the module docstring for the meaning of each field."""

    recipe: str
    selector: str
    distribution: str | None
    version: str | None
    supernet_key: str
    supernet_seed: int
    selection_key: str
    retrain_seed: int
    scorer: str
    genotype: Genotype
    test_accuracy: float
    params_m: float | None = None
    macs_m: float | None = None
    seconds: float | None = None
    device: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    precision: str = DEFAULT_PRECISION

    @classmethod
    def from_score(cls, selection: SelectionRecord, *, selection_key: str, retrain_seed: int, scorer: str,
                   score: Mapping[str, Any]) -> RetrainRecord:
        """Combine a (successful) selection with a scorer's validated result."""
        chosen = selection.selection
        genotype = chosen.genotype
        if genotype is None:
            raise RecordError(f"selection {selection_key[:16]} failed; a failed selection has nothing to retrain")
        return cls(
            recipe=selection.recipe, selector=chosen.selector, distribution=chosen.distribution,
            version=chosen.version, supernet_key=selection.supernet_key, supernet_seed=selection.supernet_seed,
            selection_key=selection_key, retrain_seed=retrain_seed, scorer=scorer, genotype=genotype,
            test_accuracy=float(score["test_accuracy"]), params_m=score.get("params_m"),
            macs_m=score.get("macs_m"), seconds=score.get("seconds"), device=score.get("device"),
            extra={k: v for k, v in score.items() if k not in SCORE_FIELDS},
            precision=str(score.get("precision", DEFAULT_PRECISION)))

    def to_result(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["genotype"] = self.genotype.to_dict()
        out["genotype_text"] = str(self.genotype)
        out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> RetrainRecord:
        required = tuple(f.name for f in dataclasses.fields(cls)
                         if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        _require(result, required, "retrain")
        fields = {f.name: result[f.name] for f in dataclasses.fields(cls) if f.name in result}
        fields["genotype"] = Genotype.from_json(result["genotype"])
        try:
            fields["test_accuracy"] = float(result["test_accuracy"])
        except (TypeError, ValueError):
            raise RecordError(f"retrain record has test_accuracy={result['test_accuracy']!r}, not a number") from None
        fields["extra"] = dict(result.get("extra") or {})
        return cls(**fields)


def _require(result: Mapping[str, Any], names: tuple[str, ...], kind: str) -> None:
    missing = [name for name in names if name not in result]
    if missing:
        raise RecordError(f"{kind} record lacks {', '.join(missing)}; it was written by another selbench version")
