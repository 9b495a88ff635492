"""The DARTS search network: every edge is a mixture of all candidate ops (Liu et al., 2019).

Module names follow the original ``model_search.py`` (``stem``, ``cells.{i}.preprocess0|1``,
``cells.{i}._ops.{edge}._ops.{op}``, ``global_pooling``, ``classifier``) so its state dicts
load strictly; α lives in ``alphas`` and may be absent from a state dict being loaded.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .darts_ops import FactorizedReduce, ReLUConvBN, make_op

if TYPE_CHECKING:
    from .darts import DartsSpace


def reduction_layers(layers: int) -> set[int]:
    """Cells that halve the resolution and double the channels: at 1/3 and 2/3 of the depth."""
    return {layers // 3, 2 * layers // 3}


class MixedOp(nn.Module):
    """One supernet edge: ō(x) = Σ_o w_o · o(x) over the candidate ops."""

    def __init__(self, C: int, stride: int, ops: Sequence[str]):
        super().__init__()
        self._ops = nn.ModuleList(make_op(name, C, stride, affine=False, pool_bn=True) for name in ops)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        return sum(w * op(x) for w, op in zip(weights, self._ops))


class SearchCell(nn.Module):
    """A cell with every edge mixed: node j = Σ_{i<j} ō_(i,j)(x_i); output = concat of the last nodes."""

    def __init__(self, steps: int, multiplier: int, C_prev_prev: int, C_prev: int, C: int,
                 reduction: bool, reduction_prev: bool, ops: Sequence[str]):
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
                self._ops.append(MixedOp(C, stride, ops))

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self._steps):
            node = sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(node)
        return torch.cat(states[-self._multiplier:], dim=1)


class DartsSupernet(nn.Module):
    """The weight-sharing network; follows the :class:`selbench.Supernet` protocol."""

    def __init__(self, space: "DartsSpace", C: int, num_classes: int, layers: int, multiplier: int,
                 stem_multiplier: int, in_channels: int):
        super().__init__()
        self.space = space
        self.space_args = dict(C=C, num_classes=num_classes, layers=layers, steps=space.steps,
                               multiplier=multiplier, stem_multiplier=stem_multiplier,
                               in_channels=in_channels, ops=list(space.ops))
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_curr),
        )
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in reduction_layers(layers)
            if reduction:
                C_curr *= 2
            self.cells.append(SearchCell(space.steps, multiplier, C_prev_prev, C_prev, C_curr,
                                         reduction, reduction_prev, space.ops))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self.alphas = nn.ParameterDict({
            cell_type: nn.Parameter(1e-3 * torch.randn(space.num_edges, len(space.ops)))
            for cell_type in space.cell_types
        })
        self.register_load_state_dict_post_hook(_alphas_optional)

    def mixing_weights(self) -> dict[str, Tensor]:
        """softmax(α) per edge, the weights a plain forward uses."""
        return {cell_type: F.softmax(alpha, dim=-1) for cell_type, alpha in self.alphas.items()}

    def forward(self, x: Tensor, weights: Mapping[str, Tensor] | None = None) -> Tensor:
        mixing = self.mixing_weights() if weights is None or len(weights) < len(self.alphas) else {}
        mixing.update(weights or {})
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, mixing["reduce" if cell.reduction else "normal"])
        return self.classifier(self.global_pooling(s1).flatten(1))

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        arch = {id(p) for p in self.alphas.values()}
        return (p for p in self.parameters() if id(p) not in arch)

    def arch_parameters(self) -> Iterator[nn.Parameter]:
        return iter(self.alphas.values())


def _alphas_optional(module: nn.Module, incompatible) -> None:
    """State dicts of the original code carry no α: loading one keeps the current α."""
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if not k.startswith("alphas.")]
