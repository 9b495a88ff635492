"""Search-space contract: cell structure, validity of a discrete cell, the supernet protocol.

A :class:`SearchSpace` describes one configuration of a space (its op list and number of
intermediate nodes); :meth:`SearchSpace.variant` gives another configuration.  Edges are
numbered in the order used by DARTS and NAS-Bench-201 alike: for each intermediate node, its
incoming edges from node 0, 1, ... in turn.  Row ``e`` of an α tensor belongs to edge ``e``,
and its column ``k`` to the op ``space.edge_ops(cell_type, e)[k]``: every edge offers
``space.ops`` in most spaces, its own op set in some (RobustDARTS's S1), always
``space.num_ops`` of them.
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

    A space whose edges offer different ops sets ``per_edge_ops`` (with :meth:`set_per_edge_ops`):
    per cell type, one op tuple per edge, all of the same length; ``ops`` is then every op that
    some edge offers, and :meth:`edge_ops` names the columns of each edge's α row.
    """

    name: str
    cell_types: tuple[str, ...]
    ops: tuple[str, ...]
    num_input_nodes: int
    steps: int
    in_degree: int | None
    per_edge_ops: Mapping[str, tuple[tuple[str, ...], ...]] | None = None
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

    def edge_ops(self, cell_type: str, edge: int) -> tuple[str, ...]:
        """The ops edge ``edge`` of the ``cell_type`` cell offers, in the order of its α columns."""
        if self.per_edge_ops is None:
            return self.ops
        return self.per_edge_ops[cell_type][edge]

    @property
    def num_ops(self) -> int:
        """Ops per edge: the number of columns of an α table."""
        return len(self.edge_ops(self.cell_types[0], 0))

    def edge_selectable(self, cell_type: str, edge: int) -> tuple[int, ...]:
        """Column indices of the ops a discrete cell may put on this edge (``none`` is excluded where edges are
        pruned instead)."""
        pruned = self.in_degree is not None
        return tuple(k for k, op in enumerate(self.edge_ops(cell_type, edge)) if not (pruned and op == NONE_OP))

    @property
    def selectable_ops(self) -> tuple[int, ...]:
        """Column indices selectable on every edge of every cell type (all of :meth:`edge_selectable` where every
        edge offers ``ops``)."""
        per_edge = [set(self.edge_selectable(c, e.index)) for c in self.cell_types for e in self.edges]
        return tuple(sorted(set.intersection(*per_edge)))

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
        live = set(range(self.num_input_nodes))
        for dst, node in zip(self.nodes, cell.nodes):
            for op, src in node:
                if not 0 <= src < dst:
                    raise GenotypeError(f"{where}, node {dst}: input {src} must be an earlier node (0..{dst - 1})")
                edge = self.edge_index(src, dst)
                offered = self.edge_ops(cell_type, edge)
                allowed = {offered[k] for k in self.edge_selectable(cell_type, edge)}
                if op not in allowed:
                    on_edge = "" if self.per_edge_ops is None else f" (the ops of edge {edge}, {src}→{dst})"
                    raise GenotypeError(f"{where}, node {dst}: op {op!r} is not one of {sorted(allowed)}{on_edge}")
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
        takes its best op, ``none`` included.  Column ``k`` of edge ``e`` names the op
        ``edge_ops(cell_type, e)[k]``, whatever the space's global op list.
        """
        cells = {}
        for cell_type in self.cell_types:
            table = scores[cell_type].detach().to("cpu", torch.float64)
            if tuple(table.shape) != (self.num_edges, self.num_ops):
                raise GenotypeError(
                    f"scores for the {cell_type} cell have shape {tuple(table.shape)}, "
                    f"expected {(self.num_edges, self.num_ops)}")
            best_value, best_op = [], []
            for edge in self.edges:
                selectable = self.edge_selectable(cell_type, edge.index)
                value, pos = _first_max(table[edge.index, list(selectable)][None])
                best_value.append(value.item())
                best_op.append(self.edge_ops(cell_type, edge.index)[selectable[int(pos)]])
            nodes = []
            for dst in self.nodes:
                incoming = self.edges_into(dst)
                if self.in_degree is None:
                    kept = list(incoming)
                else:
                    kept = sorted(incoming, key=lambda e: -best_value[e.index])[: self.in_degree]
                nodes.append([(best_op[e.index], e.src) for e in kept])
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

    def set_per_edge_ops(self, table: Mapping[str, Sequence[Sequence[str]]], known_ops: Iterable[str]) -> None:
        """Give each edge its own ops: ``table[cell type][edge]``, distinct names among ``known_ops``, the same number
        on every edge; ``ops`` becomes every op used, in the order of ``known_ops``.  Call after :meth:`set_structure`
        (the table must have a row per edge), or get a :class:`GenotypeError`."""
        known = list(known_ops)
        if set(table) != set(self.cell_types):
            raise GenotypeError(f"{self.name} space: per-edge ops for cell types {sorted(table)}, "
                                f"expected {sorted(self.cell_types)}")
        rows = {cell_type: tuple(tuple(ops) for ops in table[cell_type]) for cell_type in self.cell_types}
        widths = {len(ops) for cell in rows.values() for ops in cell}
        for cell_type, cell in rows.items():
            if len(cell) != self.num_edges:
                raise GenotypeError(f"{self.name} space: {len(cell)} per-edge op sets for the {cell_type} cell, "
                                    f"which has {self.num_edges} edges")
            bad = [ops for ops in cell if not ops or len(set(ops)) != len(ops) or any(op not in known for op in ops)]
            if bad:
                raise GenotypeError(f"{self.name} space: per-edge ops must be distinct names from {known}; "
                                    f"got {list(bad[0])}")
        if len(widths) != 1:
            raise GenotypeError(f"{self.name} space: every edge needs the same number of ops, got {sorted(widths)}")
        used = {op for cell in rows.values() for ops in cell for op in ops}
        self.ops = tuple(op for op in known if op in used)
        self.per_edge_ops = rows

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
        per_edge = "" if self.per_edge_ops is None else f" per edge (of {len(self.ops)})"
        return f"<{type(self).__name__} {self.name}: {self.num_ops} ops{per_edge}, {self.steps} nodes>"


def space_layout(space: SearchSpace) -> dict[str, Any]:
    """What a reader of the record needs to label its [E, O] tables: cell types, ops, input nodes, edges (src, dst),
    and, for spaces with per-edge op sets, ``edge_ops`` (cell type -> one op list per edge)."""
    layout = {"name": space.name, "cell_types": list(space.cell_types), "ops": list(space.ops),
              "num_input_nodes": space.num_input_nodes, "edges": [[edge.src, edge.dst] for edge in space.edges]}
    if space.per_edge_ops is not None:
        layout["edge_ops"] = {cell_type: [list(ops) for ops in rows] for cell_type, rows in space.per_edge_ops.items()}
    return layout


def _first_max(table: Tensor) -> tuple[Tensor, Tensor]:
    """Row-wise max and the *lowest* column index reaching it."""
    best = table.max(dim=1).values
    first = (table == best[:, None]).to(torch.int64).argmax(dim=1)
    return best, first
