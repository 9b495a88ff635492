"""Influential magnitude (after Zhang, Huang, Yang, NeurIPS 2022): judge an op by what removing it costs.

An op's importance is the change of the supernet's validation loss when the op is removed,
estimated by a second-order Taylor expansion in the mixing weights m = softmax(α) (every cell
type's [E, O] table, concatenated) along the exact change Δm that removal makes:

    ΔL(e, o) ≈ F′·Δm + ½·Δmᵀ·S·Δm.

``influence=none`` holds the network weights θ fixed: F′ = g = ∂_m L_val and S = H^v_mm, L_val's
Hessian in m.  Any other ``influence`` lets θ re-adapt to the removal, as below.

**Removal.**  ``wrt`` says what removal does to the edge's row:

* ``wrt=weights`` (default): m_o → 0 and the other weights of the edge stay, as in DARTS-PT's
  masking.  Δm = −m_o·e_o, so ΔL ≈ −F′_o·m_o + ½·S_oo·m_o²; with ``influence=none`` ``none``
  (which outputs zeros) scores exactly 0.
* ``wrt=alpha``: the op dropped from the softmax: m_o → 0 and m_j → m_j/(1 − m_o) for the edge's
  other ops (the row renormalised), so Δm_o = −m_o and Δm_j = m_j·m_o/(1 − m_o).  This Δm is the
  exact removal, not a step of a Taylor path in α (no finite change of α zeroes a softmax
  weight); S's whole within-row block enters, and ``none`` gets a non-zero importance.

``order=first`` keeps only F′·Δm, ``order=second`` only ½·Δmᵀ·S·Δm, ``full`` both.  The
importance is ΔL itself (larger = removing the op hurts more), and the genotype follows the
space's rule on it: with DARTS's in-degree, per node the edges with the largest importance
among ops other than ``none``, each with its most important such op; without one
(NAS-Bench-201) every edge takes its most important op, and ``none_candidate`` says whether
``none`` is among them (default false, as in the reference's NAS-Bench-201 results).  The
scores keep ``none``'s importance either way.

**θ's response (the influence).**  Let θ*(m) minimise L_train(m, ·) and F(m) = L_val(m, θ*(m)).
Differentiating ∇_θ L_train(m, θ*(m)) = 0 along a direction d gives θ′ = −A⁻¹·B·d with
A = ∂²_θθ L_train and B = ∂²_θm L_train, both the *training* loss's (θ* is defined by it).  Then

* first order: F′·d = ∂_m L_val·d + ∇_θ L_valᵀ·θ′ = ∂_m L_val·d − ∇_θ L_valᵀ·A⁻¹·B·d, the
  hypergradient (DARTS's second-order step approximates A⁻¹ by ξ·I);
* second order: dᵀF″d = dᵀH^v_mm·d + 2·(B^v·d)ᵀθ′ + θ′ᵀA^v·θ′ + ∇_θ L_valᵀ·θ″, with H^v_mm,
  B^v = ∂²_θm L_val and A^v = ∂²_θθ L_val the *validation* loss's blocks and θ″ the second
  derivative of θ*.  θ″ needs L_train's third derivatives; its term is dropped, as the
  classical influence function drops it (it is multiplied by ∇_θ L_val, small where θ fits
  data like the validation data).  Approximating L_val's θ-blocks by L_train's (B^v ≈ B,
  A^v ≈ A: same network and data distribution) turns the rest into the Schur complement
  dᵀ·S·d = dᵀH^v_mm·d − (B·d)ᵀ·A⁻¹·(B·d).

So ∂_m L_val, ∇_θ L_val and H^v_mm come from validation batches, A and B from training batches
(``response_split=train``, default), each validation batch paired with the next batch of the
train split in order (restarting it when it runs out); ``response_split=valid`` takes A and B
from the validation batch too.  A⁻¹ is Ĥ⁻¹ with Ĥ = A + λ·I (λ = ``damping``; a trained
network's A is indefinite): ``identity`` (``inverse_scale``·I), ``neumann``
(``inverse_scale``·Σ_{j=0..K}(I − η·Ĥ)^j with η = ``neumann_step``, K = ``iterations``;
inverse_scale = η is the response of K + 1 gradient steps of size η, the fine-tuning a removal
is followed by) or ``cg`` (K conjugate-gradient iterations).  The products are HVPs of
influence.py, never finite differences.

**The public code.**  The authors' code (GitHub anonymous-submission1991/DARTS-IM: NAS-Bench-201
only; exps/algos/run_example_batches_identity.py, _neumann.py and _sherman.py with the supernet
in search_model_darts_v2.py) approximates A⁻¹ by the identity, a truncated Neumann sum, or
Sherman–Morrison on an empirical Fisher with damping, and takes its products by finite
differences of gradients with r = 1e-2, on the architecture (validation) inputs.  It
multiplies H_θα by the all-ones vector in pre-softmax α coordinates: a row-wise softmax is
invariant to shifting a row of α, so that product is identically zero and the scores it logs
are rounding noise.  selbench instead removes each op along its own exact Δm in mixing-weight
coordinates (one product per (edge, op), no all-ones vector), takes the products as exact HVPs,
A and B from training batches unless ``response_split=valid``, and offers conjugate gradients
instead of Sherman–Morrison.

**The loss.**  L_val is the mean cross-entropy per validation sample over the first
``valid_batches`` batches (0: the whole split); F′ and the quadratic forms are the
per-sample-weighted means of the per-batch ones, so with ``influence=none`` they are exactly
those of the loss that ``SelectionContext.evaluate`` reports for the same batches.
``bn=train`` (default, as DARTS-PT scores supernets) normalises with each batch's statistics
and leaves the running statistics untouched; ``bn=eval`` uses the running statistics.

**The quadratic forms** Δmᵀ·S·Δm, one per (edge, op) coordinate, come from Hessian-vector
products (forward-over-reverse: ``jvp`` of ``grad`` with ``torch.func``), vectorised with
``vmap`` over ``chunk`` vectors at a time — memory grows with ``chunk``.  ``hessian=exact``
takes the form of every removal vector Δm: N = Σ E·O of them per batch (224 for DARTS's two
14 × 8 tables, 30 for NAS-Bench-201's 6 × 5), each 1 HVP with θ held and 2 + K with θ
re-adapting (K = 0 for ``identity``).  ``hessian=hutchinson`` averages (Δm·v)·(Δm·Sv) over
``probes`` Rademacher vectors v per batch, drawn from the selection seed: E[v·vᵀ] = I, so this
is an unbiased estimate of every Δmᵀ·S·Δm at once (for ``wrt=weights`` it is the usual diagonal
estimate m²·v_o·(Sv)_o).  Counters: ``hvps``, ``valid_batches``, and with θ re-adapting
``inverse_iterations`` (the HVPs spent inside Ĥ⁻¹, part of ``hvps``) and ``train_batches``.

**Precision.**  Always fp32; unlike perturbation, this selector has no ``precision`` option.  Its
scores are gradients and quadratic forms of Hessian-vector products, and the importances of an
edge's ops differ by amounts of the order of bf16's rounding (8-bit mantissa, about 4·10⁻³
relative per operation, compounded through forward, backward and the forward-mode pass of each
product): in bf16 the curvature terms, and with them the ranking, would be noise.  A supernet
trained with ``search.precision = "bf16"`` is scored in fp32 like any other.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Iterable, Iterator, Mapping, Sequence, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from selbench import (
    NONE_OP,
    Batch,
    Option,
    SearchSpace,
    SelbenchError,
    Selection,
    SelectionContext,
    Selector,
    Supernet,
    batchnorm_mode,
    hookimpl,
)

from .influence import INVERSES, AdaptingWeights, BatchLoss, HeldWeights, InverseHessian, Response

NAME = "influential-magnitude"
ORDERS = ("first", "second", "full")
INFLUENCES = ("none", *INVERSES)
Loss = Callable[[Tensor], Tensor]
VALID_BATCHES = 1  # the default: the public code's smallest N; ≤ 5 minutes on the demo supernet (README)
HELD = HeldWeights()

OPTIONS = {
    "order": Option("full", "Taylor terms of the removal Δm: first (F′·Δm), second (½·Δmᵀ·S·Δm) or full (both)",
                    ORDERS),
    "influence": Option("none", "how θ re-adapts when an op goes: none (θ held), or through Ĥ_θθ⁻¹ by identity "
                        "(inverse_scale·I), neumann (truncated series) or cg (conjugate gradients)", INFLUENCES),
    "inverse_scale": Option(0.1, "Ĥ_θθ⁻¹ = inverse_scale·I for influence=identity; the factor before the series for "
                            "neumann (1: the public code's; neumann_step: the textbook series)", minimum=0.0),
    "neumann_step": Option(1e-3, "η of influence=neumann's series Σ (I − η·H_θθ)^j", minimum=0.0),
    "iterations": Option(3, "H_θθ-vector products per Ĥ_θθ⁻¹ product: the Neumann series' terms after the first, "
                         "or conjugate-gradient iterations", minimum=1),
    "damping": Option(1e-2, "λ of Ĥ_θθ = H_θθ + λ·I for influence=neumann and cg (cg solves Ĥ_θθ·x = v)",
                      minimum=0.0),
    "response_split": Option("train", "the batches whose θ-blocks H_θθ, H_θm give θ's response: train (L_train's, "
                             "as the implicit-function theorem says) or valid (L_val's, as the public code)",
                             ("train", "valid")),
    "wrt": Option("weights", "what removing an op does to its edge: weights (its mixing weight zeroed, the others "
                  "kept) or alpha (dropped from the softmax: the others renormalised)", ("weights", "alpha")),
    "hessian": Option("exact", "Δmᵀ·S·Δm: exact (its products for every (edge, op), vectorised) or hutchinson "
                      "(Rademacher probes)", ("exact", "hutchinson")),
    "probes": Option(64, "Rademacher probes per validation batch for hessian=hutchinson", minimum=1),
    "chunk": Option(16, "Hessian-vector products computed together in one vectorised call (bounds memory)",
                    minimum=1),
    "valid_batches": Option(VALID_BATCHES, "validation batches to average over (README: what each costs); "
                            "0 = the whole validation split", minimum=0),
    "none_candidate": Option(False, "spaces without an in-degree (NAS-Bench-201): whether an edge may get `none`; "
                             "default false, as the reference's NAS-Bench-201 results (DARTS does not allow it)"),
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
               wrt: str) -> BatchLoss:
    """The batch-mean cross-entropy as a pure function of the flat point (mixing weights or α) and flat θ.

    θ is every parameter but α, flattened; the buffers enter as detached constants through
    ``functional_call``, so ``torch.func`` transforms differentiate w.r.t. the point and θ only.
    The supernet's BatchNorm mode is used as set.
    """
    cell_types = list(like)
    arch = {id(alpha) for alpha in cast(Supernet, supernet).arch_parameters()}
    named = [(name, p.detach()) for name, p in supernet.named_parameters() if id(p) not in arch]
    shapes = {name: p.shape for name, p in named}
    sizes = [p.numel() for _, p in named]
    buffers = {name: b.detach() for name, b in supernet.named_buffers()}

    def joint(point: Tensor, theta: Tensor) -> Tensor:
        tables = unflatten_tables(point, like, cell_types)
        if wrt == "alpha":
            tables = {cell_type: F.softmax(alpha, dim=-1) for cell_type, alpha in tables.items()}
        weights = {name: part.view(shapes[name]) for name, part in zip(shapes, theta.split(sizes))}
        logits = functional_call(supernet, {**weights, **buffers}, (images,), {"weights": tables})
        return F.cross_entropy(logits, labels)

    return BatchLoss(joint, torch.cat([p.reshape(-1) for _, p in named]))


# -- removal: the exact change of the mixing weights -----------------------------------------------
def removal_directions(weights: Mapping[str, Tensor], cell_types: Sequence[str], wrt: str) -> Tensor:
    """Row k is the change Δm of the flat mixing weights when coordinate k's op is removed (module doc).

    ``weights``: masking (m_o → 0, the rest stay), a diagonal matrix.  ``alpha``: the row
    renormalised (m_o → 0, m_j → m_j/(1 − m_o)), one [O, O] block per edge.
    """
    flat = flatten_tables(weights, cell_types)
    if wrt == "weights":
        return torch.diag(-flat)
    rows = torch.cat([weights[cell_type].reshape(-1, weights[cell_type].shape[-1]) for cell_type in cell_types])
    share = rows / (1.0 - rows).clamp_min(torch.finfo(rows.dtype).eps)  # m_o/(1 − m_o); m_o = 1 cannot renormalise
    blocks = share.unsqueeze(-1) * rows.unsqueeze(-2)  # [rows, o, j] = m_j·m_o/(1 − m_o)
    blocks.diagonal(dim1=-2, dim2=-1).copy_(-rows)
    return torch.block_diag(*blocks)


# -- quadratic forms from Hessian-vector products --------------------------------------------------
def exact_quadratic_forms(loss: BatchLoss, point: Tensor, directions: Tensor, chunk: int,
                          response: Response = HELD, train: BatchLoss | None = None) -> Tensor:
    """dᵀ·H·d (θ held) or dᵀ·S·d (``response`` re-adapting θ) for every row d, ``chunk`` rows per vectorised call.

    ``loss`` is the validation batch's; ``train`` the batch whose H_θθ, H_θm give θ's response (default ``loss``).
    """
    forms = torch.empty(len(directions), dtype=point.dtype, device=point.device)
    for start in range(0, len(directions), chunk):
        forms[start:start + chunk] = response.forms(loss, train or loss, point, directions[start:start + chunk])
    return forms


def hutchinson_quadratic_forms(loss: BatchLoss, point: Tensor, directions: Tensor, probes: int, chunk: int,
                               generator: torch.Generator, response: Response = HELD,
                               train: BatchLoss | None = None) -> Tensor:
    """dᵀ·H·d (or dᵀ·S·d) ≈ mean over Rademacher probes v of (d·v)·(d·Hv), for every row d at once (unbiased).

    ``loss`` and ``train`` as in :func:`exact_quadratic_forms`.
    """
    total = torch.zeros(len(directions), dtype=point.dtype, device=point.device)
    signs = torch.randint(0, 2, (probes, point.numel()), generator=generator, dtype=point.dtype)
    vectors = (2 * signs - 1).to(point.device)
    for start in range(0, probes, chunk):
        v = vectors[start:start + chunk]
        total += ((v @ directions.T) * (response.products(loss, train or loss, point, v) @ directions.T)).sum(dim=0)
    return total / probes


def exact_hessian_diagonal(loss: BatchLoss, point: Tensor, chunk: int) -> Tensor:
    """diag(H) exactly: the quadratic forms of the basis vectors."""
    return exact_quadratic_forms(loss, point, torch.eye(point.numel(), dtype=point.dtype, device=point.device), chunk)


def hutchinson_hessian_diagonal(loss: BatchLoss, point: Tensor, probes: int, chunk: int,
                                generator: torch.Generator) -> Tensor:
    """diag(H) ≈ mean over Rademacher probes v of v ⊙ Hv (unbiased; variance falls as 1/probes)."""
    basis = torch.eye(point.numel(), dtype=point.dtype, device=point.device)
    return hutchinson_quadratic_forms(loss, point, basis, probes, chunk, generator)


# -- the Taylor estimate ---------------------------------------------------------------------------
def taylor_loss_change(directions: Tensor, gradient: Tensor | None, quadratic: Tensor | None,
                       order: str) -> Tensor:
    """ΔL ≈ F′·Δm + ½·Δmᵀ·S·Δm per removal (row of ``directions``); ``order`` keeps the first, the second or both."""
    change = torch.zeros(len(directions), dtype=directions.dtype, device=directions.device)
    if order in ("first", "full"):
        if gradient is None:
            raise ValueError(f"order={order!r} needs the gradient")
        change = change + directions @ gradient
    if order in ("second", "full"):
        if quadratic is None:
            raise ValueError(f"order={order!r} needs the quadratic forms")
        change = change + 0.5 * quadratic
    return change


# -- averaging over the validation split -----------------------------------------------------------
Gradient = Callable[[BatchLoss, BatchLoss, Tensor], Tensor]  # (validation loss, response loss, point)
QuadraticForms = Callable[..., Tensor]  # (validation loss, point, train=response loss)


def validation_derivatives(supernet: nn.Module, batches: Iterable[tuple[Batch, Batch]], point: Tensor,
                           like: Mapping[str, Tensor], *, gradient: Gradient | None,
                           quadratic_forms: QuadraticForms | None) -> tuple[Tensor | None, Tensor | None]:
    """Per-sample means over the validation batches of the gradient and of the quadratic forms (each only if asked
    for); ``batches`` pairs each validation batch with the batch whose θ-blocks give θ's response."""
    gradient_sum = torch.zeros_like(point) if gradient is not None else None
    forms_sum: Tensor | None = None
    seen = 0
    for (images, labels), (train_images, train_labels) in batches:
        loss = batch_loss(supernet, images, labels, like, "weights")
        train = loss if train_images is images else batch_loss(supernet, train_images, train_labels, like, "weights")
        if gradient is not None and gradient_sum is not None:
            gradient_sum += len(labels) * gradient(loss, train, point)
        if quadratic_forms is not None:
            forms = len(labels) * quadratic_forms(loss, point, train=train)
            forms_sum = forms if forms_sum is None else forms_sum + forms
        seen += len(labels)
    if seen == 0:
        raise SelbenchError(f"{NAME}: the validation split produced no batches; give the supernet validation data")
    return (None if gradient_sum is None else gradient_sum / seen,
            None if forms_sum is None else forms_sum / seen)


# -- the selector ----------------------------------------------------------------------------------
def response_of(options: Mapping[str, object]) -> Response:
    """θ's response the options ask for: held (influence=none) or re-adapting through the chosen Ĥ_θθ⁻¹."""
    if options["influence"] == "none":
        return HELD
    return AdaptingWeights(InverseHessian(
        str(options["influence"]), scale=cast(float, options["inverse_scale"]),
        step=cast(float, options["neumann_step"]), iterations=cast(int, options["iterations"]),
        damping=cast(float, options["damping"])))


def quadratic_method(ctx: SelectionContext, directions: Tensor,
                     response: Response) -> tuple[QuadraticForms | None, int, int]:
    """The estimator of the quadratic forms the options ask for (None for order=first), and its HVPs and
    inverse-HVP iterations per batch."""
    options = ctx.options
    if options["order"] == "first":
        return None, 0, 0
    if options["hessian"] == "exact":
        count = len(directions)
        forms: QuadraticForms = partial(exact_quadratic_forms, directions=directions, chunk=options["chunk"],
                                        response=response)
        return forms, count * response.form_hvps, count * response.inverse_iterations_per_form
    count = options["probes"]
    forms = partial(hutchinson_quadratic_forms, directions=directions, probes=count, chunk=options["chunk"],
                    generator=ctx.generator, response=response)
    return forms, count * response.product_hvps, count * response.inverse_iterations_per_form


def genotype_scores(space: SearchSpace, importance: Mapping[str, Tensor], none_candidate: bool) -> dict[str, Tensor]:
    """The scores the space's rule sees: ``none`` ruled out (−∞) on spaces without an in-degree unless allowed."""
    if none_candidate or space.in_degree is not None or NONE_OP not in space.ops:
        return dict(importance)
    masked = {}
    for cell_type, table in importance.items():
        masked[cell_type] = table.clone()
        for edge in space.edges:
            ops = space.edge_ops(cell_type, edge.index)
            if NONE_OP in ops:
                masked[cell_type][edge.index, ops.index(NONE_OP)] = float("-inf")
    return masked


def training_batches(ctx: SelectionContext) -> Iterator[Batch]:
    """The train split's batches in order, pass after pass (as many as validation batches are paired with them)."""
    while True:
        empty = True
        for batch in ctx.batches("train"):
            empty = False
            ctx.count("train_batches")
            yield batch
        if empty:
            raise SelbenchError(f"{NAME}: the train split produced no batches, and response_split=train needs them")


def select_by_influence(ctx: SelectionContext) -> Selection:
    options = ctx.options
    order, limit = options["order"], options["valid_batches"] or None
    cell_types = list(ctx.space.cell_types)
    weights = ctx.mixing_weights()
    point = flatten_tables(weights, cell_types)
    directions = removal_directions(weights, cell_types, options["wrt"])
    response = response_of(options)
    quadratic_forms, hvps, iterations = quadratic_method(ctx, directions, response)
    if order != "second":
        hvps += response.gradient_hvps
        iterations += response.inverse_iterations_per_gradient

    def counted(batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            yield batch
            ctx.count("valid_batches")
            ctx.count("hvps", hvps)
            if options["influence"] != "none":
                ctx.count("inverse_iterations", iterations)

    valid = counted(ctx.batches("valid", limit, progress="influential magnitude"))
    if options["influence"] == "none" or options["response_split"] == "valid":
        pairs: Iterable[tuple[Batch, Batch]] = ((batch, batch) for batch in valid)
    else:
        pairs = zip(valid, training_batches(ctx))
    with batchnorm_mode(ctx.supernet, options["bn"]):
        gradient, quadratic = validation_derivatives(
            ctx.supernet, pairs, point, weights,
            gradient=response.gradient if order != "second" else None, quadratic_forms=quadratic_forms)
    change = taylor_loss_change(directions, gradient, quadratic, order)
    importance = unflatten_tables(change, weights, cell_types)
    genotype = ctx.space.genotype_from_scores(genotype_scores(ctx.space, importance, options["none_candidate"]))
    return Selection(genotype=genotype, scores=importance)


INFLUENTIAL_MAGNITUDE = Selector(
    name=NAME,
    run=select_by_influence,
    options=OPTIONS,
    needs_data=True,
    description="Influential magnitude: Taylor estimate F′·Δm + ½·Δmᵀ·S·Δm of the validation-loss change when an "
                "op is removed and θ re-adapts (S the Schur complement of the Hessian in θ)",
)


@hookimpl
def selbench_register_selectors(register) -> None:
    register(INFLUENTIAL_MAGNITUDE)
