"""Influential magnitude (after Zhang, Huang, Yang, NeurIPS 2022): judge an op by what removing it costs.

The public text gives the idea, not the code; this module implements the following
reconstruction of it.  An op's importance is the change of the supernet's validation loss
when the op is removed, estimated by a second-order Taylor expansion, so it depends on the
op's magnitude *and* on the curvature of the loss.

**Mixing-weight coordinates** (``wrt=weights``, the default).  Every op output on edge e is
scaled by its mixing weight m = softmax(α)[e, o].  Removing op o moves m from m to 0 (the
other weights of the edge stay, as in DARTS-PT's masking), a step δ = −m along one
coordinate, so

    ΔL(e, o) ≈ g·δ + ½·H_oo·δ² = −g·m + ½·H_oo·m²,

with g = ∂L_val/∂m and H_oo the diagonal entry of the Hessian of L_val w.r.t. all mixing
weights (every cell type's [E, O] table, concatenated).

**Logit coordinates** (``wrt=alpha``).  No finite change of α zeroes a softmax weight, so
removal is read as the single-coordinate step on α_o that drives m_o to zero to first order:
since ∂m_j/∂α_o = m_j(δ_jo − m_o), the step δ = −1/(1 − m_o) gives dm_o = −m_o and
dm_j = m_j·m_o/(1 − m_o) for j ≠ o, i.e. the op removed and the edge's other weights
renormalised proportionally.  The same expansion, ΔL ≈ g·δ + ½·H_oo·δ², is then taken along
that step with g = ∂L_val/∂α and H_oo the diagonal of the Hessian w.r.t. α (which includes
the softmax's own curvature).  Because removal renormalises here, ``none`` gets a non-zero
importance in α coordinates; in mixing-weight coordinates it is exactly 0.

``order=first`` keeps only g·δ, ``order=second`` only ½·H_oo·δ², ``full`` both.  The
importance is ΔL itself (larger = removing the op hurts more), and the genotype follows
the space's DARTS rule on it: per node the edges with the largest importance among ops
other than ``none``, each with its most important such op.

**The loss.**  L_val is the mean cross-entropy per validation sample over the first
``valid_batches`` batches (0: the whole split); g and H_oo are the per-sample-weighted means
of the per-batch derivatives, so they are exactly those of the loss that
``SelectionContext.evaluate`` reports for the same batches.  ``bn=train`` (default, as
DARTS-PT scores supernets) normalises with each batch's statistics and leaves the running
statistics untouched; ``bn=eval`` uses the running statistics.

**The Hessian diagonal** comes from Hessian-vector products (forward-over-reverse:
``jvp`` of ``grad`` with ``torch.func``), vectorised with ``vmap`` over ``chunk`` vectors at a
time — memory grows with ``chunk``.  ``hessian=exact`` multiplies by every basis vector,
N = Σ E·O HVPs per batch (224 for DARTS's two 14 × 8 tables); ``hessian=hutchinson``
averages v ⊙ Hv over ``probes`` Rademacher vectors per batch, drawn from the selection seed,
an unbiased estimate of the diagonal.  Counters: ``hvps`` and ``valid_batches``.
"""
from __future__ import annotations

from functools import partial
from itertools import chain
from typing import Callable, Iterable, Iterator, Mapping, Sequence, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from selbench import (
    Batch,
    Option,
    SelbenchError,
    Selection,
    SelectionContext,
    Selector,
    Supernet,
    batchnorm_mode,
    hookimpl,
)

NAME = "influential-magnitude"
ORDERS = ("first", "second", "full")
Loss = Callable[[Tensor], Tensor]

OPTIONS = {
    "order": Option("full", "Taylor terms: first (−g·m), second (½·H·m²) or full (both)", ORDERS),
    "wrt": Option("weights", "coordinates of the expansion: the mixing weights softmax(α) or the logits α",
                  ("weights", "alpha")),
    "hessian": Option("exact", "Hessian diagonal: exact (one HVP per coordinate, vectorised) or hutchinson "
                      "(Rademacher probes)", ("exact", "hutchinson")),
    "probes": Option(64, "Rademacher probes per validation batch for hessian=hutchinson", minimum=1),
    "chunk": Option(16, "Hessian-vector products computed together in one vectorised call (bounds memory)",
                    minimum=1),
    "valid_batches": Option(0, "validation batches to average over; 0 = the whole validation split", minimum=0),
    "bn": Option("train", "BatchNorm in the loss: batch statistics (train, as DARTS-PT) or running "
                 "statistics (eval)", ("train", "eval")),
}


# -- coordinates: every cell type's [E, O] table as one flat vector ----------------------------------
def flatten_tables(tables: Mapping[str, Tensor], cell_types: Sequence[str]) -> Tensor:
    """The tables of ``cell_types``, in that order, concatenated row-major into one vector."""
    return torch.cat([tables[cell_type].reshape(-1) for cell_type in cell_types])


def unflatten_tables(flat: Tensor, like: Mapping[str, Tensor], cell_types: Sequence[str]) -> dict[str, Tensor]:
    """Inverse of :func:`flatten_tables`; ``like`` gives each table's shape."""
    parts = flat.split([like[cell_type].numel() for cell_type in cell_types])
    return {cell_type: part.view(like[cell_type].shape) for cell_type, part in zip(cell_types, parts)}


def batch_loss(supernet: nn.Module, images: Tensor, labels: Tensor, like: Mapping[str, Tensor],
               wrt: str) -> Loss:
    """The batch-mean cross-entropy as a pure function of the flat point (mixing weights or α).

    θ and the buffers enter as detached constants through ``functional_call``, so ``torch.func``
    transforms differentiate w.r.t. the point only.  The supernet's BatchNorm mode is used as set.
    """
    cell_types = list(like)
    frozen = {name: t.detach() for name, t in chain(supernet.named_parameters(), supernet.named_buffers())}

    def loss(point: Tensor) -> Tensor:
        tables = unflatten_tables(point, like, cell_types)
        if wrt == "alpha":
            tables = {cell_type: F.softmax(alpha, dim=-1) for cell_type, alpha in tables.items()}
        logits = functional_call(supernet, frozen, (images,), {"weights": tables})
        return F.cross_entropy(logits, labels)

    return loss


# -- the Hessian diagonal from Hessian-vector products -------------------------------------------
def hessian_vector_products(loss: Loss, point: Tensor, vectors: Tensor) -> Tensor:
    """Row k is H·vectors[k], H the Hessian of ``loss`` at ``point``: forward-over-reverse, vectorised."""
    gradient = grad(loss)
    return vmap(lambda v: jvp(gradient, (point,), (v,))[1])(vectors)


def exact_hessian_diagonal(loss: Loss, point: Tensor, chunk: int) -> Tensor:
    """diag(H) exactly: H·e_i for every basis vector e_i, ``chunk`` of them per vectorised call."""
    n = point.numel()
    diagonal = torch.empty_like(point)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        basis = torch.zeros(stop - start, n, dtype=point.dtype, device=point.device)
        basis[:, start:stop].fill_diagonal_(1.0)
        diagonal[start:stop] = hessian_vector_products(loss, point, basis)[:, start:stop].diagonal()
    return diagonal


def hutchinson_hessian_diagonal(loss: Loss, point: Tensor, probes: int, chunk: int,
                                generator: torch.Generator) -> Tensor:
    """diag(H) ≈ mean over Rademacher probes v of v ⊙ Hv (unbiased; variance falls as 1/probes)."""
    total = torch.zeros_like(point)
    signs = torch.randint(0, 2, (probes, point.numel()), generator=generator, dtype=point.dtype)
    vectors = (2 * signs - 1).to(point.device)
    for start in range(0, probes, chunk):
        v = vectors[start:start + chunk]
        total += (v * hessian_vector_products(loss, point, v)).sum(dim=0)
    return total / probes


# -- the Taylor estimate ---------------------------------------------------------------------------
def removal_step(weights: Tensor, wrt: str) -> Tensor:
    """The coordinate step δ that removes each op: −m in mixing weights, −1/(1 − m) in α (see the module doc)."""
    if wrt == "weights":
        return -weights
    return -1.0 / (1.0 - weights).clamp_min(torch.finfo(weights.dtype).eps)


def taylor_loss_change(step: Tensor, gradient: Tensor | None, hessian_diagonal: Tensor | None,
                       order: str) -> Tensor:
    """ΔL ≈ g·δ + ½·H_oo·δ² per coordinate; ``order`` keeps the first, the second or both terms."""
    change = torch.zeros_like(step)
    if order in ("first", "full"):
        if gradient is None:
            raise ValueError(f"order={order!r} needs the gradient")
        change = change + gradient * step
    if order in ("second", "full"):
        if hessian_diagonal is None:
            raise ValueError(f"order={order!r} needs the Hessian diagonal")
        change = change + 0.5 * hessian_diagonal * step.square()
    return change


# -- averaging over the validation split -----------------------------------------------------------
HessianDiagonal = Callable[[Loss, Tensor], Tensor]


def validation_derivatives(supernet: nn.Module, batches: Iterable[Batch], point: Tensor,
                           like: Mapping[str, Tensor], wrt: str, *, gradient: bool,
                           hessian_diagonal: HessianDiagonal | None) -> tuple[Tensor | None, Tensor | None]:
    """Per-sample means over ``batches`` of ∂L/∂point and of a Hessian diagonal (each only if asked for)."""
    gradient_sum = torch.zeros_like(point) if gradient else None
    diagonal_sum = torch.zeros_like(point) if hessian_diagonal is not None else None
    seen = 0
    for images, labels in batches:
        loss = batch_loss(supernet, images, labels, like, wrt)
        if gradient_sum is not None:
            gradient_sum += len(labels) * grad(loss)(point)
        if diagonal_sum is not None and hessian_diagonal is not None:  # both or neither
            diagonal_sum += len(labels) * hessian_diagonal(loss, point)
        seen += len(labels)
    if seen == 0:
        raise SelbenchError(f"{NAME}: the validation split produced no batches; give the supernet validation data")
    return (None if gradient_sum is None else gradient_sum / seen,
            None if diagonal_sum is None else diagonal_sum / seen)


# -- the selector ----------------------------------------------------------------------------------
def hessian_method(ctx: SelectionContext, size: int) -> tuple[HessianDiagonal | None, int]:
    """The Hessian-diagonal estimator the options ask for (None for order=first) and its HVPs per batch."""
    options = ctx.options
    if options["order"] == "first":
        return None, 0
    if options["hessian"] == "exact":
        return partial(exact_hessian_diagonal, chunk=options["chunk"]), size
    return partial(hutchinson_hessian_diagonal, probes=options["probes"], chunk=options["chunk"],
                   generator=ctx.generator), options["probes"]


def select_by_influence(ctx: SelectionContext) -> Selection:
    options = ctx.options
    order, wrt, limit = options["order"], options["wrt"], options["valid_batches"] or None
    cell_types = list(ctx.space.cell_types)
    weights = ctx.mixing_weights()
    alphas = cast(Supernet, ctx.supernet).alphas  # nn.Module types a module's attributes as Tensor | Module
    tables = {cell_type: alphas[cell_type].detach() for cell_type in cell_types} if wrt == "alpha" else weights
    point = flatten_tables(tables, cell_types)

    hessian_diagonal, hvps_per_batch = hessian_method(ctx, point.numel())

    def counted(batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            yield batch
            ctx.count("valid_batches")
            ctx.count("hvps", hvps_per_batch)

    with batchnorm_mode(ctx.supernet, options["bn"]):
        gradient, diagonal = validation_derivatives(
            ctx.supernet, counted(ctx.batches("valid", limit, progress="influential magnitude")), point, tables, wrt,
            gradient=order != "second", hessian_diagonal=hessian_diagonal)
    step = removal_step(flatten_tables(weights, cell_types), wrt)
    importance = unflatten_tables(taylor_loss_change(step, gradient, diagonal, order), tables, cell_types)
    return Selection(genotype=ctx.space.genotype_from_scores(importance), scores=importance)


INFLUENTIAL_MAGNITUDE = Selector(
    name=NAME,
    run=select_by_influence,
    options=OPTIONS,
    needs_data=True,
    description="Influential magnitude (reconstruction): Taylor estimate −g·m + ½·H·m² of the validation-loss "
                "change when an op is removed",
)


@hookimpl
def selbench_register_selectors(register) -> None:
    register(INFLUENTIAL_MAGNITUDE)
