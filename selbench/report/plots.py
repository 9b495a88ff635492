"""Plots of per-edge trajectories (matplotlib, the optional ``plot`` extra; drawn off-screen with Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from selbench.core.errors import SelbenchError
from selbench.report.trajectories import TrainingRun
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
    plt = pyplot()
    figure = trajectories_figure(run, quantity, trajectories)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
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
