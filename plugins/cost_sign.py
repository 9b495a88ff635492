"""Cost sign (Xie, Hu et al., AISTATS 2021): keep the ops whose presence lowers the loss.

Every op output on an edge is scaled by its mixing weight m (softmax(α) in DARTS, a sample
Z in SNAS / DSNAS), so the loss is a function of all the m.  The *cost* of op o on edge e is

    C(e, o) = (∂L/∂m_{e,o}) · m_{e,o},

the batch-mean cross-entropy gradient times the weight.  To first order, removing the op
(m → 0) changes the loss by −C: a negative cost means the op helps, so it "wins" over
``none``.  ``none`` outputs zeros whatever its weight, so its gradient, and with it its
cost, is exactly 0; it is set to 0 explicitly so that a non-finite activation (0 · inf)
cannot turn it into NaN.  Cells of one type share one weight tensor, so the gradient is
summed over those cells.  Two estimates average it over batches:

* ``mixture`` (the paper's DARTS branch): the mean over batches of C at m = softmax(α);
* ``conditional`` (its SNAS / DSNAS branch): each batch samples one op per edge (one-hot Z,
  only that op computed), and each op's cost is the mean of ∂L/∂Z over the batches where it
  was sampled.  Z is drawn uniformly on a ``uniform-sampling`` supernet, from softmax(α)
  otherwise.  The default is ``conditional`` on stochastic supernets, ``mixture`` on the rest.

Three derivations turn costs (or α) into a cell:

* ``top2`` (DARTS-comparable): the space's own rule on −C — per node, the two edges with
  the most negative cost among ops other than ``none``, each with that op;
* ``wiring`` (the paper's): every edge whose best op has a negative cost is kept, with that
  op, so nodes have any number of inputs.  A node left without inputs is dead: it leaves
  the concat and the edges it would feed are dropped.  A cell type with no live node is a
  failed selection ("no edge selected"), the catastrophic outcome the paper reports for
  costs measured on held-out data;
* ``alpha`` (the reference code's own cell, ``genotype_edge_all``): each edge takes its
  largest-α op, ``none`` included; an edge whose argmax is ``none`` is dropped, dead nodes
  are pruned as in ``wiring``.  The costs are still measured, as the selection's scores.

``Selection.scores`` holds −C (larger = more important: the first-order loss increase
when the op is removed).

The plugin also registers a training observer, ``cost-sign``: during `selbench train` it
records, per epoch and for each split a step learned from (``train``: θ's steps; ``valid``:
the α steps of bi-level search), per (cell type, edge, op): the mean per-step cost
(``mean_cost``), Σ m (``samples``: with one-hot samples, how often each op was sampled) and
ΣC / Σm (``conditional_cost``: with one-hot samples, the mean of ∂L/∂Z over the steps the op
was sampled — the reference's conditional mean; 0 where an op was never sampled).  It
declares the quantity ``costs`` (per edge, the most negative non-``none`` cost — conditional
on stochastic runs, mean otherwise), which ``selbench analyze RUN --plot costs`` draws.
"""
from __future__ import annotations

from functools import partial
from typing import Iterable, Mapping, Sequence, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selbench import (
    NONE_OP,
    STOCHASTIC_MODES,
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
NoneCells = Mapping[str, Sequence[tuple[slice | int, int]]]


def none_cells(space: SearchSpace) -> dict[str, list[tuple[slice | int, int]]]:
    """Where ``none`` sits in each cell type's [E, O] table, found once per run: a whole column where every edge
    has it there (one fill per step), else one (edge, column) entry per edge that offers it."""
    cells: dict[str, list[tuple[slice | int, int]]] = {}
    for cell_type in space.cell_types:
        rows = [space.edge_ops(cell_type, edge.index) for edge in space.edges]
        if all(ops == rows[0] for ops in rows):
            cells[cell_type] = [(slice(None), k) for k, op in enumerate(rows[0]) if op == NONE_OP]
        else:
            cells[cell_type] = [(e, k) for e, ops in enumerate(rows) for k, op in enumerate(ops) if op == NONE_OP]
    return cells


def cost_from_gradients(weights: Mapping[str, Tensor], grads: Mapping[str, Tensor],
                        zeroed: NoneCells) -> dict[str, Tensor]:
    """C = (∂L/∂m) ⊙ m per cell type, for one step; exactly 0 at ``none``'s places (:func:`none_cells`)."""
    costs = {}
    for cell_type, weight in weights.items():
        cost = grads[cell_type].detach() * weight.detach()
        for where in zeroed[cell_type]:  # plain fills: no index tensor to copy to the device every step
            cost[where] = 0.0
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
    zeroed = none_cells(net.space)
    total: dict[str, Tensor] | None = None
    count = 0
    for images, labels in batches:
        loss = F.cross_entropy(supernet(images, point), labels)
        found = torch.autograd.grad(loss, [point[c] for c in cell_types], allow_unused=True)
        # a cell type the loss does not use has no gradient: zero
        grads = {c: torch.zeros_like(point[c]) if g is None else g for c, g in zip(cell_types, found)}
        cost = cost_from_gradients(point, grads, zeroed)
        total = cost if total is None else {c: total[c] + cost[c] for c in cell_types}
        count += 1
    if total is None:
        raise SelbenchError("cost-sign: the data split produced no batches to measure costs on")
    return {c: t / count for c, t in total.items()}


def conditional_mean(cost_sum: Tensor, samples: Tensor) -> Tensor:
    """ΣC / Σm per op, 0 where the op was never sampled (Σm = 0): with one-hot m, the mean of ∂L/∂Z given o sampled."""
    return torch.where(samples > 0, cost_sum / samples.clamp_min(torch.finfo(cost_sum.dtype).tiny),
                       torch.zeros_like(cost_sum))


def sampled_op_costs(supernet: nn.Module, batches: Iterable[Batch], *, uniform: bool,
                     generator: torch.Generator) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(conditional mean cost, times sampled) per cell type over ``batches``, one one-hot sample Z per batch.

    Each batch draws one op per edge (uniformly, or from softmax(α)) with ``generator`` on the
    supernet's device, computes only those ops when the supernet supports ``active``, and takes
    ∂L/∂Z of the batch-mean loss; θ's ``.grad`` is untouched.
    """
    net = cast(Supernet, supernet)
    probs = {c: torch.ones_like(a) if uniform else F.softmax(a.detach(), dim=-1) for c, a in net.alphas.items()}
    cell_types = list(probs)
    zeroed = none_cells(net.space)
    sums: dict[str, Tensor] | None = None
    counts: dict[str, Tensor] | None = None
    for images, labels in batches:
        index = {c: torch.multinomial(p, 1, generator=generator).squeeze(1) for c, p in probs.items()}
        z = {c: F.one_hot(index[c], p.shape[1]).to(p.dtype).requires_grad_() for c, p in probs.items()}
        if hasattr(supernet, "active_ops"):
            chosen = torch.cat(list(index.values())).tolist()  # the modules to run: one copy per batch
            active, start = {}, 0
            for c in cell_types:
                active[c] = [[k] for k in chosen[start:start + len(index[c])]]
                start += len(index[c])
            logits = supernet(images, z, active=active)
        else:
            logits = supernet(images, z)
        found = torch.autograd.grad(F.cross_entropy(logits, labels), [z[c] for c in cell_types], allow_unused=True)
        grads = {c: torch.zeros_like(z[c]) if g is None else g for c, g in zip(cell_types, found)}
        cost = cost_from_gradients(z, grads, zeroed)
        hits = {c: z[c].detach() for c in cell_types}
        sums = cost if sums is None else {c: sums[c] + cost[c] for c in cell_types}
        counts = hits if counts is None else {c: counts[c] + hits[c] for c in cell_types}
    if sums is None or counts is None:
        raise SelbenchError("cost-sign: the data split produced no batches to measure costs on")
    return {c: conditional_mean(sums[c], counts[c]) for c in cell_types}, counts


class EpochCosts:
    """One epoch of the cost observer: per split, the sums of per-step costs and weights, and the number of steps."""

    def __init__(self, space: SearchSpace):
        self.zeroed = none_cells(space)
        self.sums: dict[str, dict[str, Tensor]] = {}
        self.samples: dict[str, dict[str, Tensor]] = {}
        self.one_hot: dict[str, Tensor] = {}  # per split: whether every step's weights were one-hot samples
        self.steps: dict[str, int] = {}

    def step(self, split: str, weights: Mapping[str, Tensor], grads: Mapping[str, Tensor] | None) -> None:
        if grads is None:  # the observer sets needs_gradients, so the training loop always passes them
            raise SelbenchError("cost-sign: the training loop passed no gradients ∂L/∂m to the cost observer")
        cost = cost_from_gradients(weights, grads, self.zeroed)
        sums = self.sums.setdefault(split, {})
        samples = self.samples.setdefault(split, {})
        for cell_type, value in cost.items():
            sums[cell_type] = sums[cell_type] + value if cell_type in sums else value
            weight = weights[cell_type].detach()
            samples[cell_type] = samples[cell_type] + weight if cell_type in samples else weight
            hard = ((weight == 0) | (weight == 1)).all()
            self.one_hot[split] = self.one_hot[split] & hard if split in self.one_hot else hard
        self.steps[split] = self.steps.get(split, 0) + 1

    def result(self) -> dict[str, dict]:
        """``mean_cost``, ``conditional_cost``, ``samples`` (each ``{split: {cell type: [E][O]}}``), ``one_hot``
        and ``steps`` (each ``{split: value}``)."""
        mean = {split: {cell_type: total / self.steps[split] for cell_type, total in sums.items()}
                for split, sums in self.sums.items()}
        conditional = {split: {cell_type: conditional_mean(total, self.samples[split][cell_type])
                               for cell_type, total in sums.items()} for split, sums in self.sums.items()}
        return {"mean_cost": mean, "conditional_cost": conditional, "samples": self.samples,
                "one_hot": dict(self.one_hot), "steps": dict(self.steps)}


def recorded_costs(result: Mapping) -> dict[str, Mapping]:
    """One epoch's cost tables per split: the conditional mean where every step sampled one-hot Z, else the mean."""
    one_hot = result.get("one_hot", {})
    return {split: result["conditional_cost"][split] if one_hot.get(split) else table
            for split, table in result["mean_cost"].items()}


def cost_trajectories(records: Sequence[tuple[int, Mapping]], layout: EdgeLayout,
                      alpha_split: str | None, *, over_ops: str = "min") -> list[Trajectories]:
    """Per split and cell type, the most negative (``over_ops="min"``) or the mean (``"mean"``) non-``none``
    cost of every edge in every epoch.

    ``records``: (epoch, what :class:`EpochCosts` stored); the split α learns from comes first.
    The cost is the conditional mean on one-hot samples, the per-step mean otherwise (:func:`recorded_costs`).
    """
    recorded = [(epoch, recorded_costs(result)) for epoch, result in records]
    splits = sorted({split for _, costs in recorded for split in costs}, key=lambda s: (s != alpha_split, s))
    out = []
    for split in splits:
        for cell_type in layout.cell_types:
            rows = [(epoch, costs[split][cell_type]) for epoch, costs in recorded if split in costs]
            values = torch.tensor([table for _, table in rows], dtype=torch.float64)[:, :, layout.real_ops]
            reduced = values.amin(dim=-1) if over_ops == "min" else values.mean(dim=-1)
            out.append(Trajectories(cell_type, split, [epoch for epoch, _ in rows], reduced))
    return out


COSTS = ObservedQuantity("costs", "most negative cost (∂L/∂m)·m", cost_trajectories, signed=True)
# the wiring paper's growing tendency and width preference are statements about this mean
MEAN_COSTS = ObservedQuantity("mean-costs", "mean cost (∂L/∂m)·m of the non-none ops",
                              partial(cost_trajectories, over_ops="mean"), signed=True)

COST_OBSERVER = TrainingObserver(
    name="cost-sign",
    new_epoch=EpochCosts,
    needs_gradients=True,
    description="per-epoch cost (∂L/∂m)·m per cell type, edge and op, per split: mean, conditional on sampling",
    quantities=(COSTS, MEAN_COSTS),
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
    choices = {cell_type: _negative_cost_edges(space, cell_type, cost) for cell_type, cost in costs.items()}
    return _variable_in_degree(choices, space, costs)


def alpha_selection(space: SearchSpace, costs: Mapping[str, Tensor], alphas: Mapping[str, Tensor]) -> Selection:
    """The reference's cell: each edge its largest-α op (first on ties), ``none`` included; ``none`` drops the edge.

    Dead nodes are pruned as in :func:`wiring_selection`; in a space without pruning ``none`` is an op like any other.
    """
    if space.in_degree is None:
        scores = {cell_type: -cost for cell_type, cost in costs.items()}
        genotype = space.genotype_from_scores({c: a.detach() for c, a in alphas.items()})
        return Selection(genotype=genotype, scores=scores, variable_in_degree=False)
    choices = {}
    for cell_type, alpha in alphas.items():
        best = alpha.detach().to("cpu", torch.float64).argmax(dim=1).tolist()
        named = {edge: space.edge_ops(cell_type, edge)[k] for edge, k in enumerate(best)}
        keep = {edge: op for edge, op in named.items() if op != NONE_OP}
        choices[cell_type] = _live_edges(space, keep)
    return _variable_in_degree(choices, space, costs)


def _variable_in_degree(choices: Mapping[str, Mapping[int, str]], space: SearchSpace,
                        costs: Mapping[str, Tensor]) -> Selection:
    """The cell of ``choices`` ({cell type: {edge: op}}), or the failure "no edge selected" for an empty cell type."""
    scores = {cell_type: -cost for cell_type, cost in costs.items()}
    empty = [cell_type for cell_type in space.cell_types if not choices[cell_type]]
    if empty:
        failure = "; ".join(f"no edge selected in the {cell_type} cell" for cell_type in empty)
        return Selection(genotype=None, scores=scores, failure=failure, variable_in_degree=True)
    return Selection(genotype=space.genotype_from_choices(choices), scores=scores, variable_in_degree=True)


def _negative_cost_edges(space: SearchSpace, cell_type: str, cost: Tensor) -> dict[int, str]:
    """``{edge: op}`` for the edges whose best selectable op has a negative cost and a live source."""
    table = cost.detach().to("cpu", torch.float64)
    keep = {}
    for edge in range(space.num_edges):
        selectable = list(space.edge_selectable(cell_type, edge))
        best_cost, best_pos = table[edge, selectable].min(dim=0)  # ties: the lower op index, like DARTS
        if best_cost < 0:
            keep[edge] = space.edge_ops(cell_type, edge)[selectable[int(best_pos)]]
    return _live_edges(space, keep)


def _live_edges(space: SearchSpace, keep: Mapping[int, str]) -> dict[int, str]:
    """The edges of ``keep`` ({edge: op}) whose source node is live.

    Nodes are visited in order and edges only go forward, so one pass reaches the fixed point
    of "drop edges out of dead nodes, then nodes left without inputs die".
    """
    live = set(range(space.num_input_nodes))
    chosen = {}
    for dst in space.nodes:
        for edge in space.edges_into(dst):
            if edge.src in live and edge.index in keep:
                chosen[edge.index] = keep[edge.index]
                live.add(dst)
    return chosen


DERIVATIONS = {"top2": top2_selection, "wiring": wiring_selection}
DERIVE_CHOICES = (*DERIVATIONS, "alpha")
ESTIMATES = ("auto", "conditional", "mixture")


# -- the selector ------------------------------------------------------------------------------
def measurement_split(ctx: SelectionContext) -> str:
    """The ``split`` option, ``auto`` resolved to the split the supernet's α was trained on."""
    split = ctx.options["split"]
    if split != "auto":
        return split
    metadata = getattr(ctx.supernet, "metadata", {})
    trained_on = metadata.get("alpha_split")
    if metadata.get("mode") == "uniform-sampling":  # α unused; the reference measures on training batches
        return "train"
    if trained_on is None:  # frozen α or a foreign checkpoint: held-out data, as bi-level DARTS
        return "valid"
    if trained_on not in SPLITS:
        raise SelbenchError(f"cost-sign: the checkpoint says α was trained on {trained_on!r}, not one of "
                            f"{', '.join(SPLITS)}; pass split=train or split=valid")
    return trained_on


def cost_estimate(ctx: SelectionContext) -> str:
    """The ``estimate`` option, ``auto`` resolved: ``conditional`` on a stochastic supernet, else ``mixture``."""
    estimate = ctx.options["estimate"]
    if estimate != "auto":
        return estimate
    return "conditional" if getattr(ctx.supernet, "metadata", {}).get("mode") in STOCHASTIC_MODES else "mixture"


def select_by_cost_sign(ctx: SelectionContext) -> Selection:
    split = measurement_split(ctx)
    limit = ctx.options["batches"] or None

    def counted(batches: Iterable[Batch]) -> Iterable[Batch]:
        for batch in batches:
            yield batch
            ctx.count("forward_passes")
            ctx.count("backward_passes")
            ctx.count(f"cost_batches_{split}")

    batches = counted(ctx.batches(split, limit, progress=f"cost on {split}"))
    with batchnorm_mode(ctx.supernet, ctx.options["bn"]):
        if cost_estimate(ctx) == "conditional":
            uniform = getattr(ctx.supernet, "metadata", {}).get("mode") == "uniform-sampling"
            generator = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
            costs, samples = sampled_op_costs(ctx.supernet, batches, uniform=uniform, generator=generator)
            ctx.count("unsampled_ops", int(sum((count == 0).sum() for count in samples.values())))
        else:
            costs = op_costs(ctx.supernet, batches)
    if ctx.options["derive"] == "alpha":
        return alpha_selection(ctx.space, costs, cast(Supernet, ctx.supernet).alphas)
    return DERIVATIONS[ctx.options["derive"]](ctx.space, costs)


COST_SIGN = Selector(
    name="cost-sign",
    run=select_by_cost_sign,
    options={
        "derive": Option("top2", "top2: two most negative-cost edges per node (DARTS-comparable); "
                                 "wiring: every edge whose best op has negative cost (the paper's rule); "
                                 "alpha: argmax α per edge, none included (the reference code's cell)",
                         choices=DERIVE_CHOICES),
        "estimate": Option("auto", "conditional: mean ∂L/∂Z over batches where the op was sampled (one-hot Z); "
                                   "mixture: mean (∂L/∂m)·m at m = softmax(α); auto: conditional on snas, dsnas "
                                   "and uniform-sampling supernets, mixture otherwise", choices=ESTIMATES),
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
