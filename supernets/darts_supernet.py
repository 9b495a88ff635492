"""The DARTS search network: every edge is a mixture of all candidate ops (Liu et al., 2019).

Module names follow the original ``model_search.py`` (``stem``, ``cells.{i}.preprocess0|1``,
``cells.{i}._ops.{edge}._ops.{op}``, ``global_pooling``, ``classifier``) so its state dicts
load strictly; α lives in ``alphas`` and may be absent from a state dict being loaded.

Two implementations compute the same function from the same modules: ``reference``, the
formulation above edge by edge and op by op, and ``fast`` (:mod:`.darts_fast`, the default),
which shares work between the edges leaving a node.  ``supernet.implementation`` picks one and
may be changed at any time; both honour ``active`` / ``active_ops``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from selbench import SearchSpace

from .darts_fast import fast_cell_forward, node_zeros
from .darts_macro import stack_cells
from .darts_ops import FactorizedReduce, ReLUConvBN, make_op
from .supernet_base import SupernetBase, mixed_sum, sum_of

IMPLEMENTATIONS = ("fast", "reference")


class MixedOp(nn.Module):
    """One supernet edge: ō(x) = Σ_o w_o · o(x) over the candidate ops."""

    def __init__(self, C: int, stride: int, ops: Sequence[str]):
        super().__init__()
        self._ops = nn.ModuleList(make_op(name, C, stride, affine=False, pool_bn=True) for name in ops)

    def forward(self, x: Tensor, weights: Tensor, active: Sequence[int] | None = None) -> Tensor:
        """Σ_o w_o · o(x); with ``active`` (op indices, ascending) only those ops run, the rest count as zero."""
        return mixed_sum(self._ops, x, weights, active)


class SearchCell(nn.Module):
    """A cell with every edge mixed: node j = Σ_{i<j} ō_(i,j)(x_i); output = concat of the last nodes.

    ``edge_ops[e]``: the candidate ops of edge ``e``, in the space's edge order.
    """

    def __init__(self, steps: int, multiplier: int, C_prev_prev: int, C_prev: int, C: int,
                 reduction: bool, reduction_prev: bool, edge_ops: Sequence[Sequence[str]]):
        super().__init__()
        self.reduction = reduction
        self._steps = steps
        self._multiplier = multiplier
        self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False) if reduction_prev else \
            ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._ops = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self._ops.append(MixedOp(C, stride, edge_ops[len(self._ops)]))

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor,
                active: Sequence[Sequence[int]] | None = None) -> Tensor:
        """``active[e]``, when given, lists the ops edge ``e`` computes; an edge with none is skipped."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self._steps):
            if active is None:
                node = sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            else:
                inputs = [j for j in range(len(states)) if active[offset + j]]
                node = sum_of([self._ops[offset + j](states[j], weights[offset + j], active[offset + j])
                               for j in inputs]) if inputs else node_zeros(states[0], 2 if self.reduction else 1)
            offset += len(states)
            states.append(node)
        return torch.cat(states[-self._multiplier:], dim=1)


class DartsSupernet(SupernetBase, nn.Module):
    """The weight-sharing network; follows the :class:`selbench.Supernet` protocol."""

    def __init__(self, space: SearchSpace, C: int, num_classes: int, layers: int, multiplier: int,
                 stem_multiplier: int, in_channels: int, implementation: str = "fast"):
        super().__init__()
        self.space = space
        self.implementation = implementation
        self.space_args = dict(C=C, num_classes=num_classes, layers=layers, steps=space.steps,
                               multiplier=multiplier, stem_multiplier=stem_multiplier,
                               in_channels=in_channels, ops=list(space.ops))

        def make_cell(C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                      reduction_prev: bool) -> tuple[nn.Module, int]:
            edge_ops = [space.edge_ops("reduce" if reduction else "normal", edge.index) for edge in space.edges]
            cell = SearchCell(space.steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, edge_ops)
            return cell, multiplier * C

        self.stem, self.cells, channels_after = stack_cells(make_cell, C=C, layers=layers,
                                                            stem_multiplier=stem_multiplier, in_channels=in_channels)
        C_prev = channels_after[-1]
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self.init_alphas()

    @property
    def implementation(self) -> str:
        """``fast`` or ``reference``: how :meth:`forward` computes the cells (the same function either way)."""
        return self._implementation

    @implementation.setter
    def implementation(self, name: str) -> None:
        if name not in IMPLEMENTATIONS:
            raise ValueError(f"unknown DARTS supernet implementation {name!r}; choose one of {list(IMPLEMENTATIONS)}")
        self._implementation = name

    def forward(self, x: Tensor, weights: Mapping[str, Tensor] | None = None,
                active: Mapping[str, Sequence[Sequence[int]]] | None = None) -> Tensor:
        """Logits under ``weights`` (default softmax(α)); see :class:`selbench.Supernet` for ``active``."""
        mixing = self.resolve_mixing(weights)
        computed = self.computed_ops(active)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            cell_type = "reduce" if cell.reduction else "normal"
            weights_of_cell, active_of_cell = mixing[cell_type], computed.get(cell_type)
            if self._implementation == "fast":
                s0, s1 = s1, fast_cell_forward(cell, s0, s1, weights_of_cell, active_of_cell)
            else:
                s0, s1 = s1, cell(s0, s1, weights_of_cell, active_of_cell)
        return self.classifier(self.global_pooling(s1).flatten(1))
