"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020).

One cell type ``cell`` with one input node (0) and three further nodes; node 3 is the cell
output.  Its 6 edges, in α-row order, are 1←0, 2←0, 2←1, 3←0, 3←1, 3←2, each carrying one
of ``none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3`` in a discrete cell
(``none`` allowed), so the space holds 5⁶ = 15,625 cells.  Genotypes read and write the
benchmark's string, e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|...|``.
"""
from __future__ import annotations

import itertools
import re
from typing import Any, Iterator, Mapping, Sequence

from torch import Tensor

from selbench import CheckpointError, Genotype, SearchSpace, SelbenchError, hookimpl

from .nb201_network import Nb201Network
from .nb201_ops import NB201_OPS, OPS
from .nb201_supernet import Nb201Supernet

CELL = "cell"


class Nb201Space(SearchSpace):
    name = "nb201"
    cell_types = (CELL,)
    num_input_nodes = 1
    in_degree = None
    retrain_defaults = {"C": 16, "N": 5}  # a recipe's [retrain] network: the benchmark's own

    def __init__(self, ops: Sequence[str] = NB201_OPS, steps: int = 3):
        self.set_structure(ops, steps, known_ops=OPS)

    def variant(self, ops: Sequence[str] | None = None, steps: int | None = None) -> Nb201Space:
        return Nb201Space(self.ops if ops is None else ops, self.steps if steps is None else steps)

    # -- the finite set of cells -------------------------------------------------------------
    @property
    def num_genotypes(self) -> int:
        """How many discrete cells the space holds: ops ** edges."""
        return len(self.ops) ** self.num_edges

    def all_genotypes(self) -> Iterator[Genotype]:
        """Every discrete cell once, in odometer order: the last edge's op changes fastest."""
        for chosen in itertools.product(self.ops, repeat=self.num_edges):
            yield self.genotype_from_choices({CELL: dict(enumerate(chosen))})

    # -- construction ------------------------------------------------------------------------
    def build_supernet(self, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3,
                       steps: int | None = None, ops: Sequence[str] | None = None) -> Nb201Supernet:
        """The search network (α: one ``[E, O]`` tensor under ``cell``); ``N`` cells per stage."""
        _check_positive(C=C, N=N, num_classes=num_classes, in_channels=in_channels)
        return Nb201Supernet(self.variant(ops, steps), C=C, N=N, num_classes=num_classes, in_channels=in_channels)

    def build_network(self, genotype: Genotype, C: int = 16, N: int = 5, num_classes: int = 10,
                      in_channels: int = 3) -> Nb201Network:
        """The benchmark's network for ``genotype`` (any of the five ops; node count read from it)."""
        steps = len(genotype[CELL].nodes) if CELL in genotype.cell_types else self.steps
        self.variant(ops=NB201_OPS, steps=steps).validate(genotype)
        _check_positive(C=C, N=N, num_classes=num_classes, in_channels=in_channels)
        return Nb201Network(genotype, C=C, N=N, num_classes=num_classes, in_channels=in_channels)

    def infer_supernet_args(self, state_dict: Mapping[str, Tensor], alphas: Mapping[str, Tensor]) -> dict:
        """Read C, N, steps, classes and input channels off the tensors; α must have all five ops."""
        try:
            stem = state_dict["stem.0.weight"]
            classifier = state_dict["classifier.weight"]
            alpha = alphas[CELL]
        except KeyError as exc:
            raise CheckpointError(f"not an NB201 supernet checkpoint: it has no {exc.args[0]!r}") from None
        shape = tuple(getattr(alpha, "shape", ()))
        steps = (next((s for s in range(1, 64) if self.variant(steps=s).num_edges == shape[0]), None)
                 if len(shape) == 2 else None)
        if steps is None or shape[1] != len(NB201_OPS):
            raise CheckpointError(
                f"α of shape {'×'.join(map(str, shape))} fits no NB201 space (expected 6×5); "
                "pass the space arguments explicitly")
        positions = 1 + max((int(m.group(1)) for k in state_dict if (m := re.match(r"cells\.(\d+)\.", k))),
                            default=-1)
        if positions < 5 or (positions - 2) % 3:
            raise CheckpointError(f"an NB201 supernet has 3N + 2 cells (N >= 1); this state dict has {positions}")
        return dict(C=stem.shape[0], N=(positions - 2) // 3, num_classes=classifier.shape[0], in_channels=stem.shape[1],
                    steps=steps, ops=list(NB201_OPS))


def _check_positive(**sizes: int) -> None:
    bad = {name: value for name, value in sizes.items() if not (isinstance(value, int) and value >= 1)}
    if bad:
        raise SelbenchError(f"nb201 space: {', '.join(f'{k}={v!r}' for k, v in bad.items())} must be positive integers")


@hookimpl
def selbench_register_spaces(register: Any) -> None:
    register(Nb201Space())
