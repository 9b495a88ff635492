"""Cost sign (Xie, Hu et al., AISTATS 2021): keep the ops whose presence lowers the loss.

Every op output on an edge is scaled by its mixing weight m (softmax(α) in DARTS), so the
loss is a function of all the m.  The *cost* of op o on edge e is

    C(e, o) = (∂L/∂m_{e,o}) · m_{e,o},

the batch-mean cross-entropy gradient times the weight, averaged over batches.  To first
order, removing the op (m → 0) changes the loss by −C: a negative cost means the op helps,
so it "wins" over ``none``.  ``none`` outputs zeros whatever its weight, so its gradient,
and with it its cost, is exactly 0; it is set to 0 explicitly so that a non-finite
activation (0 · inf) cannot turn it into NaN.  Cells of one type share one weight tensor,
so the gradient is summed over those cells.

Two derivations turn costs into a cell:

* ``top2`` (DARTS-comparable): the space's own rule on −C — per node, the two edges with
  the most negative cost among ops other than ``none``, each with that op;
* ``wiring`` (the paper's): every edge whose best op has a negative cost is kept, with that
  op, so nodes have any number of inputs.  A node left without inputs is dead: it leaves
  the concat and the edges it would feed are dropped.  A cell type with no live node is a
  failed selection ("no edge selected"), the catastrophic outcome the paper reports for
  costs measured on held-out data.

``Selection.scores`` holds −C (larger = more important: the first-order loss increase
when the op is removed).

The plugin also registers a training observer, ``cost-sign``: during `selbench train` it
records, per epoch, the mean per-step cost per (cell type, edge, op) for each split a step
learned from (``train``: θ's steps; ``valid``: the α steps of bi-level search), so that the
paper's cost dynamics can be followed: it declares the quantity ``costs`` (per edge, the most
negative non-``none`` mean cost), which ``selbench analyze RUN --plot costs`` draws.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selbench import (
    NONE_OP,
    Batch,
    EdgeLayout,
    ObservedQuantity,
    Option,
    SearchSpace,
    SelbenchError,
    Selection,
    SelectionContext,
    Selector,
    Supernet,
    TrainingObserver,
    Trajectories,
    batchnorm_mode,
    hookimpl,
)

SPLITS = ("train", "valid")


# -- the cost ----------------------------------------------------------------------------------
def cost_from_gradients(weights: Mapping[str, Tensor], grads: Mapping[str, Tensor],
                        ops: Sequence[str]) -> dict[str, Tensor]:
    """C = (∂L/∂m) ⊙ m per cell type, for one step; the column of ``none`` in ``ops`` is exactly 0."""
    none_columns = [k for k, op in enumerate(ops) if op == NONE_OP]
    costs = {}
    for cell_type, weight in weights.items():
        cost = grads[cell_type].detach() * weight.detach()
        for k in none_columns:  # a plain column fill: no index tensor to copy to the device every step
            cost[:, k] = 0.0
        costs[cell_type] = cost
    return costs


def op_costs(supernet: nn.Module, batches: Iterable[Batch],
             weights: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Mean over ``batches`` of the per-batch cost C = (∂L/∂m) ⊙ m, cell type -> ``Tensor[E, O]``.

    ``weights`` gives the mixing weights m at which to measure (cell types left out: softmax(α)).
    Only the gradient w.r.t. m is computed; θ's ``.grad`` is untouched.  The supernet is used
    in its current train/eval mode (in train mode BatchNorm uses batch statistics and updates
    its running ones).  Each batch counts once, as a training step would.
    """
    net = cast(Supernet, supernet)  # nn.Module types a module's attributes as Tensor | Module
    point = {cell_type: F.softmax(alpha.detach(), dim=-1) for cell_type, alpha in net.alphas.items()}
    point.update({cell_type: w.detach() for cell_type, w in (weights or {}).items()})
    point = {cell_type: w.clone().requires_grad_(True) for cell_type, w in point.items()}
    cell_types = list(point)
    ops = net.space.ops
    total: dict[str, Tensor] | None = None
    count = 0
    for images, labels in batches:
        loss = F.cross_entropy(supernet(images, point), labels)
        found = torch.autograd.grad(loss, [point[c] for c in cell_types], allow_unused=True)
        # a cell type the loss does not use has no gradient: zero
        grads = {c: torch.zeros_like(point[c]) if g is None else g for c, g in zip(cell_types, found)}
        cost = cost_from_gradients(point, grads, ops)
        total = cost if total is None else {c: total[c] + cost[c] for c in cell_types}
        count += 1
    if total is None:
        raise SelbenchError("cost-sign: the data split produced no batches to measure costs on")
    return {c: t / count for c, t in total.items()}


class EpochCosts:
    """One epoch of the cost observer: per split, the sum of per-step costs and the number of steps."""

    def __init__(self, space: SearchSpace):
        self.ops = space.ops
        self.sums: dict[str, dict[str, Tensor]] = {}
        self.steps: dict[str, int] = {}

    def step(self, split: str, weights: Mapping[str, Tensor], grads: Mapping[str, Tensor] | None) -> None:
        if grads is None:  # the observer sets needs_gradients, so the training loop always passes them
            raise SelbenchError("cost-sign: the training loop passed no gradients ∂L/∂m to the cost observer")
        cost = cost_from_gradients(weights, grads, self.ops)
        sums = self.sums.setdefault(split, {})
        for cell_type, value in cost.items():
            sums[cell_type] = sums[cell_type] + value if cell_type in sums else value
        self.steps[split] = self.steps.get(split, 0) + 1

    def result(self) -> dict[str, dict]:
        """``{"mean_cost": {split: {cell type: [E][O]}}, "steps": {split: n}}`` (tensors, sent to the host later)."""
        mean = {split: {cell_type: total / self.steps[split] for cell_type, total in sums.items()}
                for split, sums in self.sums.items()}
        return {"mean_cost": mean, "steps": dict(self.steps)}


def cost_trajectories(records: Sequence[tuple[int, Mapping]], layout: EdgeLayout,
                      alpha_split: str | None) -> list[Trajectories]:
    """Per split and cell type, the most negative non-``none`` mean cost of every edge in every epoch.

    ``records``: (epoch, what :class:`EpochCosts` stored); the split α learns from comes first.
    """
    recorded = [(epoch, result["mean_cost"]) for epoch, result in records]
    splits = sorted({split for _, costs in recorded for split in costs}, key=lambda s: (s != alpha_split, s))
    out = []
    for split in splits:
        for cell_type in layout.cell_types:
            rows = [(epoch, costs[split][cell_type]) for epoch, costs in recorded if split in costs]
            values = torch.tensor([table for _, table in rows], dtype=torch.float64)[:, :, layout.real_ops]
            out.append(Trajectories(cell_type, split, [epoch for epoch, _ in rows], values.amin(dim=-1)))
    return out


COSTS = ObservedQuantity("costs", "most negative mean cost (∂L/∂m)·m", cost_trajectories, signed=True)

COST_OBSERVER = TrainingObserver(
    name="cost-sign",
    new_epoch=EpochCosts,
    needs_gradients=True,
    description="per-epoch mean cost (∂L/∂m)·m per cell type, edge and op, per split",
    quantities=(COSTS,),
)

# -- the derivations ---------------------------------------------------------------------------
def top2_selection(space: SearchSpace, costs: Mapping[str, Tensor]) -> Selection:
    """The space's DARTS rule on −C: most negative cost first, ``none`` never chosen."""
    scores = {cell_type: -cost for cell_type, cost in costs.items()}
    return Selection(genotype=space.genotype_from_scores(scores), scores=scores, variable_in_degree=False)


def wiring_selection(space: SearchSpace, costs: Mapping[str, Tensor]) -> Selection:
    """Every edge whose best op (most negative cost, ``none`` excluded) has C < 0, dead nodes pruned.

    In a space without pruning (``in_degree`` None, NAS-Bench-201) every edge keeps one op and
    "no op wins" means ``none`` (cost 0) wins: that is the space's own rule on −C, as for ``top2``.
    """
    if space.in_degree is None:
        return top2_selection(space, costs)
    scores = {cell_type: -cost for cell_type, cost in costs.items()}
    choices = {cell_type: _negative_cost_edges(space, cost) for cell_type, cost in costs.items()}
    empty = [cell_type for cell_type in space.cell_types if not choices[cell_type]]
    if empty:
        failure = "; ".join(f"no edge selected in the {cell_type} cell" for cell_type in empty)
        return Selection(genotype=None, scores=scores, failure=failure, variable_in_degree=True)
    return Selection(genotype=space.genotype_from_choices(choices), scores=scores, variable_in_degree=True)


def _negative_cost_edges(space: SearchSpace, cost: Tensor) -> dict[int, str]:
    """``{edge: op}`` for the edges whose best selectable op has a negative cost and a live source.

    Nodes are visited in order and edges only go forward, so one pass reaches the fixed point
    of "drop edges out of dead nodes, then nodes left without inputs die".
    """
    table = cost.detach().to("cpu", torch.float64)
    selectable = list(space.selectable_ops)
    best_cost, best_pos = table[:, selectable].min(dim=1)  # ties: the lower op index, like DARTS
    live = set(range(space.num_input_nodes))
    chosen = {}
    for dst in space.nodes:
        for edge in space.edges_into(dst):
            if edge.src in live and best_cost[edge.index] < 0:
                chosen[edge.index] = space.ops[selectable[int(best_pos[edge.index])]]
                live.add(dst)
    return chosen


DERIVATIONS = {"top2": top2_selection, "wiring": wiring_selection}


# -- the selector ------------------------------------------------------------------------------
def measurement_split(ctx: SelectionContext) -> str:
    """The ``split`` option, ``auto`` resolved to the split the supernet's α was trained on."""
    split = ctx.options["split"]
    if split != "auto":
        return split
    trained_on = getattr(ctx.supernet, "metadata", {}).get("alpha_split")
    if trained_on is None:  # frozen α or a foreign checkpoint: held-out data, as bi-level DARTS
        return "valid"
    if trained_on not in SPLITS:
        raise SelbenchError(f"cost-sign: the checkpoint says α was trained on {trained_on!r}, not one of "
                            f"{', '.join(SPLITS)}; pass split=train or split=valid")
    return trained_on


def select_by_cost_sign(ctx: SelectionContext) -> Selection:
    split = measurement_split(ctx)
    limit = ctx.options["batches"] or None

    def counted(batches: Iterable[Batch]) -> Iterable[Batch]:
        for batch in batches:
            yield batch
            ctx.count("forward_passes")
            ctx.count("backward_passes")
            ctx.count(f"cost_batches_{split}")

    with batchnorm_mode(ctx.supernet, ctx.options["bn"]):
        costs = op_costs(ctx.supernet, counted(ctx.batches(split, limit, progress=f"cost on {split}")))
    return DERIVATIONS[ctx.options["derive"]](ctx.space, costs)


COST_SIGN = Selector(
    name="cost-sign",
    run=select_by_cost_sign,
    options={
        "derive": Option("top2", "top2: two most negative-cost edges per node (DARTS-comparable); "
                                 "wiring: every edge whose best op has negative cost", choices=tuple(DERIVATIONS)),
        "split": Option("auto", "data the cost is measured on; auto: the split α was trained on "
                                "(train for single-level, valid for bi-level and unknown)", choices=("auto", *SPLITS)),
        "batches": Option(0, "batches to average over (0 = the whole split)", minimum=0),
        "bn": Option("train", "BatchNorm statistics: train (batch) or eval (running); see selbench.batchnorm_mode",
                     choices=("train", "eval")),
    },
    needs_data=True,
    description="Cost sign (Xie, Hu et al. 2021): keep ops whose (∂L/∂m)·m is negative",
    variable_in_degree=True,
)


@hookimpl
def selbench_register_selectors(register) -> None:
    register(COST_SIGN)


@hookimpl
def selbench_register_training_observers(register) -> None:
    register(COST_OBSERVER)
