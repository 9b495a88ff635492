"""The NAS-Bench-201 macro skeleton shared by its supernet and its discrete network.

stem (conv 3×3 + BN) → N cells at C → residual block (stride 2) → N cells at 2C →
residual block (stride 2) → N cells at 4C → BN-ReLU → global average pool → linear.

Module names follow the reference code (``stem``, ``cells.{i}`` counting the residual blocks
too, ``lastact``, ``global_pooling``, ``classifier``); inside a cell, edge ``j→i`` is
``edges["i<-j"]``.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from .nb201_ops import ResidualBlock


def edge_key(src: int, dst: int) -> str:
    """The reference code's name for the edge from node ``src`` into node ``dst``."""
    return f"{dst}<-{src}"


def stage_layout(C: int, N: int) -> list[tuple[int, bool]]:
    """``(channels, is a residual block)`` for every position of ``cells``: 3N cells and 2 blocks."""
    layout = []
    for stage, channels in enumerate((C, 2 * C, 4 * C)):
        if stage > 0:
            layout.append((channels, True))
        layout.extend([(channels, False)] * N)
    return layout


class Nb201Macro(nn.Module):
    """Stem, stages and head around cells built by ``make_cell(channels)``."""

    def __init__(self, make_cell: Callable[[int], nn.Module], C: int, N: int, num_classes: int, in_channels: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        C_prev = C
        for channels, residual in stage_layout(C, N):
            self.cells.append(ResidualBlock(C_prev, channels) if residual else make_cell(channels))
            C_prev = channels
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def classify(self, x: Tensor, *cell_args: Any) -> Tensor:
        """Logits; every cell (not the residual blocks) also receives ``cell_args``."""
        h = self.stem(x)
        for cell in self.cells:
            h = cell(h) if isinstance(cell, ResidualBlock) else cell(h, *cell_args)
        return self.classifier(self.global_pooling(self.lastact(h)).flatten(1))
