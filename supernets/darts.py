"""The DARTS CNN search space (Liu et al., ICLR 2019) and its DARTS-PT variant without ``none``.

Two cell types (``normal``, ``reduce``), two input nodes, ``steps`` intermediate nodes (4),
every earlier node feeding every intermediate node (14 edges); a valid discrete cell keeps
two input edges per node, each with one op other than ``none``.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from torch import Tensor

from selbench import CheckpointError, Genotype, GenotypeError, SearchSpace, hookimpl

from .darts_macro import reduction_layers
from .darts_network import DartsNetwork
from .darts_ops import DARTS_OPS, DARTS_PT_OPS, OPS
from .darts_supernet import IMPLEMENTATIONS, DartsSupernet


class DartsSpace(SearchSpace):
    name = "darts"
    cell_types = ("normal", "reduce")
    num_input_nodes = 2
    in_degree = 2
    # DARTS's CIFAR-10 evaluation network: 20 cells of C=36, auxiliary head after cell 2·layers//3
    retrain_defaults = {"C": 36, "layers": 20, "auxiliary": True}
    # the α shapes infer_supernet_args recognises, as its error names them
    alpha_shapes = "no DARTS space (expected 14×8 for DARTS or 14×7 for DARTS-PT)"

    def __init__(self, ops: Sequence[str] = DARTS_OPS, steps: int = 4):
        self.set_structure(ops, steps, known_ops=OPS)

    def variant(self, ops: Sequence[str] | None = None, steps: int | None = None) -> DartsSpace:
        return DartsSpace(self.ops if ops is None else ops, self.steps if steps is None else steps)

    def build_supernet(self, C: int = 16, layers: int = 8, num_classes: int = 10, steps: int | None = None,
                       multiplier: int | None = None, stem_multiplier: int = 3, in_channels: int = 3,
                       ops: Sequence[str] | None = None, implementation: str = "fast") -> DartsSupernet:
        """The search network; ``multiplier`` (nodes concatenated) defaults to ``steps``.

        ``implementation``: ``fast`` (default) or ``reference``, two formulations of the same
        function with the same state dict (see :mod:`selbench.supernets.darts_supernet`); it is
        not an architecture argument, so checkpoints do not record it.
        """
        if implementation not in IMPLEMENTATIONS:
            raise GenotypeError(f"darts space: implementation must be one of {list(IMPLEMENTATIONS)}, "
                                f"got {implementation!r}")
        space = self.variant(ops, steps)
        return DartsSupernet(space, C=C, num_classes=num_classes, layers=layers,
                             multiplier=space.steps if multiplier is None else multiplier,
                             stem_multiplier=stem_multiplier, in_channels=in_channels,
                             implementation=implementation)

    def build_network(self, genotype: Genotype, C: int = 36, layers: int = 20, num_classes: int = 10,
                      auxiliary: bool = False, stem_multiplier: int = 3, in_channels: int = 3,
                      variable_in_degree: bool = False) -> DartsNetwork:
        """DARTS's evaluation network for ``genotype`` (the number of nodes is read from it)."""
        steps = len(genotype["normal"].nodes) if "normal" in genotype.cell_types else self.steps
        self.network_rules(steps).validate(genotype, variable_in_degree=variable_in_degree)
        return DartsNetwork(genotype, C=C, num_classes=num_classes, layers=layers, auxiliary=auxiliary,
                            stem_multiplier=stem_multiplier, in_channels=in_channels)

    def network_rules(self, steps: int) -> SearchSpace:
        """The space a discrete network's genotype of ``steps`` nodes must be valid in: any DARTS op on any edge."""
        return self.variant(ops=DARTS_OPS, steps=steps)

    def ops_of_width(self, num_ops: int) -> Sequence[str] | None:
        """The op list of a foreign checkpoint whose α has ``num_ops`` columns: DARTS's 8 or DARTS-PT's 7."""
        return {len(DARTS_OPS): DARTS_OPS, len(DARTS_PT_OPS): DARTS_PT_OPS}.get(num_ops)

    def infer_supernet_args(self, state_dict: Mapping[str, Tensor], alphas: Mapping[str, Tensor]) -> dict:
        """Read C, layers, steps, multiplier, classes, input channels and the op set off the tensors."""
        try:
            stem = state_dict["stem.0.weight"]
            C_first = state_dict["cells.0.preprocess1.op.1.weight"].shape[0]  # 2·C when cell 0 reduces
            classifier = state_dict["classifier.weight"]
        except KeyError as exc:
            raise CheckpointError(f"not a DARTS supernet state dict: it has no {exc.args[0]!r}") from None
        shape = tuple(getattr(alphas["normal"], "shape", ()))
        if len(shape) != 2:
            raise CheckpointError(f"α of the normal cell must be a 2-D tensor [edges, ops], got shape {shape}")
        edges, num_ops = shape
        ops = self.ops_of_width(num_ops)
        steps = next((s for s in range(1, 64) if DartsSpace(steps=s).num_edges == edges), None)
        if ops is None or steps is None:
            raise CheckpointError(
                f"α of shape {edges}×{num_ops} fits {self.alpha_shapes}; "
                "pass the space arguments explicitly")
        layers = 1 + max(int(m.group(1)) for k in state_dict if (m := re.match(r"cells\.(\d+)\.", k)))
        C = C_first // 2 if 0 in reduction_layers(layers) else C_first
        C_last = C * 2 ** len(reduction_layers(layers))
        return dict(C=C, layers=layers, num_classes=classifier.shape[0], steps=steps,
                    multiplier=classifier.shape[1] // C_last, stem_multiplier=stem.shape[0] // C,
                    in_channels=stem.shape[1], ops=list(ops))


@hookimpl
def selbench_register_spaces(register: Any) -> None:
    register(DartsSpace())
