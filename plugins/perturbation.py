"""Perturbation-based selection, DARTS-PT (Wang et al., ICLR 2021).

An op is judged by what the supernet loses without it, not by the size of its α.

* **Op decision** for edge e (undecided edges visited in a random order, drawn as DARTS-PT
  draws it: numpy's ``RandomState(seed)``, one uniform draw per event and cell type, normal
  before reduce): for each candidate op o, zero its mixing weight, w[e, o] = 0, without
  renormalising the row (edges already decided keep their one-hot rows, undecided ones
  softmax(α)), and measure the supernet on the validation split with BatchNorm using batch
  statistics.  The edge is fixed one-hot to ``o* = argmin_o acc(w[e, o] = 0)``: the op whose
  removal hurts most; ties go to the lower op index.  Ops that no valid cell may use
  (``none`` in DARTS) are not candidates.
* **Topology decision** (spaces with a fixed in-degree, i.e. DARTS): for a node with more
  than ``in_degree`` candidate inputs (nodes visited in random order), drop input edges one
  round at a time until ``in_degree`` remain: each round measures every remaining input
  with only that edge's row zeroed and drops the one whose removal leaves the *highest*
  accuracy.  ``edge_greedy=reference`` (default, DARTS-PT's rule): edges dropped earlier at
  the node stay active until the node is finished, ties drop the *last* tied edge;
  ``cumulative``: a dropped edge is zeroed at once, ties drop the first.  Spaces without a
  topology rule (NAS-Bench-201) skip this step and ``none`` is a candidate op like any other.
* **Measurements** (``measure_data=augmented``, default, as DARTS-PT's projection queue): each
  is a fresh, reshuffled pass over the validation split under the *training* augmentation
  (crop, flip), drawn from a generator seeded with the selection seed on the data's device;
  ``fixed``: the same unaugmented batches every time — less noisy, not the reference.
* **Schedule**: one decision event per edge, then one per prunable node; each event decides
  for every cell type.  Between consecutive events the supernet is fine-tuned for
  ``proj_intv`` epochs (see :meth:`selbench.SelectionContext.finetune`: one SGD for θ at the
  recipe's search lr / 10 kept for the whole selection, α continuing the checkpoint's Adam
  unless ``tune_alphas=false``; α steps on augmented validation batches when measurements
  are).  DARTS-PT also tunes once more after the last event; that cannot change the
  genotype and is skipped.

With ``crit=loss`` the quality of a supernet is its negative validation loss.

``Selection.scores[cell][e, o]`` is, without ``base_pass``, how bad the supernet is without
op o on edge e — its validation error (``crit=acc``) or loss (``crit=loss``) — measured just
before e was decided: larger = removing o hurts more.  With ``base_pass=true`` (one more pass
per decision, which DARTS-PT does not take) it is the quality *drop* against the unperturbed
supernet.  Ops that are not candidates score 0, since removing ``none`` changes nothing.
Removals in the topology step compare edges, not ops, so they are not in ``scores``; every
decision, with its measurements and the visit order, is logged at DEBUG level on this
module's logger (the record's ``perturbation`` attribute holds it as a dict).

Cost in validation passes per cell type: for each edge its candidate ops (+ 1 with
``base_pass``), plus for each prunable node with k inputs k + (k - 1) + ... + (in_degree + 1).
DARTS-PT's 7-op DARTS space: 14 × 7 + 22 = 120 per cell type, 240 in all, as the paper.

The fast implementation tells a supernet that offers ``active_ops`` (see
:class:`selbench.Supernet`) which ops have non-zero weight, known on the host from the
decisions: decided edges compute only their op, removed edges nothing, and the op under
test is skipped; measurements and fine-tuning go unchanged otherwise, so the decisions are
those of ``implementation=reference``, which computes every op as DARTS-PT does.
``implementation=batched`` (the default) goes further: the candidates of one decision (an
edge's ops, or a node's inputs in one round) are measured together, one vectorised pass per
batch with the mixing weights stacked (:meth:`selbench.SelectionContext.evaluate_each`); each candidate
still gets its own fresh augmented pass, drawn in the sequential order, and its own
BatchNorm statistics, so the scores are those of one pass each up to float rounding.

``precision=bf16`` runs the forward passes of measurements and fine-tuning under bf16 autocast
(θ, α and the optimisers' states stay fp32; :func:`selbench.autocast`).  A measurement compares
accuracies of whole validation passes, which bf16 logits rarely change, but near-ties between
ops may resolve differently than in fp32.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, ContextManager, Mapping, NamedTuple, Protocol, Sequence, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from selbench import (
    PRECISIONS,
    Option,
    SearchSpace,
    Selection,
    SelectionContext,
    Selector,
    Supernet,
    check_precision,
    hookimpl,
)

log = logging.getLogger(__name__)

ActiveOps = tuple[tuple[int, ...], ...]


class Removal(NamedTuple):
    """What one measurement takes out: op ``op`` of ``edge`` in ``cell_type``, the whole edge when ``op`` is None,
    nothing when ``edge`` is None."""

    cell_type: str | None
    edge: int | None
    op: int | None = None


UNPERTURBED = Removal(None, None)


class OffersActiveOps(Protocol):
    """A supernet with the optional ``active_ops`` of :class:`selbench.Supernet`."""

    def active_ops(self, active: Mapping[str, ActiveOps]) -> ContextManager[None]: ...

OPTIONS = {
    "edge_order": Option("random", "order of visiting undecided edges and prunable nodes: random (numpy's "
                         "RandomState(seed), drawn in DARTS-PT's call order) or fixed (by index)", ("random", "fixed")),
    "crit": Option("acc", "what judges a removal: validation accuracy or validation loss", ("acc", "loss")),
    "measure_data": Option("augmented", "batches of a measurement: augmented (a reshuffled pass of the valid split "
                           "under the training crop/flip, fresh each measurement, as DARTS-PT) or fixed (the same "
                           "unaugmented batches every time: less noise, not the reference)", ("augmented", "fixed")),
    "valid_batches": Option(0, "validation batches per measurement; 0 = the whole validation split", minimum=0),
    "bn": Option("train", "BatchNorm during measurements: batch statistics (train, as DARTS-PT) or running "
                 "statistics (eval)", ("train", "eval")),
    "edge_greedy": Option("reference", "topology step: reference (each round zeroes only the edge under test; edges "
                          "dropped at the node stay active until it is finished; ties drop the last edge, as "
                          "DARTS-PT) or cumulative (each dropped edge is zeroed at once; ties drop the first)",
                          ("reference", "cumulative")),
    "base_pass": Option(False, "also measure the unperturbed supernet before each op decision (one more pass per "
                        "edge, not in DARTS-PT) so that scores are drops relative to it"),
    "proj_intv": Option(5, "fine-tuning epochs between decision events; 0 = no fine-tuning", minimum=0),
    "tune_alphas": Option(True, "keep training α while fine-tuning (false: frozen α, DARTS-PT's variant)"),
    "implementation": Option("batched", "batched: the candidates of one decision measured together in one "
                             "vectorised pass (torch.func.vmap), ops of zero weight skipped on supernets that offer "
                             "active_ops; fast: as batched, one pass per candidate; reference: every op computed, "
                             "one pass per candidate (same decisions, for benchmarks)",
                             ("batched", "fast", "reference")),
    "precision": Option("fp32", "forward passes of measurements and fine-tuning: fp32 (DARTS-PT) or bf16 autocast "
                        "(weights stay fp32)", PRECISIONS),
}


class CellProjection:
    """The decisions made so far in one cell type, as mixing weights and as the ops worth computing."""

    def __init__(self, num_edges: int, num_ops: int, device: torch.device):
        self.num_edges, self.num_ops, self.device = num_edges, num_ops, device
        self.chosen: dict[int, int] = {}
        self.removed: set[int] = set()
        self._refresh()

    def fix_op(self, edge: int, op: int) -> None:
        self.chosen[edge] = op
        self._refresh()

    def remove_edge(self, edge: int) -> None:
        self.removed.add(edge)
        self._refresh()

    def _refresh(self) -> None:
        """Rebuild the fixed rows on the device once per decision, never per forward."""
        fixed = torch.zeros(self.num_edges, dtype=torch.bool)
        rows = torch.zeros(self.num_edges, self.num_ops)
        for edge, op in self.chosen.items():
            fixed[edge] = True
            rows[edge, op] = 1.0
        for edge in self.removed:
            fixed[edge] = True
            rows[edge] = 0.0
        self._fixed = fixed.to(self.device)[:, None]
        self._rows = rows.to(self.device)

    def weights(self, alpha: Tensor) -> Tensor:
        """Mixing weights: one-hot rows for decided edges, zero rows for removed ones, softmax(α) elsewhere."""
        return torch.where(self._fixed, self._rows.to(alpha.dtype), F.softmax(alpha, dim=-1))

    def active(self) -> ActiveOps:
        """Per edge, the ops whose weight is not zero."""
        every_op = tuple(range(self.num_ops))
        return tuple(() if edge in self.removed else (self.chosen[edge],) if edge in self.chosen else every_op
                     for edge in range(self.num_edges))

    def undecided(self) -> list[int]:
        return [edge for edge in range(self.num_edges) if edge not in self.chosen]


class PerturbationSelector:
    """One run of DARTS-PT on the supernet of ``ctx``."""

    def __init__(self, ctx: SelectionContext):
        self.ctx = ctx
        self.options = ctx.options
        self.precision = self.options["precision"]
        check_precision(self.precision, ctx.device, "perturbation option precision")
        self.space: SearchSpace = ctx.space
        self.supernet = ctx.supernet
        self.fast = self.options["implementation"] in ("fast", "batched") and hasattr(self.supernet, "active_ops")
        self.batched = self.options["implementation"] == "batched"
        self.cells = {cell_type: CellProjection(self.space.num_edges, self.space.num_ops, ctx.device)
                      for cell_type in self.space.cell_types}
        self.scores = {cell_type: torch.zeros(self.space.num_edges, self.space.num_ops)
                       for cell_type in self.space.cell_types}
        self.prunable = self._prunable_nodes()
        self.unpruned = {cell_type: list(self.prunable) for cell_type in self.space.cell_types}
        self.order = np.random.RandomState(ctx.seed)  # DARTS-PT draws its visit order from numpy's global RNG
        self.augmented = self.options["measure_data"] == "augmented"

    def run(self) -> Selection:
        events: list[Callable[[str], None]] = [self.decide_op] * self.space.num_edges
        events += [self.prune_node] * len(self.prunable)
        self.ctx.count("finetune_steps", 0)
        for event_index, event in enumerate(events):
            if event_index:
                self.finetune()
            for cell_type in self.space.cell_types:
                event(cell_type)
            self.ctx.progress("perturbation decisions", event_index + 1, len(events))
        return Selection(genotype=self.space.genotype_from_choices(self._choices()), scores=self.scores)

    # -- decisions -------------------------------------------------------------------------
    def decide_op(self, cell_type: str) -> None:
        """Fix the next edge to the op whose removal lowers the supernet's quality most."""
        cell = self.cells[cell_type]
        edge = self._pick(cell.undecided())
        ops = list(self.space.edge_selectable(cell_type, edge))
        removals = [Removal(cell_type, edge, op) for op in ops]
        measured = self.measure([UNPERTURBED, *removals] if self.options["base_pass"] else removals)
        base = measured.pop(0) if self.options["base_pass"] else None
        quality = dict(zip(ops, measured))
        chosen = min(quality, key=quality.__getitem__)  # first minimum: lower op index on ties
        for op, value in quality.items():
            self.scores[cell_type][edge, op] = base - value if base is not None else self._badness(value)
        cell.fix_op(edge, chosen)
        name = self.space.edge_ops(cell_type, edge)[chosen]
        self._trace(f"{cell_type} cell: edge {edge} takes {name}", cell=cell_type, decision="op",
                    edge=edge, op=name, base=base, without_op=quality)

    def prune_node(self, cell_type: str) -> None:
        """Remove a node's input edges one by one, always the one the supernet misses least.

        ``edge_greedy=reference``: every round measures each remaining input with only that
        edge zeroed (edges dropped earlier at this node stay active until the node is done) and
        ties drop the last edge; ``cumulative``: a dropped edge is zeroed at once, ties drop the first.
        """
        cell = self.cells[cell_type]
        node = self._pick(self.unpruned[cell_type])
        self.unpruned[cell_type].remove(node)
        inputs = [edge.index for edge in self.space.edges_into(node)]
        in_degree = self.space.in_degree
        assert in_degree is not None, "a space without a fixed in-degree has no prunable nodes"
        cumulative = self.options["edge_greedy"] == "cumulative"
        dropped_here: list[int] = []
        while len(inputs) > in_degree:
            quality = dict(zip(inputs, self.measure([Removal(cell_type, edge) for edge in inputs])))
            best = max(quality.values())
            tied = [edge for edge in inputs if quality[edge] == best]
            dropped = tied[0] if cumulative else tied[-1]
            if cumulative:
                cell.remove_edge(dropped)
            else:
                dropped_here.append(dropped)
            inputs.remove(dropped)
            self._trace(f"{cell_type} cell: node {node} loses edge {dropped}", cell=cell_type, decision="remove-edge",
                        node=node, edge=dropped, without_edge=quality)
        for edge in dropped_here:
            cell.remove_edge(edge)

    def measure(self, removals: Sequence[Removal]) -> list[float]:
        """Quality (accuracy, or negative loss) of the projected supernet under each of ``removals``.

        With ``implementation=batched`` the removals are measured together in one vectorised
        pass (:meth:`selbench.SelectionContext.evaluate_each`, the same numbers as one pass each).
        """
        settings = dict(limit=self.options["valid_batches"] or None, bn=self.options["bn"],
                        augmented=self.augmented, precision=self.precision)
        projected = self._weights(detach=True), self._active()
        if self.batched:
            with self._computing(projected[1]):  # every candidate's active ops are among these
                results = self.ctx.evaluate_each([self._removed(removal, *projected)[0] for removal in removals],
                                                 **settings)
        else:
            results = []
            for removal in removals:
                weights, active = self._removed(removal, *projected)
                with self._computing(active):
                    results.append(self.ctx.evaluate(weights, **settings))
        self.ctx.count("supernet_evaluations", len(removals))
        return [accuracy if self.options["crit"] == "acc" else -loss for accuracy, loss in results]

    @staticmethod
    def _removed(removal: Removal, weights: Mapping[str, Tensor],
                 active: Mapping[str, ActiveOps]) -> tuple[dict[str, Tensor], dict[str, ActiveOps]]:
        """The projected supernet's mixing ``weights`` and computed ops ``active`` without ``removal`` (copies)."""
        weights, active = dict(weights), dict(active)
        cell_type, edge, op = removal
        if edge is None:
            return weights, active
        assert cell_type is not None, "an edge is measured in its cell type"
        weights[cell_type] = weights[cell_type].clone()
        ops = list(active[cell_type])
        if op is None:
            weights[cell_type][edge] = 0.0
            ops[edge] = ()
        else:
            weights[cell_type][edge, op] = 0.0
            ops[edge] = tuple(k for k in ops[edge] if k != op)
        active[cell_type] = tuple(ops)
        return weights, active

    # -- fine-tuning -----------------------------------------------------------------------
    def finetune(self) -> None:
        """``proj_intv`` epochs of the harness's loop under the current projection."""
        with self._computing(self._active()):
            self.ctx.finetune(self.options["proj_intv"], weights=self._weights,
                              train_alphas=self.options["tune_alphas"], augmented_valid=self.augmented,
                              precision=self.precision)

    # -- helpers ---------------------------------------------------------------------------
    def _weights(self, detach: bool = False) -> dict[str, Tensor]:
        alphas = cast(Supernet, self.supernet).alphas  # nn.Module types a module's attributes as Tensor | Module
        return {name: cell.weights(alphas[name].detach() if detach else alphas[name])
                for name, cell in self.cells.items()}

    def _active(self) -> dict[str, ActiveOps]:
        return {name: cell.active() for name, cell in self.cells.items()}

    def _computing(self, active: Mapping[str, ActiveOps]) -> ContextManager:
        return cast(OffersActiveOps, self.supernet).active_ops(active) if self.fast else contextlib.nullcontext()

    def _pick(self, candidates: list[int]) -> int:
        """A uniform draw from the ascending ``candidates`` as DARTS-PT's ``np.random.choice``, or the first."""
        ordered = sorted(candidates)
        return ordered[self.order.randint(0, len(ordered))] if self.options["edge_order"] == "random" else ordered[0]

    def _badness(self, quality: float) -> float:
        """How bad the supernet is at ``quality``: the error rate (crit=acc) or the loss (crit=loss)."""
        return 1.0 - quality if self.options["crit"] == "acc" else -quality

    def _prunable_nodes(self) -> list[int]:
        if self.space.in_degree is None:
            return []
        return [node for node in self.space.nodes if len(self.space.edges_into(node)) > self.space.in_degree]

    def _choices(self) -> dict[str, dict[int, str]]:
        return {cell_type: {edge: self.space.edge_ops(cell_type, edge)[op] for edge, op in cell.chosen.items()
                            if edge not in cell.removed}
                for cell_type, cell in self.cells.items()}

    def _trace(self, message: str, **decision: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(message, extra={"perturbation": decision})


def select_by_perturbation(ctx: SelectionContext) -> Selection:
    return PerturbationSelector(ctx).run()


PERTURBATION = Selector(
    name="perturbation",
    run=select_by_perturbation,
    options=OPTIONS,
    needs_data=True,
    description="DARTS-PT: per edge the op whose removal hurts validation accuracy most; "
                "greedy edge removal per node; fine-tuning between decisions",
)


@hookimpl
def selbench_register_selectors(register) -> None:
    register(PERTURBATION)
