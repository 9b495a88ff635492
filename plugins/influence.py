"""The curvature behind influential magnitude: second derivatives of batch losses with θ held or re-adapting.

Everything acts on :class:`BatchLoss` objects: one batch's loss L(m, θ) as a pure function of the flat
mixing weights m and the flat network weights θ.  Products with L's Hessian are forward-over-reverse
(``jvp`` of ``grad``, ``torch.func``), vectorised with ``vmap`` over the rows of a matrix of vectors,
never finite differences; a random op in the network (RobustDARTS's ``noise``) draws once per vmapped call,
so every row is a product with the Hessian of the same loss.
Blocks: H_mm = ∂²L/∂m², H_θm = ∂²L/∂θ∂m (its transpose H_mθ), H_θθ = ∂²L/∂θ².

Two responses of θ to a change d of m (influential_magnitude's docstring derives them), each taking a
validation batch's loss L_val and the batch loss whose θ-blocks give θ's response (L_train's):

* :class:`HeldWeights` (``influence=none``): θ stays.  Gradient ∂_m L_val, curvature H^val_mm.
* :class:`AdaptingWeights`: θ follows its minimiser, θ' = −H_θθ⁻¹·H_θm·d to first order (L_train's blocks).
  Gradient F′ = ∂_m L_val − H_mθ·Ĥ⁻¹·∂_θ L_val (the hypergradient), curvature the Schur complement
  S = H^val_mm − H_mθ·Ĥ⁻¹·H_θm, with Ĥ⁻¹ an :class:`InverseHessian`.

Each response says how many Hessian-vector products its methods cost (``*_hvps``), so a caller counts
them without synchronising the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

JointLoss = Callable[[Tensor, Tensor], Tensor]
Products = Callable[[Tensor], Tensor]  # rows of vectors -> rows of the matrix times each
INVERSES = ("identity", "neumann", "cg")
SAME_NOISE = "same"  # vmap's randomness mode: one draw shared by all rows


@dataclass(frozen=True)
class BatchLoss:
    """One batch's loss ``joint(m, θ)`` and the weights ``theta`` it is taken at; ``loss(m)`` holds θ there."""

    joint: JointLoss
    theta: Tensor

    def __call__(self, point: Tensor) -> Tensor:
        return self.joint(point, self.theta)


# -- Hessian-vector products -----------------------------------------------------------------------
def weight_hvps(loss: BatchLoss, point: Tensor, vectors: Tensor) -> Tensor:
    """Row k is H_mm·vectors[k] (θ held)."""
    gradient = grad(loss)
    return vmap(lambda v: jvp(gradient, (point,), (v,))[1], randomness=SAME_NOISE)(vectors)


def mixed_products(loss: BatchLoss, point: Tensor, vectors: Tensor) -> Tensor:
    """H_θm·v for every row v of ``vectors`` (m-space): ∂_m of ∂_θ L along v, one product each."""
    gradient = grad(loss.joint, argnums=1)
    return vmap(lambda v: jvp(lambda m: gradient(m, loss.theta), (point,), (v,))[1], randomness=SAME_NOISE)(vectors)


def along_theta(loss: BatchLoss, point: Tensor, vectors: Tensor) -> Tensor:
    """H_mθ·u for every row u of ``vectors`` (θ-space): ∂_m of (∂_θ L · u), one product each."""
    gradient = grad(loss.joint, argnums=0)
    return vmap(lambda u: jvp(lambda theta: gradient(point, theta), (loss.theta,), (u,))[1],
                randomness=SAME_NOISE)(vectors)


def theta_hvps(loss: BatchLoss, point: Tensor) -> Products:
    """Rows u ↦ H_θθ·u, the products an inverse iterates on."""
    gradient = grad(lambda theta: loss.joint(point, theta))
    return vmap(lambda u: jvp(gradient, (loss.theta,), (u,))[1], randomness=SAME_NOISE)


# -- Ĥ_θθ⁻¹ ------------------------------------------------------------------------------------------
def _rowwise_dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(dim=-1, keepdim=True)


def _safe_ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, 0 where the denominator is 0 (a converged row), without a host sync."""
    return torch.where(denominator != 0, numerator / denominator, torch.zeros_like(numerator))


@dataclass(frozen=True)
class InverseHessian:
    """Ĥ_θθ⁻¹·v for rows v, by one of :data:`INVERSES`.

    With Ĥ = H_θθ + λ·I (λ = ``damping``; the curvature of a trained network has negative directions,
    where neither iteration converges without it):

    * ``identity``: ``scale``·v.
    * ``neumann``: ``scale``·Σ_{j=0..K} (I − η·Ĥ)^j·v with K = ``iterations``, η = ``step``; with
      scale = η it is the truncated series of Ĥ⁻¹ (converging for 0 < η < 2/λ_max(Ĥ), Ĥ positive
      definite), the response of K + 1 gradient steps of size η; with scale = 1 and λ = 0 it is the
      public code's sum.
    * ``cg``: K iterations of conjugate gradients on Ĥ·x = v from x = 0; each row is its own solve.
    """

    method: str
    scale: float = 1.0
    step: float = 1e-3
    iterations: int = 3
    damping: float = 0.0

    @property
    def hvps_per_vector(self) -> int:
        return 0 if self.method == "identity" else self.iterations

    def apply(self, hvps: Products, vectors: Tensor) -> Tensor:
        if self.method == "identity":
            return self.scale * vectors
        if self.method == "neumann":
            term, total = vectors, vectors
            for _ in range(self.iterations):
                term = term - self.step * self._damped(hvps, term)
                total = total + term
            return self.scale * total
        if self.method == "cg":
            return self._conjugate_gradient(hvps, vectors)
        raise ValueError(f"no inverse Hessian method {self.method!r}; methods: {', '.join(INVERSES)}")

    def _damped(self, hvps: Products, rows: Tensor) -> Tensor:
        """Ĥ·u per row u."""
        return hvps(rows) + self.damping * rows

    def _conjugate_gradient(self, hvps: Products, vectors: Tensor) -> Tensor:
        solution = torch.zeros_like(vectors)
        residual = vectors
        direction = residual
        residual_norm = _rowwise_dot(residual, residual)
        for _ in range(self.iterations):
            product = self._damped(hvps, direction)
            step = _safe_ratio(residual_norm, _rowwise_dot(direction, product))
            solution = solution + step * direction
            residual = residual - step * product
            new_norm = _rowwise_dot(residual, residual)
            direction = residual + _safe_ratio(new_norm, residual_norm) * direction
            residual_norm = new_norm
        return solution


# -- the two responses -----------------------------------------------------------------------------
# Every method takes two batch losses: ``valid``, L_val's batch (∂_m L, ∇_θ L and H_mm), and ``train``, the
# batch whose θ-blocks H_θθ and H_θm say how θ responds (L_train's; the same batch for response_split=valid).
class HeldWeights:
    """θ held where it is: the partial derivatives of L_val in m (``train`` is not used)."""

    gradient_hvps = 0
    form_hvps = 1
    product_hvps = 1
    inverse_iterations_per_form = 0
    inverse_iterations_per_gradient = 0

    def gradient(self, valid: BatchLoss, train: BatchLoss, point: Tensor) -> Tensor:
        """∂_m L_val."""
        return grad(valid)(point)

    def products(self, valid: BatchLoss, train: BatchLoss, point: Tensor, vectors: Tensor) -> Tensor:
        """H_mm·v per row."""
        return weight_hvps(valid, point, vectors)

    def forms(self, valid: BatchLoss, train: BatchLoss, point: Tensor, directions: Tensor) -> Tensor:
        """dᵀ·H_mm·d per row d."""
        return _rowwise_dot(directions, weight_hvps(valid, point, directions)).squeeze(-1)


@dataclass(frozen=True)
class AdaptingWeights:
    """θ re-adapting to m through Ĥ_θθ⁻¹ = ``inverse`` of ``train``'s H_θθ: hypergradient and Schur complement."""

    inverse: InverseHessian

    @property
    def inverse_iterations_per_form(self) -> int:
        return self.inverse.hvps_per_vector

    @property
    def inverse_iterations_per_gradient(self) -> int:
        return self.inverse.hvps_per_vector

    @property
    def gradient_hvps(self) -> int:  # Ĥ⁻¹·∇_θL_val, then H_mθ times it
        return self.inverse.hvps_per_vector + 1

    @property
    def form_hvps(self) -> int:  # H_mm·d (valid), H_θm·d (train), then Ĥ⁻¹ on H_θm·d
        return 2 + self.inverse.hvps_per_vector

    @property
    def product_hvps(self) -> int:  # as a form, plus H_mθ back to m
        return 3 + self.inverse.hvps_per_vector

    def gradient(self, valid: BatchLoss, train: BatchLoss, point: Tensor) -> Tensor:
        """F′ = ∂_m L_val − H_mθ·Ĥ⁻¹·∇_θ L_val."""
        weights_gradient, theta_gradient = grad(valid.joint, argnums=(0, 1))(point, valid.theta)
        solved = self.inverse.apply(theta_hvps(train, point), theta_gradient.unsqueeze(0))
        return weights_gradient - along_theta(train, point, solved)[0]

    def products(self, valid: BatchLoss, train: BatchLoss, point: Tensor, vectors: Tensor) -> Tensor:
        """S·v = H^val_mm·v − H_mθ·Ĥ⁻¹·H_θm·v per row v."""
        solved = self.inverse.apply(theta_hvps(train, point), mixed_products(train, point, vectors))
        return weight_hvps(valid, point, vectors) - along_theta(train, point, solved)

    def forms(self, valid: BatchLoss, train: BatchLoss, point: Tensor, directions: Tensor) -> Tensor:
        """dᵀ·S·d = dᵀ·H^val_mm·d − (H_θm·d)ᵀ·Ĥ⁻¹·(H_θm·d) per row d (no product back to m needed)."""
        mixed = mixed_products(train, point, directions)
        solved = self.inverse.apply(theta_hvps(train, point), mixed)
        curvature = weight_hvps(valid, point, directions)
        return (_rowwise_dot(directions, curvature) - _rowwise_dot(mixed, solved)).squeeze(-1)


Response = HeldWeights | AdaptingWeights
