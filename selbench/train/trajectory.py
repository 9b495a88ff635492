"""Per-edge trajectories over training epochs: the cell layout a run record names, and what an observer plots.

A :class:`TrainingObserver` declares the quantities it can draw as :class:`ObservedQuantity`
objects; `selbench analyze` finds them by name, hands each one the results its observer stored
per epoch, and plots and summarises the :class:`Trajectories` it returns, so the harness needs
to know nothing about any observer's data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from selbench.core.space import NONE_OP

GROUPS = ("input", "intermediate")


@dataclass(frozen=True)
class EdgeLayout:
    """The cell structure a record's [E, O] tables refer to."""

    cell_types: tuple[str, ...]
    ops: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]  # (src, dst) per edge index
    num_input_nodes: int
    edge_ops: Mapping[str, tuple[tuple[str, ...], ...]] | None = None  # per cell type and edge, where edges differ

    @classmethod
    def from_dict(cls, layout: Mapping[str, Any]) -> EdgeLayout:
        edge_ops = layout.get("edge_ops")
        return cls(tuple(layout["cell_types"]), tuple(layout["ops"]), tuple((s, d) for s, d in layout["edges"]),
                   int(layout["num_input_nodes"]),
                   None if edge_ops is None else {c: tuple(map(tuple, rows)) for c, rows in edge_ops.items()})

    @property
    def real_ops(self) -> list[int]:
        """Column indices where no edge has ``none``."""
        if self.edge_ops is None:
            return [k for k, op in enumerate(self.ops) if op != NONE_OP]
        rows = [ops for cell in self.edge_ops.values() for ops in cell]
        return [k for k in range(len(rows[0])) if all(ops[k] != NONE_OP for ops in rows)]

    def group(self, name: str) -> list[int]:
        """Edge indices of a group: ``input`` (source is an input node) or ``intermediate``."""
        is_input = name == "input"
        return [e for e, (src, _) in enumerate(self.edges) if (src < self.num_input_nodes) == is_input]

    def label(self, edge: int) -> str:
        src, dst = self.edges[edge]
        return f"{src}→{dst}"


@dataclass(frozen=True)
class Trajectories:
    """One panel row: a number per (epoch, edge) of one cell type, for one split (``None``: not split-specific)."""

    cell_type: str
    split: str | None
    epochs: list[int]
    values: torch.Tensor  # [epochs, E]


# extract(records, layout, alpha_split): records are (epoch, what the observer stored that epoch)
Extract = Callable[[Sequence[tuple[int, Any]], EdgeLayout, "str | None"], list[Trajectories]]


@dataclass(frozen=True)
class ObservedQuantity:
    """A per-edge number an observer's records can be turned into, for plots and summaries.

    ``name`` is what users ask for (``selbench analyze RUN --plot NAME``); ``label`` says what
    one value is; ``extract`` builds the trajectories, the rows of the split α learns from
    first; ``signed``: the sign means something (plots draw a zero line, summaries count the
    edges below zero).
    """

    name: str
    label: str
    extract: Extract
    signed: bool = False
