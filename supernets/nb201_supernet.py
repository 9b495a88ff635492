"""The NAS-Bench-201 search network: every cell edge mixes all candidate ops (DARTS on NAS-Bench-201).

All 3N cells share one α of shape [E, O]; edge e = (j→i) computes ō_e(x) = Σ_o w_{e,o}·o(x)
with w_e = softmax(α_e) unless the caller passes mixing weights.  Cell ops use non-affine
BatchNorm; the stem, the residual blocks and the head are as in the discrete network.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from selbench import SearchSpace

from .nb201_macro import Nb201Macro, edge_key
from .nb201_ops import make_op
from .supernet_base import SupernetBase, mixed_sum, sum_of


class MixedEdge(nn.ModuleList):
    """One edge: ō(x) = Σ_o w_o · o(x) over the candidate ops, in the space's op order."""

    def __init__(self, C: int, ops: Sequence[str]):
        super().__init__(make_op(name, C, affine=False) for name in ops)

    def forward(self, x: Tensor, weights: Tensor, active: Sequence[int] | None = None) -> Tensor:
        """Σ_o w_o · o(x); with ``active`` (op indices, ascending) only those ops run, the rest count as zero."""
        return mixed_sum(self, x, weights, active)


class Nb201SearchCell(nn.Module):
    """node i = Σ_{j<i} ō_{j→i}(node j); the last node is the output."""

    def __init__(self, space: SearchSpace, C: int):
        super().__init__()
        self._edges_into = [space.edges_into(dst) for dst in space.nodes]
        self.edges = nn.ModuleDict({edge_key(e.src, e.dst): MixedEdge(C, space.ops) for e in space.edges})

    def forward(self, x: Tensor, weights: Tensor, active: Sequence[Sequence[int]] | None = None) -> Tensor:
        """``active[e]``, when given, lists the ops edge ``e`` computes; an edge with none is skipped."""
        nodes = [x]
        for edges_in in self._edges_into:
            incoming = edges_in if active is None else [e for e in edges_in if active[e.index]]
            terms = [self.edges[edge_key(e.src, e.dst)](nodes[e.src], weights[e.index],
                                                       None if active is None else active[e.index])
                     for e in incoming]
            nodes.append(sum_of(terms) if terms else torch.zeros_like(x))  # every op keeps the cell's shape
        return nodes[-1]


class Nb201Supernet(SupernetBase, Nb201Macro):
    """The weight-sharing network; follows the :class:`selbench.Supernet` protocol."""

    def __init__(self, space: SearchSpace, C: int, N: int, num_classes: int, in_channels: int):
        super().__init__(lambda channels: Nb201SearchCell(space, channels), C, N, num_classes, in_channels)
        self.space = space
        self.space_args = dict(C=C, N=N, num_classes=num_classes, in_channels=in_channels, steps=space.steps,
                               ops=list(space.ops))
        self.init_alphas()

    def forward(self, x: Tensor, weights: Mapping[str, Tensor] | None = None,
                active: Mapping[str, Sequence[Sequence[int]]] | None = None) -> Tensor:
        """Logits under ``weights`` (default softmax(α)); see :class:`selbench.Supernet` for ``active``."""
        return self.classify(x, self.resolve_mixing(weights)["cell"], self.computed_ops(active).get("cell"))
