"""The DARTS macro skeleton shared by its supernet and its discrete network: stem, stacked cells, reductions.

stem (conv 3×3 + BN, ``stem_multiplier``·C channels) → ``layers`` cells, of which the ones at
1/3 and 2/3 of the depth are reduction cells that halve the resolution and double the
channels; each cell reads the outputs of the two cells before it.  Module names follow the
original code (``stem``, ``cells.{i}``).
"""
from __future__ import annotations

from typing import Callable

from torch import nn

# make_cell(C_prev_prev, C_prev, C, reduction, reduction_prev) -> (cell, channels of its output)
MakeCell = Callable[[int, int, int, bool, bool], tuple[nn.Module, int]]


def reduction_layers(layers: int) -> set[int]:
    """Cells that halve the resolution and double the channels: at 1/3 and 2/3 of the depth."""
    return {layers // 3, 2 * layers // 3}


def darts_stem(in_channels: int, channels: int) -> nn.Sequential:
    """DARTS's CIFAR stem: a 3×3 convolution without bias, then BatchNorm."""
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))


def stack_cells(make_cell: MakeCell, *, C: int, layers: int, stem_multiplier: int,
                in_channels: int) -> tuple[nn.Sequential, nn.ModuleList, list[int]]:
    """The stem, the ``layers`` cells, and the output channels after each cell (built in the original order)."""
    C_curr = stem_multiplier * C
    stem = darts_stem(in_channels, C_curr)
    C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
    cells = nn.ModuleList()
    channels_after = []
    reduction_prev = False
    for i in range(layers):
        reduction = i in reduction_layers(layers)
        if reduction:
            C_curr *= 2
        cell, out_channels = make_cell(C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
        cells.append(cell)
        reduction_prev = reduction
        C_prev_prev, C_prev = C_prev, out_channels
        channels_after.append(C_prev)
    return stem, cells, channels_after
