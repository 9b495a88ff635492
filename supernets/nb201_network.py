"""The discrete NAS-Bench-201 network of one genotype, to be trained from scratch.

In a cell, node 0 is the cell input and node i = Σ_{j<i} o_{j→i}(node j); the last node is
the cell output.  ``none`` edges contribute zeros, exactly as in the benchmark's networks.
"""
from __future__ import annotations

from torch import Tensor, nn

from selbench import CellGenotype, Genotype

from .nb201_macro import Nb201Macro, edge_key
from .nb201_ops import make_op


class Nb201Cell(nn.Module):
    def __init__(self, cell: CellGenotype, C: int):
        super().__init__()
        self._inputs = [tuple(src for _, src in node) for node in cell.nodes]
        self.edges = nn.ModuleDict({
            edge_key(src, dst): make_op(op, C, affine=True)
            for dst, node in enumerate(cell.nodes, start=1)
            for op, src in node
        })

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for dst, sources in enumerate(self._inputs, start=1):
            nodes.append(sum(self.edges[edge_key(src, dst)](nodes[src]) for src in sources))
        return nodes[-1]


class Nb201Network(Nb201Macro):
    """``forward`` returns ``(logits, None)``, the DARTS network's ``(logits, auxiliary logits)`` shape."""

    def __init__(self, genotype: Genotype, C: int, N: int, num_classes: int, in_channels: int):
        cell = genotype["cell"]
        super().__init__(lambda channels: Nb201Cell(cell, channels), C, N, num_classes, in_channels)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        return self.classify(x), None
