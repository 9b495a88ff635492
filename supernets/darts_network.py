"""The discrete DARTS network (``NetworkCIFAR`` of the original ``model.py``), built from a genotype.

Module names follow the original code (``stem``, ``cells.{i}.preprocess0|1``,
``cells.{i}._ops.{k}``, ``auxiliary_head``, ``global_pooling``, ``classifier``).  Nodes may
have any number of inputs (variable-degree cells); a node without inputs is not computed.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from selbench import CellGenotype, Genotype

from .darts_macro import stack_cells
from .darts_ops import FactorizedReduce, ReLUConvBN, make_op


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    """Zero whole samples with probability ``drop_prob`` and rescale the rest (DARTS's drop path)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class DiscreteCell(nn.Module):
    def __init__(self, cell: CellGenotype, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(C_prev_prev, C) if reduction_prev else ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        self._nodes = [tuple(src for _, src in node) for node in cell.nodes]
        self._concat = cell.concat
        self.multiplier = len(cell.concat)
        self._ops = nn.ModuleList(
            make_op(op, C, 2 if reduction and src < 2 else 1, affine=True, pool_bn=False) for op, src in cell.pairs)

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float) -> Tensor:
        states: list[Tensor | None] = [self.preprocess0(s0), self.preprocess1(s1)]
        k = 0
        for sources in self._nodes:
            total = None
            for src in sources:
                op = self._ops[k]
                k += 1
                h = op(states[src])
                if self.training and drop_prob > 0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([_with_inputs(states[i]) for i in self._concat], dim=1)


def _with_inputs(state: Tensor | None) -> Tensor:
    """A concatenated node's output: a valid cell concatenates only nodes that have inputs."""
    if state is None:
        raise ValueError("the cell concatenates a node without inputs")
    return state


class AuxiliaryHeadCIFAR(nn.Module):
    """Auxiliary classifier on an 8×8 feature map (DARTS's CIFAR head)."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class DartsNetwork(nn.Module):
    """Stacked discrete cells; ``forward`` returns ``(logits, auxiliary logits or None)``.

    ``drop_path_prob`` is set by the training loop (DARTS ramps it linearly over epochs).
    """

    def __init__(self, genotype: Genotype, C: int, num_classes: int, layers: int, auxiliary: bool,
                 stem_multiplier: int = 3, in_channels: int = 3):
        super().__init__()
        self._auxiliary_at: int | None = 2 * layers // 3 if auxiliary else None
        self.drop_path_prob = 0.0

        def make_cell(C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                      reduction_prev: bool) -> tuple[nn.Module, int]:
            cell = DiscreteCell(genotype["reduce" if reduction else "normal"], C_prev_prev, C_prev, C, reduction,
                                reduction_prev)
            return cell, cell.multiplier * C

        self.stem, self.cells, channels_after = stack_cells(make_cell, C=C, layers=layers,
                                                            stem_multiplier=stem_multiplier, in_channels=in_channels)
        C_prev = channels_after[-1]
        if self._auxiliary_at is not None:  # auxiliary
            self.auxiliary_head = AuxiliaryHeadCIFAR(channels_after[self._auxiliary_at], num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        logits_aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self._auxiliary_at and self.training:
                logits_aux = self.auxiliary_head(s1)
        return self.classifier(self.global_pooling(s1).flatten(1)), logits_aux
