"""Cell drawings: a genotype's cells as graphs (nodes in their fixed order, edges labelled with their ops), matplotlib.

A cell's nodes have a fixed order, so no layout engine is needed: the input nodes stand in a
column on the left (DARTS: c_{k-2} above c_{k-1}; NAS-Bench-201: the one input), the
intermediate nodes follow from left to right in their order, and the cell output c_{k} stands
on the right.  Every chosen ``(op, input)`` pair is one arrow from its input node into its
node, labelled with the op and coloured by it; an arrow that would pass through another node
arches above or below the row instead.  Dashed grey arrows lead from the concatenated nodes to
the output.

In the SVG each chosen pair's arrow is the group with the id ``edge:<cell type>:<input>:<node>:<op>``
and its label the group ``edge:...:<op>:label`` (text stays text: ``svg.fonttype = none``), so a
reader — or a test — can find every edge.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selbench.core.errors import SelbenchError
from selbench.core.genotype import NB201_CELL, CellGenotype, Genotype
from selbench.core.space import NONE_OP
from selbench.report.plots import pyplot

NODE_RADIUS = 0.24
# a fixed colour per known op (the DARTS and NAS-Bench-201 op sets), so one op looks the same in every drawing
OP_COLOURS = {
    "sep_conv_3x3": "#1f77b4", "sep_conv_5x5": "#17becf", "dil_conv_3x3": "#2ca02c", "dil_conv_5x5": "#98c21f",
    "max_pool_3x3": "#d62728", "avg_pool_3x3": "#ff7f0e", "skip_connect": "#9467bd", "none": "#7f7f7f",
    "nor_conv_3x3": "#1f77b4", "nor_conv_1x1": "#17becf",
}
_FALLBACK_COLOURS = ("#8c564b", "#e377c2", "#bcbd22", "#393b79", "#637939", "#843c39")


def op_colour(op: str) -> str:
    """The colour ``op`` is drawn in (known ops fixed, others from a stable fallback list)."""
    if op in OP_COLOURS:
        return OP_COLOURS[op]
    return _FALLBACK_COLOURS[sum(map(ord, op)) % len(_FALLBACK_COLOURS)]


def input_nodes(genotype: Genotype) -> int:
    """How many input nodes the genotype's cells have: 1 for an NAS-Bench-201 cell, else 2 (DARTS)."""
    return 1 if genotype.cell_types == (NB201_CELL,) else 2


GAP = 2.0  # data units between neighbouring nodes; one data unit is drawn as INCH inches
INCH = 0.62
INPUT_SPREAD = 1.4  # DARTS's two inputs stand this far above and below the row of nodes


def node_positions(cell: CellGenotype, inputs: int) -> dict[int | str, tuple[float, float]]:
    """(x, y) of every node: inputs in a column at x = 0, intermediate nodes in a row in their order, output last."""
    positions: dict[int | str, tuple[float, float]] = {}
    for i in range(inputs):
        positions[i] = (0.0, 0.0 if inputs == 1 else INPUT_SPREAD - 2 * INPUT_SPREAD * i / (inputs - 1))
    for k in range(len(cell.nodes)):
        positions[inputs + k] = (GAP * (1 + k), 0.0)
    positions["out"] = (GAP * (1 + len(cell.nodes)), 0.0)
    return positions


@dataclass(frozen=True)
class DrawnEdge:
    """One chosen ``(op, input)`` pair as drawn: ``src`` into ``dst``, bent by ``rad`` (arc3), label at ``label``."""

    op: str
    src: int
    dst: int
    rad: float
    label: tuple[float, float]


def cell_edges(cell: CellGenotype, inputs: int) -> list[DrawnEdge]:
    """Where each chosen pair goes: straight unless the straight arrow would cross another node; then it arches
    above the row when input and node numbers sum to an even number, below otherwise.  Labels sit at the arrow's
    midpoint (straight arrows from a DARTS input: 80 % of the way, so that the fan of labels spreads out)."""
    positions = node_positions(cell, inputs)
    edges = []
    for number, node in enumerate(cell.nodes):
        dst = inputs + number
        for op, src in node:
            if src not in positions or src >= dst:
                raise SelbenchError(f"cell: node {dst} takes input {src}, which is not an earlier node of the cell")
            (x1, y1), (x2, y2) = positions[src], positions[dst]
            others = [p for key, p in positions.items() if key not in (src, dst)]
            crosses = any(_distance_to_segment(p, (x1, y1), (x2, y2)) < 1.5 * NODE_RADIUS for p in others)
            rad = (0.55 if (src + dst) % 2 else -0.55) if crosses else 0.0
            # arc3's control point is mid + rad · (dy, -dx); the quadratic Bézier passes mid + rad/2 · (dy, -dx)
            t = 0.8 if (src < inputs and inputs > 1 and not crosses) else 0.5
            label = (x1 + t * (x2 - x1) + rad / 2 * (y2 - y1), y1 + t * (y2 - y1) - rad / 2 * (x2 - x1))
            edges.append(DrawnEdge(op, src, dst, rad, label))
    return edges


def _distance_to_segment(point: tuple[float, float], start: tuple[float, float], end: tuple[float, float]) -> float:
    (x, y), (x1, y1), (x2, y2) = point, start, end
    dx, dy = x2 - x1, y2 - y1
    t = max(0.0, min(1.0, ((x - x1) * dx + (y - y1) * dy) / (dx * dx + dy * dy)))
    return math.hypot(x1 + t * dx - x, y1 + t * dy - y)


def _extent(cell: CellGenotype, inputs: int) -> tuple[float, float, float, float]:
    """(x min, x max, y min, y max) of everything drawn, with a margin."""
    points = list(node_positions(cell, inputs).values()) + [e.label for e in cell_edges(cell, inputs)]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs) - 0.45, max(xs) + 0.45, min(ys) - 0.45, max(ys) + 0.45


def draw_cell(ax: Any, cell: CellGenotype, *, inputs: int, cell_type: str, title: str | None = None,
              ylim: tuple[float, float] | None = None) -> None:
    """Draw one cell into ``ax`` (see the module docstring)."""
    positions = node_positions(cell, inputs)
    for edge in cell_edges(cell, inputs):
        colour = op_colour(edge.op)
        faint = edge.op == NONE_OP  # NAS-Bench-201's "none" is a choice too, drawn as one that carries nothing
        arrow = ax.annotate("", xy=positions[edge.dst], xytext=positions[edge.src], arrowprops=dict(
            arrowstyle="-|>", color=colour, linewidth=1.0 if faint else 1.6, linestyle=":" if faint else "-",
            shrinkA=10, shrinkB=10, mutation_scale=11, connectionstyle=f"arc3,rad={edge.rad}"))
        label = ax.text(*edge.label, edge.op, fontsize=7, ha="center", va="center", color=colour, zorder=4,
                        bbox=dict(boxstyle="round,pad=0.12", facecolor="white", edgecolor="none", alpha=0.85))
        gid = f"edge:{cell_type}:{edge.src}:{edge.dst}:{edge.op}"
        arrow.arrow_patch.set_gid(gid)  # the annotation itself has no text: its arrow is what gets drawn
        label.set_gid(f"{gid}:label")
    for node in cell.concat:
        if node in positions:
            far = positions["out"][0] - positions[node][0] > GAP * 1.01
            ax.annotate("", xy=positions["out"], xytext=positions[node], arrowprops=dict(
                arrowstyle="-|>", color="#b0b0b0", linewidth=0.9, linestyle="--", shrinkA=10, shrinkB=10,
                connectionstyle=f"arc3,rad={0.3 if far else 0}"))
    for key, (x, y) in positions.items():
        is_input = isinstance(key, int) and key < inputs
        face = "#e8f1fb" if is_input else "#fdf3e1" if key == "out" else "white"
        ax.add_patch(_circle((x, y), face))
        ax.text(x, y, _node_label(key, inputs), ha="center", va="center", fontsize=8, zorder=6)
    x_min, x_max, y_min, y_max = _extent(cell, inputs)
    ax.set_xlim(x_min, x_max)
    ax.set_ylim(*(ylim or (y_min, y_max)))
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title if title is not None else cell_type if cell_type == NB201_CELL else f"{cell_type} cell",
                 fontsize=9)


def _node_label(node: int | str, inputs: int) -> str:
    if node == "out":
        return "$c_{k}$"
    assert isinstance(node, int)
    if node < inputs:
        return "in" if inputs == 1 else f"$c_{{k-{inputs - node}}}$"
    return str(node - inputs)


def _circle(centre: tuple[float, float], face: str) -> Any:
    from matplotlib.patches import Circle  # matplotlib is importable here: pyplot() came first

    return Circle(centre, NODE_RADIUS, facecolor=face, edgecolor="#333333", linewidth=1.0, zorder=5)


def genotype_figure(genotype: Genotype, title: str | None = None) -> Any:
    """A figure with one panel per cell type, side by side (DARTS: normal and reduce), drawn to one scale."""
    plt = pyplot()
    inputs = input_nodes(genotype)
    extents = [_extent(cell, inputs) for _, cell in genotype.items()]
    widths = [x_max - x_min for x_min, x_max, _, _ in extents]
    ylim = (min(e[2] for e in extents), max(e[3] for e in extents))
    height = ylim[1] - ylim[0]
    figure, axes = plt.subplots(1, len(widths), squeeze=False, gridspec_kw={"width_ratios": widths},
                                figsize=(INCH * sum(widths) + 0.3, INCH * height + 0.5 + 0.25 * bool(title)))
    for ax, (cell_type, cell) in zip(axes[0], genotype.items()):
        draw_cell(ax, cell, inputs=inputs, cell_type=cell_type, ylim=ylim)
    if title:
        figure.suptitle(title, fontsize=10)
    # fixed margins instead of tight_layout (which measures every text: slow, and the axes have no ticks)
    top = 1 - (0.5 + 0.25 * bool(title)) / (INCH * height + 0.5 + 0.25 * bool(title))
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=top, wspace=0.04)
    return figure


def figure_svg(figure: Any, salt: str = "selbench") -> str:
    """The figure as SVG text (text kept as text), without the XML prologue; the figure is closed.

    ``salt`` seeds the SVG's internal ids: give each figure of one HTML page its own, so that their ids differ.
    """
    plt = pyplot()
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):  # text stays text
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text[text.index("<svg"):], count=1, flags=re.DOTALL)


def genotype_svg(genotype: Genotype, title: str | None = None) -> str:
    """The genotype's cells drawn side by side, as SVG text."""
    return figure_svg(genotype_figure(genotype, title))


def save_drawing(genotype: Genotype, out: Path, title: str | None = None) -> Path:
    """Write the drawing to ``out``: SVG or PNG, by its suffix."""
    suffix = out.suffix.lower()
    if suffix not in (".svg", ".png"):
        raise SelbenchError(f"{out}: a drawing is written as .svg or .png, not {suffix or 'a file without suffix'}")
    plt = pyplot()
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".svg":
        out.write_text(genotype_svg(genotype, title), encoding="utf-8")
    else:
        figure = genotype_figure(genotype, title)
        figure.savefig(out, dpi=150)
        plt.close(figure)
    return out

