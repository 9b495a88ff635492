"""The architecture-parameter bookkeeping every built-in supernet shares.

:class:`SupernetBase` is mixed into a supernet ``nn.Module`` that has set ``self.space``;
it gives the :class:`selbench.Supernet` protocol's α side: one ``Parameter[E, O]`` per
cell type, the softmax mixing weights with per-call overrides, the θ/α split, loading
of state dicts that carry no α (as the original DARTS code writes them), and the optional
``active_ops`` protocol (which ops each edge computes; the others count as zero).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selbench import SearchSpace

ALPHA_INIT_SCALE = 1e-3  # DARTS and NAS-Bench-201 both start α at 1e-3·randn
ActiveOps = tuple[tuple[int, ...], ...]  # per edge, the indices of the ops it computes


def sum_of(terms: list[Tensor]) -> Tensor:
    """Σ terms, without the ``0 +`` that Python's ``sum`` starts with (one tensor op less)."""
    return sum(terms[1:], terms[0])


def mixed_sum(ops: nn.ModuleList | Sequence[nn.Module], x: Tensor, weights: Tensor,
              active: Sequence[int] | None = None) -> Tensor:
    """Σ_o w_o · o(x) over ``ops``; with ``active`` (op indices, ascending) only those run, the rest count as zero."""
    if active is None:
        return sum(w * op(x) for w, op in zip(weights, ops))
    return sum_of([weights[k] * ops[k](x) for k in active])


def alphas_optional(module: nn.Module, incompatible) -> None:
    """A ``load_state_dict`` post hook: state dicts without α keep the module's current α."""
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if not k.startswith("alphas.")]


if TYPE_CHECKING:  # the mixin is only ever mixed into an nn.Module, whose methods it calls
    _MixinBase = nn.Module
else:
    _MixinBase = object


class SupernetBase(_MixinBase):
    """Mixin for ``nn.Module`` supernets; call :meth:`init_alphas` once the modules are built."""

    space: SearchSpace
    alphas: nn.ParameterDict

    def init_alphas(self) -> None:
        """α: cell type -> ``Parameter[E, O]`` drawn as 1e-3·randn; α may be absent from loaded state dicts."""
        self.alphas = nn.ParameterDict({
            cell_type: nn.Parameter(ALPHA_INIT_SCALE * torch.randn(self.space.num_edges, self.space.num_ops))
            for cell_type in self.space.cell_types
        })
        self.register_load_state_dict_post_hook(alphas_optional)
        self._default_active: dict[str, ActiveOps] = {}

    def resolve_mixing(self, weights: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        """The mixing weights of one forward: ``weights[cell type]`` where given, softmax(α) elsewhere."""
        weights = weights or {}
        unknown = set(weights) - set(self.alphas)
        if unknown:
            raise ValueError(f"mixing weights for unknown cell types {sorted(unknown)}; "
                             f"this supernet has {sorted(self.alphas)}")
        return {cell_type: weights[cell_type] if cell_type in weights else F.softmax(alpha, dim=-1)
                for cell_type, alpha in self.alphas.items()}

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        """θ: every parameter except α."""
        arch = {id(p) for p in self.alphas.values()}
        return (p for p in self.parameters() if id(p) not in arch)

    def arch_parameters(self) -> Iterator[nn.Parameter]:
        """α, one tensor per cell type."""
        return iter(self.alphas.values())

    def computed_ops(self, active: Mapping[str, Sequence[Sequence[int]]] | None) -> dict[str, ActiveOps]:
        """The ops one forward computes per cell type: ``active`` if given, else the ``active_ops`` block's."""
        return self._default_active if active is None else self._checked_active(active)

    @contextmanager
    def active_ops(self, active: Mapping[str, Sequence[Sequence[int]]]) -> Iterator[None]:
        """Within the block, every forward without its own ``active`` computes only these ops."""
        previous, self._default_active = self._default_active, self._checked_active(active)
        try:
            yield
        finally:
            self._default_active = previous

    def _checked_active(self, active: Mapping[str, Sequence[Sequence[int]]]) -> dict[str, ActiveOps]:
        """``active`` with each edge's op indices sorted (the order a full forward sums them in)."""
        checked: dict[str, ActiveOps] = {}
        num_edges, num_ops = self.space.num_edges, self.space.num_ops
        for cell_type, given in active.items():
            if cell_type not in self.alphas:
                raise ValueError(f"active ops for unknown cell type {cell_type!r}; "
                                 f"this supernet has {sorted(self.alphas)}")
            per_edge = tuple(tuple(sorted(set(map(int, ops)))) for ops in given)
            if len(per_edge) != num_edges or any(not 0 <= k < num_ops for ops in per_edge for k in ops):
                raise ValueError(f"active ops of the {cell_type} cell must list, for each of its {num_edges} edges, "
                                 f"op indices in 0..{num_ops - 1}; got {per_edge}")
            checked[cell_type] = per_edge
        return checked
