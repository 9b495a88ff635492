"""Search-space contract: cell structure, validity of a discrete cell, the supernet protocol.

A :class:`SearchSpace` describes one configuration of a space (its op list and number of
intermediate nodes); :meth:`SearchSpace.variant` gives another configuration.  Edges are
numbered in the order used by DARTS and NAS-Bench-201 alike: for each intermediate node, its
incoming edges from node 0, 1, ... in turn.  Row ``e`` of an α tensor belongs to edge ``e``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import (
    Any,
    Iterable,
    Iterator,
    Mapping,
    Protocol,
    Sequence,
    runtime_checkable,
)

import torch
from torch import Tensor, nn

from selbench.core.errors import GenotypeError
from selbench.core.genotype import CellGenotype, Genotype

NONE_OP = "none"


@dataclass(frozen=True)
class Edge:
    """Edge ``index`` (its row in α) carries node ``src`` into node ``dst``."""

    index: int
    src: int
    dst: int


@runtime_checkable
class Supernet(Protocol):
    """What every supernet module offers (DESIGN "Core contracts").

    * ``alphas``: cell type -> ``Parameter[E, O]`` of architecture logits.
    * ``forward(x, weights=None)``: ``weights`` maps cell types to ``Tensor[E, O]`` mixing
      weights that replace ``softmax(alpha)`` for this call (differentiable; cell types left
      out keep their softmax).
    * ``weight_parameters()`` / ``arch_parameters()``: θ and α, disjoint.
    * ``space``: the configured :class:`SearchSpace` it belongs to; ``space_args``: the
      keyword arguments that rebuild it with ``space.build_supernet(**space_args)``.

    Optional, for speed (detect it with ``hasattr(supernet, "active_ops")``):

    * ``forward(x, weights=None, active=None)``: ``active`` maps cell types to one sequence
      of op indices per edge; only those ops are computed, the others contribute exactly
      zero, as if their mixing weight were 0 (an edge with none is skipped).  Callers that
      know on the host which weights are zero skip that work without reading the weight
      tensor, i.e. without a device synchronisation.  Outputs and θ gradients equal those of
      the full forward whenever the left-out weights are 0; the gradient with respect to a
      left-out op's weight is not computed (it reads as zero).
    * ``active_ops(active)``: a context manager that makes ``active`` the default of every
      forward inside its block, for loops that call ``forward(x, weights)`` (the harness's
      evaluation and training loops).
    """

    alphas: Mapping[str, nn.Parameter]
    space: SearchSpace
    space_args: dict

    def forward(self, x: Tensor, weights: Mapping[str, Tensor] | None = None) -> Tensor: ...

    def weight_parameters(self) -> Iterator[nn.Parameter]: ...

    def arch_parameters(self) -> Iterator[nn.Parameter]: ...


class SearchSpace(ABC):
    """A cell-based search space in one configuration.

    Subclasses set ``name``, ``cell_types``, ``ops``, ``num_input_nodes``, ``steps`` and
    ``in_degree`` (inputs per intermediate node in a valid discrete cell; ``None`` means
    every edge is kept and carries one op, ``none`` included, as in NAS-Bench-201), and may
    set ``retrain_defaults``: the ``build_network`` arguments of the space's published
    evaluation network, which a recipe's ``[retrain]`` section takes when it leaves them out
    (arguments not listed there default to ``build_network``'s own defaults).
    """

    name: str
    cell_types: tuple[str, ...]
    ops: tuple[str, ...]
    num_input_nodes: int
    steps: int
    in_degree: int | None
    retrain_defaults: Mapping[str, Any] = {}

    # -- structure -------------------------------------------------------------------------
    @property
    def nodes(self) -> range:
        """Indices of the intermediate nodes."""
        return range(self.num_input_nodes, self.num_input_nodes + self.steps)

    @cached_property  # a space's structure is fixed once built; variant() makes a new space
    def edges(self) -> tuple[Edge, ...]:
        out, index = [], 0
        for dst in self.nodes:
            for src in range(dst):
                out.append(Edge(index, src, dst))
                index += 1
        return tuple(out)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def edges_into(self, dst: int) -> tuple[Edge, ...]:
        return tuple(e for e in self.edges if e.dst == dst)

    def edge_index(self, src: int, dst: int) -> int:
        for e in self.edges:
            if e.src == src and e.dst == dst:
                return e.index
        raise KeyError((src, dst))

    @property
    def selectable_ops(self) -> tuple[int, ...]:
        """Op indices a discrete cell may use (``none`` is excluded where edges are pruned instead)."""
        return tuple(i for i, op in enumerate(self.ops) if not (self.in_degree is not None and op == NONE_OP))

    @property
    def default_concat(self) -> tuple[int, ...]:
        return tuple(self.nodes) if self.in_degree is not None else (self.nodes[-1],)

    # -- discrete cells --------------------------------------------------------------------
    def validate(self, genotype: Genotype, *, variable_in_degree: bool = False) -> None:
        """Raise :class:`GenotypeError` naming the first problem that makes ``genotype`` invalid here.

        ``variable_in_degree`` allows intermediate nodes with any number (0 included) of
        distinct inputs; nodes without inputs must then be absent from the concat and feed no
        other node.
        """
        if set(genotype.cell_types) != set(self.cell_types):
            raise GenotypeError(
                f"genotype has cell types {list(genotype.cell_types)}, "
                f"the {self.name} space needs {list(self.cell_types)}")
        for cell_type in self.cell_types:
            self._validate_cell(cell_type, genotype[cell_type], variable_in_degree)

    def _validate_cell(self, cell_type: str, cell: CellGenotype, variable_in_degree: bool) -> None:
        where = f"{self.name} genotype, {cell_type} cell"
        if len(cell.nodes) != self.steps:
            raise GenotypeError(f"{where}: {len(cell.nodes)} nodes, the space has {self.steps} intermediate nodes")
        allowed = {self.ops[i] for i in self.selectable_ops}
        live = set(range(self.num_input_nodes))
        for dst, node in zip(self.nodes, cell.nodes):
            for op, src in node:
                if op not in allowed:
                    raise GenotypeError(f"{where}, node {dst}: op {op!r} is not one of {sorted(allowed)}")
                if not 0 <= src < dst:
                    raise GenotypeError(f"{where}, node {dst}: input {src} must be an earlier node (0..{dst - 1})")
                if src not in live:
                    raise GenotypeError(
                        f"{where}, node {dst}: input {src} is a node without inputs; drop this edge too")
            sources = [src for _, src in node]
            if len(set(sources)) != len(sources):
                raise GenotypeError(f"{where}, node {dst}: inputs {sources} repeat a node")
            expected = dst if self.in_degree is None else self.in_degree
            if variable_in_degree and self.in_degree is not None:
                if len(sources) > dst:
                    raise GenotypeError(f"{where}, node {dst}: {len(sources)} inputs, at most {dst} possible")
            elif len(sources) != expected:
                raise GenotypeError(f"{where}, node {dst}: {len(sources)} inputs, a valid cell has exactly {expected}")
            if sources:
                live.add(dst)
        dead_in_concat = [c for c in cell.concat if c not in live]
        if not cell.concat or dead_in_concat:
            raise GenotypeError(
                f"{where}: concat {list(cell.concat)} must list nodes that exist and have inputs "
                f"(bad: {dead_in_concat})")
        if self.in_degree is None and cell.concat != self.default_concat:
            raise GenotypeError(
                f"{where}: the cell output is node {self.nodes[-1]}, so concat must be {list(self.default_concat)}, "
                f"not {list(cell.concat)}")

    def genotype_from_scores(self, scores: Mapping[str, Tensor], *, variable_in_degree: bool = False) -> Genotype:
        """The space's discrete rule applied to per-(edge, op) scores, larger = better.

        With a fixed in-degree (DARTS): per node, rank incoming edges by their best score
        among selectable ops, keep the top ``in_degree`` (ties: lower edge index first), and
        give each kept edge its best selectable op (ties: lower op index).  Kept edges are
        listed in rank order, as DARTS writes them.  Without one (NAS-Bench-201): every edge
        takes its best op, ``none`` included.
        """
        cells = {}
        selectable = torch.tensor(self.selectable_ops)
        for cell_type in self.cell_types:
            table = scores[cell_type].detach().to("cpu", torch.float64)
            if tuple(table.shape) != (self.num_edges, len(self.ops)):
                raise GenotypeError(
                    f"scores for the {cell_type} cell have shape {tuple(table.shape)}, "
                    f"expected {(self.num_edges, len(self.ops))}")
            masked = table[:, selectable]
            best_value, best_pos = _first_max(masked)
            nodes = []
            for dst in self.nodes:
                incoming = self.edges_into(dst)
                if self.in_degree is None:
                    kept = list(incoming)
                else:
                    kept = sorted(incoming, key=lambda e: -best_value[e.index].item())[: self.in_degree]
                nodes.append([(self.ops[int(selectable[best_pos[e.index]])], e.src) for e in kept])
            cells[cell_type] = CellGenotype.of(nodes, self.default_concat)
        return Genotype(cells)

    def genotype_from_choices(self, choices: Mapping[str, Mapping[int, str]]) -> Genotype:
        """Build a genotype from chosen ``{cell type: {edge index: op}}``; edges left out are dropped.

        Nodes list their edges by input index; nodes without any edge are left out of the concat.
        """
        edges = self.edges
        cells = {}
        for cell_type in self.cell_types:
            chosen = choices[cell_type]
            nodes = [[(chosen[e.index], e.src) for e in self.edges_into(dst) if e.index in chosen]
                     for dst in self.nodes]
            unknown = set(chosen) - {e.index for e in edges}
            if unknown:
                raise GenotypeError(
                    f"{cell_type} cell: edge indices {sorted(unknown)} do not exist in the {self.name} space")
            if self.in_degree is None:
                concat = self.default_concat
            else:
                concat = tuple(dst for dst, node in zip(self.nodes, nodes) if node)
            cells[cell_type] = CellGenotype.of(nodes, concat)
        return Genotype(cells)

    # -- construction ----------------------------------------------------------------------
    def set_structure(self, ops: Sequence[str], steps: int, known_ops: Iterable[str]) -> None:
        """Set ``ops`` (distinct names among ``known_ops``) and ``steps`` (>= 1), or raise :class:`GenotypeError`."""
        known = list(known_ops)
        if not ops or len(set(ops)) != len(ops) or any(op not in known for op in ops):
            raise GenotypeError(f"{self.name} space: ops must be distinct names from {known}; got {list(ops)}")
        if steps < 1:
            raise GenotypeError(f"{self.name} space: steps must be >= 1, got {steps}")
        self.ops = tuple(ops)
        self.steps = steps

    @abstractmethod
    def variant(self, *args: Any, **structure: Any) -> SearchSpace:
        """The same space with another structure (e.g. ``ops=...``, ``steps=...``)."""

    @abstractmethod
    def build_supernet(self, *args: Any, **kwargs: Any) -> nn.Module:
        """A weight-sharing supernet following the :class:`Supernet` protocol."""

    @abstractmethod
    def build_network(self, genotype: Genotype, *args: Any, **kwargs: Any) -> nn.Module:
        """The discrete network of ``genotype``, to be trained from scratch."""

    @abstractmethod
    def infer_supernet_args(self, state_dict: Mapping[str, Tensor], alphas: Mapping[str, Tensor]) -> dict:
        """``build_supernet`` arguments that produce a module matching a foreign checkpoint."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {len(self.ops)} ops, {self.steps} nodes>"


def space_layout(space: SearchSpace) -> dict[str, Any]:
    """What a reader of the record needs to label its [E, O] tables: cell types, ops, input nodes, edges (src, dst)."""
    return {"name": space.name, "cell_types": list(space.cell_types), "ops": list(space.ops),
            "num_input_nodes": space.num_input_nodes, "edges": [[edge.src, edge.dst] for edge in space.edges]}


def _first_max(table: Tensor) -> tuple[Tensor, Tensor]:
    """Row-wise max and the *lowest* column index reaching it."""
    best = table.max(dim=1).values
    first = (table == best[:, None]).to(torch.int64).argmax(dim=1)
    return best, first
