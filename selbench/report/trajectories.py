"""Per-edge trajectories of a supernet training run, read from its record: α always, plus what observers declare.

``alphas`` — the edge's largest softmax(α) weight among ops other than ``none``, the number
DARTS ranks an edge's strength by — is always there.  Every other quantity comes from a
training observer that declares it (:class:`selbench.ObservedQuantity`), e.g. the
``cost-sign`` plugin's ``costs``; the harness only hands each its observer's stored results.

Edges are grouped into *input* edges (from an input node of the cell) and *intermediate*
edges (between intermediate nodes): the cost-sign paper finds intermediate edges costlier
("width preference").  ``edges`` is not a per-edge quantity but a count: per epoch and cell
type, how many edges a signed quantity (``costs``) puts below zero — the edges the wiring
derivation keeps, whose growth over training is that paper's "growing tendency".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, cast

import torch

from selbench.core.errors import SelbenchError
from selbench.core.files import read_json
from selbench.core.space import Supernet, space_layout
from selbench.plugin.lookup import training_observers
from selbench.train.record import CHECKPOINT_FILE, RECORD_FILE, RECORD_FORMAT
from selbench.train.trajectory import GROUPS, EdgeLayout, ObservedQuantity, Trajectories


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


def load_run(path: str | Path) -> TrainingRun:
    """The run in ``path``: a `selbench train --out` directory, a supernet unit directory of a run store
    (both hold ``supernet.json``), or that record file itself."""
    path = Path(path)
    record_path = path / RECORD_FILE if path.is_dir() else path
    if not record_path.is_file():
        raise SelbenchError(f"{path}: no {RECORD_FILE} there; pass the directory of a finished `selbench train` run "
                            f"(its --out) or a supernet directory of a run store")
    record = read_json(record_path, "train the run again")
    if not isinstance(record, Mapping) or record.get("format") != RECORD_FORMAT:
        raise SelbenchError(f"{record_path} is not a `selbench train` record; pass a supernet run directory")
    if not record.get("epochs"):
        raise SelbenchError(f"{record_path} records no finished epoch; nothing to analyse")
    return TrainingRun(record_path, record, EdgeLayout.from_dict(record.get("space") or _layout_from_checkpoint(
        record_path.parent / record.get("checkpoint", CHECKPOINT_FILE))))


def _layout_from_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """Records written before the record carried its layout: rebuild the space from the checkpoint."""
    from selbench.train.checkpoint import load_supernet

    if not checkpoint.is_file():
        raise SelbenchError(f"the record in {checkpoint.parent} names no cell layout and {checkpoint.name} is "
                            "missing; train the run again")
    return space_layout(cast(Supernet, load_supernet(checkpoint)).space)


def _alpha_trajectories(records: Sequence[tuple[int, Any]], layout: EdgeLayout,
                        alpha_split: str | None) -> list[Trajectories]:
    """Per cell type, the largest non-``none`` softmax(α) weight of every edge after every epoch."""
    epochs = [epoch for epoch, _ in records]
    return [Trajectories(cell_type, None, epochs, torch.tensor(
        [softmax[cell_type] for _, softmax in records], dtype=torch.float64)[:, :, layout.real_ops].amax(dim=-1))
        for cell_type in layout.cell_types]


ALPHAS = ObservedQuantity("alphas", "largest softmax(α) of a non-none op", _alpha_trajectories)
EDGES = "edges"
ALL_EDGES = "all"


@dataclass(frozen=True)
class EdgeCounts:
    """Per epoch, the edges of one cell type (and split) whose value is below zero: in all and per edge group."""

    cell_type: str
    split: str | None
    epochs: list[int]
    counts: dict[str, list[int]]  # ALL_EDGES and every group of GROUPS -> one count per epoch


def signed_quantity(run: TrainingRun) -> str:
    """The name of the signed quantity ``--plot edges`` counts in ``run`` (the first one with records)."""
    for name, (observer, quantity) in quantities().items():
        if quantity.signed and has_records(run, observer):
            return name
    raise SelbenchError(f"{run.record_path}: --plot edges counts the edges a signed quantity puts below zero "
                        f"(costs, from the cost-sign plugin's training observer), and this run recorded none; train "
                        f"again with that plugin installed")


def edge_counts(layout: EdgeLayout, built: Sequence[Trajectories]) -> list[EdgeCounts]:
    """For each trajectory, how many edges are below zero after every epoch, in all and per edge group."""
    counts = []
    for trajectory in built:
        below = trajectory.values < 0
        per_group = {group: below[:, layout.group(group)].sum(dim=1).tolist() for group in GROUPS}
        counts.append(EdgeCounts(trajectory.cell_type, trajectory.split, trajectory.epochs,
                                 {ALL_EDGES: below.sum(dim=1).tolist(), **per_group}))
    return counts


def edge_count_rows(counts: Sequence[EdgeCounts]) -> tuple[list[str], list[list[Any]]]:
    """(headers, rows) of a table: one row per epoch, per (split, cell type) ``all (input + intermediate)``."""
    headers = ["epoch"] + [f"{c.split or '-'} {c.cell_type}" for c in counts]
    rows = []
    for position, epoch in enumerate(counts[0].epochs if counts else []):
        cells = [f"{c.counts[ALL_EDGES][position]} ({' + '.join(str(c.counts[g][position]) for g in GROUPS)})"
                 for c in counts]
        rows.append([epoch, *cells])
    return headers, rows


def quantities() -> dict[str, tuple[str | None, ObservedQuantity]]:
    """Every quantity `selbench analyze` knows, by name.

    Each maps to (the observer whose records it reads, or None, the quantity).
    """
    known: dict[str, tuple[str | None, ObservedQuantity]] = {ALPHAS.name: (None, ALPHAS)}
    for observer in training_observers():
        for quantity in observer.quantities:
            known.setdefault(quantity.name, (observer.name, quantity))
    return known


def quantity_named(name: str) -> tuple[str | None, ObservedQuantity]:
    """The quantity ``name`` and its observer; an unknown name is one error listing the known ones."""
    known = quantities()
    if name not in known:
        raise SelbenchError(f"unknown quantity {name!r}; the installed plugins offer {', '.join(sorted(known))}")
    return known[name]


def has_records(run: TrainingRun, observer: str | None) -> bool:
    """Whether any epoch of the run carries ``observer``'s data (α: always)."""
    return observer is None or any(observer in entry.get("observers", {}) for entry in run.record["epochs"])


def trajectories(run: TrainingRun, name: str) -> list[Trajectories]:
    """The trajectories of quantity ``name`` in ``run``; a run without its observer's records is one clear error."""
    observer, quantity = quantity_named(name)
    if observer is None:
        records = [(entry["epoch"], entry["alpha_softmax"]) for entry in run.record["epochs"]]
    else:
        records = [(entry["epoch"], entry["observers"][observer]) for entry in run.record["epochs"]
                   if observer in entry.get("observers", {})]
        if not records:
            raise SelbenchError(
                f"{run.record_path} has no records of {name!r}: the {observer!r} plugin's training observer writes "
                f"them during `selbench train`; train again into a new --out with that plugin installed and not "
                f"listed in SELBENCH_DISABLE_PLUGINS")
    return quantity.extract(records, run.layout, run.alpha_split)


def summary_rows(run: TrainingRun, quantity: ObservedQuantity,
                 built: Sequence[Trajectories]) -> Iterator[list[Any]]:
    """Rows (split, cell type, edge group, edges, first epoch, last epoch, mean at both[, edges < 0 at both]).

    ``built``: the quantity's trajectories.  The counts of edges below zero are given for
    signed quantities (for ``costs``: the edges the wiring derivation would keep, before dead
    nodes are pruned).
    """
    for trajectory in built:
        for group in GROUPS:
            edges = run.layout.group(group)
            first, last = trajectory.values[0, edges], trajectory.values[-1, edges]
            row = [trajectory.split or "-", trajectory.cell_type, group, len(edges), trajectory.epochs[0],
                   trajectory.epochs[-1], f"{first.mean():+.4g}", f"{last.mean():+.4g}"]
            if quantity.signed:
                row += [int((first < 0).sum()), int((last < 0).sum())]
            yield row


def summary_headers(quantity: ObservedQuantity) -> Sequence[str]:
    headers = ["split", "cell", "edges", "n", "first", "last", "mean first", "mean last"]
    return headers + (["< 0 first", "< 0 last"] if quantity.signed else [])
