"""The selector contract: what a selection plugin registers, what it returns, and what the harness records of a run."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from selbench.core.errors import SelbenchError
from selbench.core.genotype import Genotype
from selbench.core.options import Option
from selbench.select.context import SelectionContext

# version of the selection record written by SelectionRun.to_dict (1: before the field existed; same layout)
RECORD_VERSION = 2


@dataclass(frozen=True)
class Selection:
    """What a selector's ``run(ctx)`` returns: its answer and nothing about who asked.

    ``genotype`` is ``None`` for a *failed* selection (``failure`` says why: the selector's own
    "no cell" answer); ``scores`` maps cell types to ``Tensor[E, O]`` per-op scores (larger =
    more important) for diagnostics; ``counters`` adds to the context's counters.
    ``variable_in_degree`` says whether the cells may have any number of inputs per node
    (validated and retrained that way); ``None`` means "as the selector is registered".
    """

    genotype: Genotype | None
    scores: Mapping[str, Tensor] | None = field(default=None, repr=False)
    counters: Mapping[str, int] = field(default_factory=dict)
    failure: str | None = None
    variable_in_degree: bool | None = None


@dataclass(frozen=True)
class Selector:
    """A registered selection method.

    ``run(ctx)`` returns a :class:`Selection` (or just a :class:`Genotype`).  ``options``
    declares every option with its default; ``needs_data`` makes the harness refuse to run
    without data; ``variable_in_degree`` lets its cells have any number of inputs per node
    (a selector with several derivations says per result, in ``Selection.variable_in_degree``).
    """

    name: str
    run: Callable[[SelectionContext], Selection | Genotype]
    options: Mapping[str, Option] = field(default_factory=dict)
    needs_data: bool = False
    description: str = ""
    variable_in_degree: bool = False


@dataclass(frozen=True)
class SelectionRun:
    """One selector run as the harness records it: the :class:`Selection` plus who ran, how, where and how long.

    ``counters`` are the context's counters merged with the selection's own;
    ``variable_in_degree`` is resolved (never ``None``).  ``genotype``, ``scores`` and
    ``failure`` read through to the selection.
    """

    selection: Selection
    selector: str
    distribution: str | None = None
    version: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = ""
    seconds: float = 0.0
    counters: Mapping[str, int] = field(default_factory=dict)
    variable_in_degree: bool = False

    @property
    def genotype(self) -> Genotype | None:
        return self.selection.genotype

    @property
    def scores(self) -> Mapping[str, Tensor] | None:
        return self.selection.scores

    @property
    def failure(self) -> str | None:
        return self.selection.failure

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON record (the ``result`` of a selection unit)."""
        genotype, scores = self.selection.genotype, self.selection.scores
        return {
            "record_version": RECORD_VERSION,
            "genotype": None if genotype is None else genotype.to_dict(),
            "genotype_text": None if genotype is None else str(genotype),
            "scores": None if scores is None else {k: v.detach().cpu().tolist() for k, v in scores.items()},
            "counters": dict(self.counters), "failure": self.selection.failure, "seconds": self.seconds,
            "selector": self.selector, "distribution": self.distribution, "version": self.version,
            "options": dict(self.options), "seed": self.seed, "device": self.device,
            "variable_in_degree": self.variable_in_degree,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SelectionRun:
        """Read :meth:`to_dict`'s record, and the records of earlier versions (which lack ``record_version``)."""
        version = data.get("record_version", 1)
        if not isinstance(version, int) or not 1 <= version <= RECORD_VERSION:
            raise SelbenchError(f"selection record version {version!r} is newer than this selbench reads "
                                f"({RECORD_VERSION}); upgrade selbench")
        genotype = None if data.get("genotype") is None else Genotype.from_json(data["genotype"])
        scores = None if data.get("scores") is None else {k: torch.tensor(v) for k, v in data["scores"].items()}
        counters = dict(data.get("counters") or {})
        selection = Selection(genotype=genotype, scores=scores, counters=counters, failure=data.get("failure"),
                              variable_in_degree=data.get("variable_in_degree"))
        return cls(selection, selector=str(data["selector"]), distribution=data.get("distribution"),
                   version=data.get("version"), options=dict(data.get("options") or {}),
                   seed=int(data.get("seed", 0)), device=str(data.get("device", "")),
                   seconds=float(data.get("seconds", 0.0)), counters=counters,
                   variable_in_degree=bool(data.get("variable_in_degree")))
