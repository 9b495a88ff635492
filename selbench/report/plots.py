"""Plots of per-edge trajectories (matplotlib, the optional ``plot`` extra; drawn off-screen with Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from selbench.core.errors import SelbenchError
from selbench.report.trajectories import ALL_EDGES, EdgeCounts, TrainingRun
from selbench.train.trajectory import GROUPS, ObservedQuantity, Trajectories


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or one clear error when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SelbenchError("plotting needs matplotlib, which is not installed; "
                            "install it with: pip install 'selbench[plot]'") from None
    return plt


def plot_trajectories(run: TrainingRun, quantity: ObservedQuantity, trajectories: Sequence[Trajectories],
                      out: Path) -> Path:
    """Draw :func:`trajectories_figure` into the PNG ``out``."""
    return _save(trajectories_figure(run, quantity, trajectories), out)


def _save(figure: Any, out: Path) -> Path:
    """Write ``figure`` as the PNG ``out`` (its folder made) and free it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    pyplot().close(figure)
    return out


def trajectories_figure(run: TrainingRun, quantity: ObservedQuantity, trajectories: Sequence[Trajectories], *,
                        first_row_legends: bool = False) -> Any:
    """One row per (split, cell type), one column per edge group, one line per edge; the group mean in black.

    Signed quantities get a zero line (for costs: below it the edge's best op lowers the loss);
    rows of the split α learns from are marked as such.  An edge has the same colour in every
    row, so ``first_row_legends`` may leave the legends of the other rows out (faster to draw).
    """
    plt = pyplot()
    rows = len(trajectories)
    figure, axes = plt.subplots(rows, len(GROUPS), figsize=(11, 2.8 * rows + 0.6), squeeze=False, sharex=True)
    for row, trajectory in enumerate(trajectories):
        for column, group in enumerate(GROUPS):
            _draw_panel(axes[row][column], run, quantity, trajectory, group, legend=row == 0 or not first_row_legends)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    figure.suptitle(f"{run.title}: {quantity.label} per edge")
    figure.tight_layout()
    return figure


def _draw_panel(ax: Any, run: TrainingRun, quantity: ObservedQuantity, trajectory: Trajectories,
                group: str, legend: bool = True) -> None:
    from matplotlib.ticker import MaxNLocator  # matplotlib is importable here: pyplot() came first

    edges = run.layout.group(group)
    for position, edge in enumerate(edges):  # "C0".."C9": the default colour cycle, same edge colour in every row
        ax.plot(trajectory.epochs, trajectory.values[:, edge].tolist(), marker=".", linewidth=1,
                color=f"C{position % 10}", label=run.layout.label(edge))
    if edges:
        ax.plot(trajectory.epochs, trajectory.values[:, edges].mean(dim=1).tolist(), color="black", linewidth=2.5,
                linestyle="--", label="mean")
    if quantity.signed:
        ax.axhline(0.0, color="grey", linewidth=0.8)
    where = f"{trajectory.cell_type} cell, {group} edges"
    if trajectory.split is not None:
        learns = " (α learns from it)" if trajectory.split == run.alpha_split else ""
        where += f", {trajectory.split} split{learns}"
    ax.set_title(where, fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)
    if legend:
        ax.legend(fontsize=6, ncol=3, loc="best")


def plot_edge_counts(run: TrainingRun, quantity: ObservedQuantity, counts: Sequence[EdgeCounts], out: Path) -> Path:
    """One panel per split: per cell type, the edges below zero over the epochs (solid: all, dashed: input,
    dotted: intermediate), out of how many there are (the grey line)."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    splits = list(dict.fromkeys(c.split for c in counts))
    figure, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 3.6), squeeze=False, sharey=True)
    styles = {ALL_EDGES: "-", GROUPS[0]: "--", GROUPS[1]: ":"}
    types = list(dict.fromkeys(c.cell_type for c in counts))
    for ax, split in zip(axes[0], splits):
        for c in (c for c in counts if c.split == split):
            colour = f"C{types.index(c.cell_type) % 10}"
            for part, style in styles.items():
                ax.plot(c.epochs, c.counts[part], linestyle=style, marker="." if part == ALL_EDGES else None,
                        color=colour, label=f"{c.cell_type}: {part}")
        ax.axhline(len(run.layout.edges), color="grey", linewidth=0.8, label="edges per cell")
        learns = " (α learns from it)" if split is not None and split == run.alpha_split else ""
        ax.set_title(f"{split or 'all'} split{learns}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7, loc="best")
    axes[0][0].set_ylabel(f"edges with {quantity.name} < 0")
    figure.suptitle(f"{run.title}: edges whose {quantity.label} is below zero (kept)")
    figure.tight_layout()
    return _save(figure, out)
