"""The discrete cell a selector proposes: per cell type, the chosen (op, input node) pairs per node.

Node numbering follows the search space: in DARTS the two cell inputs are nodes 0 and 1 and
the intermediate nodes are 2, 3, ...; in NAS-Bench-201 the input is node 0 and the
intermediate nodes are 1, 2, 3.  A genotype only stores the choices; whether they form a
valid cell is decided by :meth:`SearchSpace.validate`.

Three text forms round-trip:

* the DARTS text form ``Genotype(normal=[('sep_conv_3x3', 1), ...], normal_concat=range(2, 6), ...)``
  (two pairs per node, as written by the DARTS code; a node list of lists is accepted and
  written for cells whose nodes do not all have two inputs),
* the NAS-Bench-201 string ``|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|...|``
  (a single cell type named ``cell``),
* JSON (:meth:`Genotype.to_json` / :meth:`Genotype.from_json`).
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Protocol, Sequence

from selbench.core.errors import GenotypeError

NB201_CELL = "cell"
_DARTS_FIRST_NODE = 2
JSON_FORMAT = "selbench-genotype"


class GenotypeRules(Protocol):
    """Anything that decides whether a genotype is valid: a :class:`selbench.SearchSpace`."""

    def validate(self, genotype: Genotype, *, variable_in_degree: bool = False) -> None: ...


@dataclass(frozen=True)
class CellGenotype:
    """One cell: ``nodes[k]`` lists the ``(op, input_node)`` pairs feeding intermediate node k."""

    nodes: tuple[tuple[tuple[str, int], ...], ...]
    concat: tuple[int, ...]

    @classmethod
    def of(cls, nodes: Sequence[Sequence[Sequence[Any]]], concat: Sequence[int]) -> CellGenotype:
        try:
            frozen = tuple(tuple((str(op), int(src)) for op, src in node) for node in nodes)
            return cls(frozen, tuple(int(c) for c in concat))
        except (TypeError, ValueError) as exc:
            raise GenotypeError(f"malformed cell: expected lists of (op, input) pairs ({exc})") from None

    @property
    def pairs(self) -> list[tuple[str, int]]:
        """All ``(op, input)`` pairs, node after node (the DARTS flat list)."""
        return [pair for node in self.nodes for pair in node]


class Genotype:
    """An immutable discrete architecture: cell type -> :class:`CellGenotype`.

    ``g.normal`` / ``g.normal_concat`` give the DARTS-style flat pair list and concat for
    cell type ``normal`` (likewise for any cell type), so code written for DARTS reads it.
    """

    __slots__ = ("_cells",)

    def __init__(self, cells: Mapping[str, CellGenotype]):
        if not cells:
            raise GenotypeError("a genotype needs at least one cell type")
        object.__setattr__(self, "_cells", tuple((str(k), v) for k, v in cells.items()))

    # -- access ---------------------------------------------------------------------------
    @property
    def cell_types(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._cells)

    def __getitem__(self, cell_type: str) -> CellGenotype:
        for name, cell in self._cells:
            if name == cell_type:
                return cell
        raise KeyError(cell_type)

    def items(self) -> Iterator[tuple[str, CellGenotype]]:
        return iter(self._cells)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        cell_type, _, suffix = attr.rpartition("_concat")
        try:
            if suffix == "" and cell_type:
                return list(self[cell_type].concat)
            return self[attr].pairs
        except KeyError:
            raise AttributeError(attr) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Genotype is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Genotype) and self._cells == other._cells

    def __hash__(self) -> int:
        return hash(self._cells)

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        if self.cell_types == (NB201_CELL,):
            return self.to_nb201()
        return self.to_darts_text()

    def __getstate__(self) -> tuple:
        return self._cells

    def __setstate__(self, state: tuple) -> None:
        object.__setattr__(self, "_cells", state)

    def validate(self, space: GenotypeRules, *, variable_in_degree: bool = False) -> Genotype:
        """Check this genotype against ``space``; raise :class:`GenotypeError` if invalid."""
        space.validate(self, variable_in_degree=variable_in_degree)
        return self

    def edge_choices(self) -> set[tuple[str, int, int, str]]:
        """The set of ``(cell type, node, input, op)`` choices, for comparing genotypes."""
        return {
            (cell_type, k, src, op)
            for cell_type, cell in self._cells
            for k, node in enumerate(cell.nodes)
            for op, src in node
        }

    # -- DARTS text form -------------------------------------------------------------------
    def to_darts_text(self) -> str:
        parts = []
        for cell_type, cell in self._cells:
            if all(len(node) == 2 for node in cell.nodes):
                nodes = "[" + ", ".join(f"({op!r}, {src})" for op, src in cell.pairs) + "]"
            else:
                nodes = "[" + ", ".join(
                    "[" + ", ".join(f"({op!r}, {src})" for op, src in node) + "]" for node in cell.nodes
                ) + "]"
            parts.append(f"{cell_type}={nodes}")
            parts.append(f"{cell_type}_concat={_concat_text(cell.concat)}")
        return "Genotype(" + ", ".join(parts) + ")"

    # -- NAS-Bench-201 string ----------------------------------------------------------------
    def to_nb201(self) -> str:
        if self.cell_types != (NB201_CELL,):
            raise GenotypeError(f"only a single-cell genotype has an NAS-Bench-201 string, not {self.cell_types}")
        return "+".join("|" + "|".join(f"{op}~{src}" for op, src in node) + "|" for node in self[NB201_CELL].nodes)

    # -- JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": JSON_FORMAT,
            "cells": {
                cell_type: {"nodes": [[list(p) for p in node] for node in cell.nodes], "concat": list(cell.concat)}
                for cell_type, cell in self._cells
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any]) -> Genotype:
        """Read the JSON written by :meth:`to_json` (a string or the decoded dict)."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise GenotypeError(f"genotype JSON does not parse: {exc}") from None
        if (not isinstance(data, Mapping) or data.get("format") != JSON_FORMAT
                or not isinstance(data.get("cells"), Mapping)):
            raise GenotypeError(
                f"not a selbench genotype JSON (expected a 'format': '{JSON_FORMAT}' object with 'cells')")
        try:
            return cls({name: CellGenotype.of(c["nodes"], c["concat"]) for name, c in data["cells"].items()})
        except (KeyError, TypeError):
            raise GenotypeError("genotype JSON: every cell needs 'nodes' and 'concat'") from None

    # -- parsing -------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> Genotype:
        """Parse the DARTS text form, the NAS-Bench-201 string or genotype JSON."""
        text = text.strip()
        if text.startswith("|"):
            return cls._parse_nb201(text)
        if text.startswith("Genotype("):
            return cls._parse_darts(text)
        if text.startswith("{"):
            return cls.from_json(text)
        raise GenotypeError(
            f"cannot read genotype {_shorten(text)!r}: expected the DARTS text form 'Genotype(normal=[...], ...)', "
            "an NAS-Bench-201 string '|op~0|+|op~0|op~1|+...' or genotype JSON"
        )

    @classmethod
    def _parse_nb201(cls, text: str) -> Genotype:
        nodes = []
        for part in text.split("+"):
            if not (part.startswith("|") and part.endswith("|") and len(part) > 2):
                raise GenotypeError(
                    f"NAS-Bench-201 string {_shorten(text)!r}: node {part!r} is not of the form |op~i|...|")
            node = []
            for token in part[1:-1].split("|"):
                op, sep, src = token.rpartition("~")
                if not sep or not op or not src.isdigit():
                    raise GenotypeError(
                        f"NAS-Bench-201 string {_shorten(text)!r}: {token!r} is not of the form op~input")
                node.append((op, int(src)))
            nodes.append(node)
        return cls({NB201_CELL: CellGenotype.of(nodes, [len(nodes)])})

    @classmethod
    def _parse_darts(cls, text: str) -> Genotype:
        try:
            call = ast.parse(text, mode="eval").body
        except SyntaxError as exc:
            raise GenotypeError(f"DARTS genotype text does not parse: {exc.msg} at column {exc.offset}") from None
        if not isinstance(call, ast.Call) or call.args or not call.keywords:
            raise GenotypeError(
                "DARTS genotype text must be Genotype(name=[...], name_concat=..., ...) with keywords only")
        fields = {kw.arg: kw.value for kw in call.keywords}
        cells = {}
        for name, node in fields.items():
            if name is None or name.endswith("_concat"):
                continue
            pairs = _literal(node, name)
            concat_node = fields.get(f"{name}_concat")
            nodes = _group_pairs(pairs, name)
            concat = _concat_value(concat_node, name) if concat_node is not None else range(
                _DARTS_FIRST_NODE, _DARTS_FIRST_NODE + len(nodes))
            cells[name] = CellGenotype.of(nodes, concat)
        stray = [n for n in fields if n and n.endswith("_concat") and n[: -len("_concat")] not in cells]
        if stray:
            raise GenotypeError(f"DARTS genotype text: {stray[0]} has no matching cell list")
        return cls(cells)


def _literal(node: ast.AST, name: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise GenotypeError(f"DARTS genotype text: {name}= must be a literal list of (op, input) pairs") from None


def _group_pairs(pairs: Any, name: str) -> list:
    if not isinstance(pairs, (list, tuple)):
        raise GenotypeError(f"DARTS genotype text: {name}= must be a list")
    if all(isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str) for p in pairs):
        if len(pairs) % 2:
            raise GenotypeError(f"DARTS genotype text: {name} has {len(pairs)} pairs; the flat form needs two per node")
        return [pairs[i : i + 2] for i in range(0, len(pairs), 2)]
    return list(pairs)  # already one list per node


def _concat_value(node: ast.AST, name: str) -> Sequence[int]:
    try:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" \
                and not node.keywords:
            args = [ast.literal_eval(a) for a in node.args]
            if all(isinstance(a, int) for a in args) and 1 <= len(args) <= 3:
                return range(*args)
        else:
            value = ast.literal_eval(node)
            if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
                return value
    except ValueError:
        pass
    raise GenotypeError(f"DARTS genotype text: {name}_concat must be range(a, b) or a list of node indices")


def _concat_text(concat: tuple[int, ...]) -> str:
    if len(concat) > 1 and list(concat) == list(range(concat[0], concat[-1] + 1)):
        return f"range({concat[0]}, {concat[-1] + 1})"
    return "[" + ", ".join(map(str, concat)) + "]"


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
