"""Per-edge trajectories over the epochs of a supernet training run, read from its record.

Two quantities, one number per edge and epoch:

* ``alphas``: the edge's largest softmax(α) weight among ops other than ``none`` — the
  number DARTS ranks an edge's strength by when it picks two inputs per node;
* ``costs``: the edge's most negative mean cost C = (∂L/∂m)·m among ops other than ``none``
  (recorded by the ``cost-sign`` plugin's training observer) — negative means the edge's
  best op lowers the loss, so the wiring derivation keeps the edge.

Edges are grouped into *input* edges (from an input node of the cell) and *intermediate*
edges (between intermediate nodes): the cost-sign paper finds intermediate edges costlier
("width preference").
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

from .errors import SelbenchError
from .space import NONE_OP
from .train import CHECKPOINT_FILE, RECORD_FILE, RECORD_FORMAT, read_record, space_layout

COST_OBSERVER = "cost-sign"
GROUPS = ("input", "intermediate")


@dataclass(frozen=True)
class EdgeLayout:
    """The cell structure a record's [E, O] tables refer to."""

    cell_types: tuple[str, ...]
    ops: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]  # (src, dst) per edge index
    num_input_nodes: int

    @classmethod
    def from_dict(cls, layout: Mapping[str, Any]) -> "EdgeLayout":
        return cls(tuple(layout["cell_types"]), tuple(layout["ops"]), tuple((s, d) for s, d in layout["edges"]),
                   int(layout["num_input_nodes"]))

    @property
    def real_ops(self) -> list[int]:
        """Indices of the ops other than ``none``."""
        return [k for k, op in enumerate(self.ops) if op != NONE_OP]

    def group(self, name: str) -> list[int]:
        """Edge indices of a group: ``input`` (source is an input node) or ``intermediate``."""
        is_input = name == "input"
        return [e for e, (src, _) in enumerate(self.edges) if (src < self.num_input_nodes) == is_input]

    def label(self, edge: int) -> str:
        src, dst = self.edges[edge]
        return f"{src}→{dst}"


@dataclass(frozen=True)
class TrainingRun:
    """A finished `selbench train` run: its record and the layout of its cells."""

    record_path: Path
    record: Mapping[str, Any]
    layout: EdgeLayout

    @property
    def directory(self) -> Path:
        return self.record_path.parent

    @property
    def alpha_split(self) -> str | None:
        return self.record.get("alpha_split")

    @property
    def title(self) -> str:
        return f"{self.record.get('recipe_name')} seed {self.record.get('seed')}, {self.record.get('mode')}"


@dataclass(frozen=True)
class Trajectories:
    """One panel row: a number per (epoch, edge) of one cell type, for one split (``None``: not split-specific)."""

    cell_type: str
    split: str | None
    epochs: list[int]
    values: torch.Tensor  # [epochs, E]


def load_run(path: str | Path) -> TrainingRun:
    """The run in ``path``: a `selbench train --out` directory, a supernet unit directory of a run store
    (both hold ``supernet.json``), or that record file itself."""
    path = Path(path)
    record_path = path / RECORD_FILE if path.is_dir() else path
    if not record_path.is_file():
        raise SelbenchError(f"{path}: no {RECORD_FILE} there; pass the directory of a finished `selbench train` run "
                            f"(its --out) or a supernet directory of a run store")
    record = read_record(record_path, "train the run again")
    if not isinstance(record, Mapping) or record.get("format") != RECORD_FORMAT:
        raise SelbenchError(f"{record_path} is not a `selbench train` record; pass a supernet run directory")
    if not record.get("epochs"):
        raise SelbenchError(f"{record_path} records no finished epoch; nothing to analyse")
    return TrainingRun(record_path, record, EdgeLayout.from_dict(record.get("space") or _layout_from_checkpoint(
        record_path.parent / record.get("checkpoint", CHECKPOINT_FILE))))


def _layout_from_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """Records written before the record carried its layout: rebuild the space from the checkpoint."""
    from .checkpoint import load_supernet

    if not checkpoint.is_file():
        raise SelbenchError(f"the record in {checkpoint.parent} names no cell layout and {checkpoint.name} is "
                            "missing; train the run again")
    return space_layout(load_supernet(checkpoint).space)


def alpha_trajectories(run: TrainingRun) -> list[Trajectories]:
    """Per cell type, the largest non-``none`` softmax(α) weight of every edge after every epoch."""
    epochs = [entry["epoch"] for entry in run.record["epochs"]]
    real = run.layout.real_ops
    return [Trajectories(cell_type, None, epochs, torch.tensor(
        [entry["alpha_softmax"][cell_type] for entry in run.record["epochs"]], dtype=torch.float64)[:, :, real]
        .amax(dim=-1)) for cell_type in run.layout.cell_types]


def cost_trajectories(run: TrainingRun) -> list[Trajectories]:
    """Per split and cell type, the most negative non-``none`` mean cost of every edge in every epoch.

    The split α learns from comes first.  Raises a :class:`SelbenchError` naming the plugin
    that records costs when the run has none.
    """
    recorded = [(entry["epoch"], entry["observers"][COST_OBSERVER]["mean_cost"]) for entry in run.record["epochs"]
                if COST_OBSERVER in entry.get("observers", {})]
    if not recorded:
        raise SelbenchError(
            f"{run.record_path} has no cost records: the {COST_OBSERVER!r} plugin's training observer writes them "
            f"during `selbench train`; train again into a new --out with that plugin installed and not listed in "
            f"SELBENCH_DISABLE_PLUGINS")
    splits = sorted({split for _, costs in recorded for split in costs}, key=lambda s: (s != run.alpha_split, s))
    real = run.layout.real_ops
    out = []
    for split in splits:
        for cell_type in run.layout.cell_types:
            rows = [(epoch, costs[split][cell_type]) for epoch, costs in recorded if split in costs]
            values = torch.tensor([table for _, table in rows], dtype=torch.float64)[:, :, real].amin(dim=-1)
            out.append(Trajectories(cell_type, split, [epoch for epoch, _ in rows], values))
    return out


def has_cost_records(run: TrainingRun) -> bool:
    """Whether any epoch of the run carries the cost observer's data."""
    return any(COST_OBSERVER in entry.get("observers", {}) for entry in run.record["epochs"])


QUANTITIES = {"alphas": alpha_trajectories, "costs": cost_trajectories}


def summary_rows(run: TrainingRun, quantity: str,
                 trajectories: Sequence[Trajectories] | None = None) -> Iterator[list[Any]]:
    """Rows (split, cell type, edge group, edges, first epoch, last epoch, mean at both, edges < 0 at both).

    ``trajectories``: the quantity's trajectories when already built (default: built here).
    For ``costs`` the count of negative edges is the number the wiring derivation would keep
    (before dead nodes are pruned); for ``alphas`` it is always 0 and left out.
    """
    for trajectory in QUANTITIES[quantity](run) if trajectories is None else trajectories:
        for group in GROUPS:
            edges = run.layout.group(group)
            first, last = trajectory.values[0, edges], trajectory.values[-1, edges]
            row = [trajectory.split or "-", trajectory.cell_type, group, len(edges), trajectory.epochs[0],
                   trajectory.epochs[-1], f"{first.mean():+.4g}", f"{last.mean():+.4g}"]
            if quantity == "costs":
                row += [int((first < 0).sum()), int((last < 0).sum())]
            yield row


def summary_headers(quantity: str) -> Sequence[str]:
    headers = ["split", "cell", "edges", "n", "first", "last", "mean first", "mean last"]
    return headers + (["< 0 first", "< 0 last"] if quantity == "costs" else [])
