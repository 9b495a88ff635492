"""The architecture-parameter bookkeeping every built-in supernet shares.

:class:`SupernetBase` is mixed into a supernet ``nn.Module`` that has set ``self.space``;
it gives the :class:`selbench.Supernet` protocol's α side: one ``Parameter[E, O]`` per
cell type, the softmax mixing weights with per-call overrides, the θ/α split, and loading
of state dicts that carry no α (as the original DARTS code writes them).
"""
from __future__ import annotations

from typing import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selbench import SearchSpace

ALPHA_INIT_SCALE = 1e-3  # DARTS and NAS-Bench-201 both start α at 1e-3·randn


def alphas_optional(module: nn.Module, incompatible) -> None:
    """A ``load_state_dict`` post hook: state dicts without α keep the module's current α."""
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if not k.startswith("alphas.")]


class SupernetBase:
    """Mixin for ``nn.Module`` supernets; call :meth:`init_alphas` once the modules are built."""

    space: SearchSpace
    alphas: nn.ParameterDict

    def init_alphas(self) -> None:
        """α: cell type -> ``Parameter[E, O]`` drawn as 1e-3·randn; α may be absent from loaded state dicts."""
        self.alphas = nn.ParameterDict({
            cell_type: nn.Parameter(ALPHA_INIT_SCALE * torch.randn(self.space.num_edges, len(self.space.ops)))
            for cell_type in self.space.cell_types
        })
        self.register_load_state_dict_post_hook(alphas_optional)

    def mixing_weights(self) -> dict[str, Tensor]:
        """softmax(α) per edge, the weights a plain forward uses."""
        return {cell_type: F.softmax(alpha, dim=-1) for cell_type, alpha in self.alphas.items()}

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
