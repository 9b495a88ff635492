"""`selbench report`: everything a run store holds on one self-contained HTML page (inline SVG and CSS, no network).

The page has, in this order: the leaderboard (the table `selbench leaderboard` prints); what
is missing or failed (supernets without selections, cells without retrains, failed selections
and retrains, unreadable units), so a half-finished store shows what exists and says what is
not there yet; per recipe, the selector × selector agreement and Kendall-τ matrices
(:mod:`selbench.report.matrices`), test accuracy against selection seconds, and the cell of
every selector on every supernet seed; and the α and observer trajectories (e.g. op costs) of
every supernet run (:mod:`selbench.report.trajectories`).  Every figure is a matplotlib figure
written as SVG into the page, in a ``<figure>`` whose caption says what it shows and how it
was computed.
"""
from __future__ import annotations

import html
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from selbench.bench.leaderboard import REFERENCE_SELECTOR, Row, build_rows, check_reference, load_records, text_table
from selbench.bench.records import RetrainRecord, SelectionRecord
from selbench.bench.store import RunStore, Unit
from selbench.core.errors import SelbenchError
from selbench.core.version import __version__
from selbench.report.cells import figure_svg, genotype_figure
from selbench.report.matrices import SelectorMatrix, agreement_matrix, kendall_matrix
from selbench.report.plots import pyplot, trajectories_figure
from selbench.report.trajectories import TrainingRun, has_records, load_run, quantities, trajectories

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 1.2em 2em 3em; color: #1d2430; background: #fff; line-height: 1.45; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 2px solid #e3e7ee; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin-top: 1.6em; } .meta, .note { color: #5a6475; font-size: 0.9em; }
nav a { margin-right: 1.2em; }
table.leaderboard { border-collapse: collapse; font-size: 0.88em; margin: 0.6em 0; }
table.leaderboard th, table.leaderboard td { border-bottom: 1px solid #e3e7ee; padding: 0.3em 0.6em;
                                             text-align: right; } table.leaderboard td { white-space: nowrap; }
.scroll { overflow-x: auto; }
table.leaderboard th { background: #f3f5f9; }
table.leaderboard td:nth-child(-n+2), table.leaderboard th:nth-child(-n+2) { text-align: left; }
figure { margin: 1em 0; padding: 0.6em; border: 1px solid #e3e7ee; border-radius: 6px; background: #fff; }
figure svg { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 0.85em; color: #3d4656; margin-top: 0.4em; }
figcaption code, .missing code { font-size: 0.95em; background: #f3f5f9; padding: 0 0.25em; border-radius: 3px; }
details { margin-top: 0.3em; } summary { cursor: pointer; color: #5a6475; }
.pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 0.8em; }
.failed { border-color: #e8b4b4; background: #fff7f7; }
.missing li { margin: 0.15em 0; } .ok { color: #2c7a3f; }
"""


@dataclass
class RunContents:
    """What a run store holds, read once."""

    root: Path
    selections: list[SelectionRecord]
    retrains: list[RetrainRecord]
    supernets: list[Unit]
    problems: list[str] = field(default_factory=list)
    crashed: list[Mapping[str, Any]] = field(default_factory=list)  # the ``about`` of each crashed unit

    @property
    def recipes(self) -> list[str]:
        names = {s.recipe for s in self.selections} | {r.recipe for r in self.retrains}
        names |= {str(u.result.get("recipe")) for u in self.supernets}
        return sorted(names)


def read_store(runs_dir: str | os.PathLike) -> RunContents:
    """The selection and retrain records and supernet units of ``runs_dir``; problems collected, not printed."""
    problems: list[str] = []
    selections, retrains, crashed = load_records(runs_dir, log=problems.append)
    supernets = list(RunStore(runs_dir, log=problems.append).units("supernet"))
    contents = RunContents(Path(runs_dir), selections, retrains, supernets, problems, crashed)
    if not selections and not retrains and not supernets:
        raise SelbenchError(f"no finished supernets, selections or retrains under {runs_dir}; "
                            f"run `selbench run RECIPE --runs {runs_dir}` first")
    return contents


def build_report(runs_dir: str | os.PathLike, *, reference: str = REFERENCE_SELECTOR,
                 require_reference: bool = False) -> str:
    """The HTML page of ``runs_dir`` (see the module docstring); an empty store is one :class:`SelbenchError`.

    ``require_reference``: refuse a ``reference`` selector without records (one asked for by name).
    """
    pyplot()  # a missing matplotlib is one clear error before any work
    contents = read_store(runs_dir)
    if require_reference:
        check_reference(reference, runs_dir, contents.selections, contents.retrains, contents.crashed)
    rows = build_rows(contents.selections, contents.retrains, contents.crashed, reference=reference)
    page = _Page()
    recipes = contents.recipes
    page.add(f"<header><h1>selbench report</h1><p class='meta'>run store <code>{_e(contents.root)}</code>"
             f" · {len(contents.supernets)} supernets, {len(contents.selections)} selections, "
             f"{len(contents.retrains)} retrains · selbench {_e(__version__)} · written "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}</p></header>")
    links = [("leaderboard", "Leaderboard"), ("missing", "Missing and failed")]
    links += [(_anchor(recipe), f"Recipe {recipe}") for recipe in recipes] + [("trajectories", "Supernet runs")]
    page.add("<nav>" + "".join(f"<a href='#{a}'>{_e(t)}</a>" for a, t in links) + "</nav>")
    _leaderboard_section(page, rows, reference)
    _missing_section(page, contents)
    for recipe in recipes:
        _recipe_section(page, contents, recipe, [r for r in rows if r.recipe == recipe])
    _trajectory_section(page, contents)
    return page.html(title=f"selbench report: {contents.root.name}")


def write_report(runs_dir: str | os.PathLike, out: str | os.PathLike, *,
                 reference: str = REFERENCE_SELECTOR, require_reference: bool = False) -> Path:
    """Write :func:`build_report` to ``out`` (UTF-8) and return its path."""
    text = build_report(runs_dir, reference=reference, require_reference=require_reference)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- page building ------------------------------------------------------------------------------
class _Page:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.figures = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, figure: Any, kind: str, caption: str, css: str = "") -> str:
        """A ``<figure>`` with the matplotlib figure as inline SVG (ids unique on the page) and its caption."""
        self.figures += 1
        svg = figure_svg(figure, salt=f"figure{self.figures}")
        classes = f"{kind} {css}".strip()
        return (f"<figure class='{classes}' data-kind='{kind}' id='figure-{self.figures}'>{svg}"
                f"<figcaption><b>Figure {self.figures}.</b> {caption}</figcaption></figure>")

    def html(self, title: str) -> str:
        return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                "<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>\n"
                + "\n".join(self.parts) + "\n</body></html>\n")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _anchor(recipe: str) -> str:
    return "recipe-" + "".join(c if c.isalnum() else "-" for c in recipe)


def _leaderboard_section(page: _Page, rows: Sequence[Row], reference: str) -> None:
    headers, table = text_table(rows, reference=reference)
    page.add("<section id='leaderboard'><h2>Leaderboard</h2>")
    if not rows:
        page.add("<p class='note'>No selections or retrains yet: the leaderboard is empty.</p></section>")
        return
    page.add("<div class='scroll'><table class='leaderboard'><thead><tr>"
             + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr></thead><tbody>" + "".join(
                 "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in line) + "</tr>" for line in table)
             + "</tbody></table></div>")
    page.add(f"<p class='note'>As <code>selbench leaderboard</code> prints it: one row per (recipe, selector); "
             f"<i>runs</i> are retrained cells (supernet seeds × retrain seeds); test accuracy mean ± sample standard "
             f"deviation and best; mean parameters; mean selection seconds (failed selections included); retrain "
             f"hours summed; the two-sided Welch t-test p-value against {_e(reference)}; the mean fraction of "
             f"(edge, op) choices shared with {_e(reference)}'s cell on the same supernet; failed selections out of "
             f"all.</p></section>")


def _missing_section(page: _Page, contents: RunContents) -> None:
    selected = {s.supernet_key for s in contents.selections}
    retrained = {(r.supernet_key, r.selector) for r in contents.retrains}
    supernet_keys = {u.key for u in contents.supernets}
    items = []
    for unit in contents.supernets:
        if unit.key not in selected:
            items.append(f"supernet <code>{_e(unit.short_key)}</code> (recipe {_e(unit.result.get('recipe'))}, "
                         f"seed {_e(unit.config.get('seed'))}): no selection yet")
    for s in contents.selections:
        where = f"{_e(s.selection.selector)} on supernet seed {s.supernet_seed} (recipe {_e(s.recipe)})"
        if s.failed:
            items.append(f"failed selection: {where}: {_e(s.selection.failure)} (no cell, nothing to retrain)")
        elif (s.supernet_key, s.selection.selector) not in retrained:
            items.append(f"{where}: cell selected, no retrain yet")
    for key in sorted({s.supernet_key for s in contents.selections} - supernet_keys):
        items.append(f"supernet <code>{_e(key[:16])}</code>: selections refer to it, but its unit is not in this "
                     "store (no trajectories)")
    items += [_e(problem) for problem in contents.problems]
    page.add("<section id='missing' class='missing'><h2>Missing and failed</h2>")
    if items:
        page.add(f"<p>{len(items)} item{'s' * (len(items) != 1)} not (yet) in the store or not usable; "
                 "running the same <code>selbench run</code> again computes what is missing.</p><ul>"
                 + "".join(f"<li>{item}</li>" for item in items) + "</ul></section>")
    else:
        page.add("<p class='ok'>Nothing missing: every supernet has selections, every cell a retrain, and no "
                 "selection failed.</p></section>")


def _recipe_section(page: _Page, contents: RunContents, recipe: str, rows: Sequence[Row]) -> None:
    selections = [s for s in contents.selections if s.recipe == recipe]
    retrains = [r for r in contents.retrains if r.recipe == recipe]
    order = [row.selector for row in rows]  # leaderboard order: best first
    order += sorted({s.selection.selector for s in selections} - set(order))
    page.add(f"<section id='{_anchor(recipe)}'><h2>Recipe {_e(recipe)}</h2>")
    _matrices(page, selections, order)  # the summaries first, the cells they summarise after them
    _scatter(page, selections, retrains, order)
    _cells(page, contents, selections, retrains, order)
    page.add("</section>")


def _cells(page: _Page, contents: RunContents, selections: Sequence[SelectionRecord],
           retrains: Sequence[RetrainRecord], order: Sequence[str]) -> None:
    page.add("<h3>Selected cells</h3>")
    if not selections:
        page.add("<p class='note'>No selections yet.</p>")
        return
    by_supernet: dict[str, list[SelectionRecord]] = defaultdict(list)
    for s in selections:
        by_supernet[s.supernet_key].append(s)
    accuracy: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in retrains:
        accuracy[r.supernet_key, r.selector].append(100.0 * r.test_accuracy)
    for key, chosen in sorted(by_supernet.items(), key=lambda item: (item[1][0].supernet_seed, item[0])):
        page.add(f"<h4>Supernet seed {chosen[0].supernet_seed} <span class='meta'>(<code>{_e(key[:16])}</code>)"
                 "</span></h4><div class='cells'>")
        for s in sorted(chosen, key=lambda s: (order.index(s.selection.selector), s.selection.seed or 0)):
            selector = s.selection.selector
            if s.selection.genotype is None:
                page.add(f"<figure class='cell failed' data-kind='failed-cell'><figcaption><b>{_e(selector)}</b> "
                         f"found no cell on this supernet ({_e(s.selection.failure)}; {s.selection.seconds:.3g} s): "
                         "a failed selection, counted in the leaderboard's <i>failed</i> column.</figcaption>"
                         "</figure>")
                continue
            scores = accuracy.get((key, selector), [])
            scored = (f"retrained: test accuracy {', '.join(f'{a:.2f}' for a in scores)} %" if scores
                      else "not retrained yet")
            text = str(s.selection.genotype)
            page.add(page.figure(
                genotype_figure(s.selection.genotype, f"{selector} (seed {s.selection.seed}, supernet seed "
                                                      f"{s.supernet_seed})"), "cell",
                f"The cell <b>{_e(selector)}</b> selected on this supernet ({_e(f'{s.selection.seconds:.3g}')} s; "
                f"{scored}). Inputs on the left, intermediate nodes in their order, the cell output "
                f"<i>c<sub>k</sub></i> on the right; one arrow per chosen (op, input), labelled and coloured by its "
                f"op; dashed grey arrows: the nodes concatenated into the output."
                f"<details><summary>as text</summary><code>{_e(text)}</code></details>"))
        page.add("</div>")


def _matrix_figure(matrix: SelectorMatrix, title: str, colour_range: tuple[float, float], cmap: str,
                   dark: Callable[[float], bool]) -> Any:
    """A heat map of the matrix, each entry written with the number of supernets behind it; ``dark(value)``: the
    colour map is dark there, so the text is white."""
    plt = pyplot()
    n = len(matrix.selectors)
    size = 1.1 + 0.75 * n
    figure, ax = plt.subplots(figsize=(size + 1.6, size))
    shown = np.ma.masked_invalid(matrix.values)
    colour_map = plt.get_cmap(cmap).with_extremes(bad="#eeeeee")
    image = ax.imshow(shown, vmin=colour_range[0], vmax=colour_range[1], cmap=colour_map)
    for i in range(n):
        for j in range(n):
            value = matrix.values[i, j]
            text = "–" if math.isnan(value) else f"{value:.2f}\nn={matrix.counts[i, j]}"
            white = not math.isnan(value) and dark(value)
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if white else "black")
    ax.set_xticks(range(n), matrix.selectors, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(n), matrix.selectors, fontsize=8)
    ax.set_title(title, fontsize=9)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    figure.tight_layout()
    return figure


def _matrices(page: _Page, selections: Sequence[SelectionRecord], order: Sequence[str]) -> None:
    page.add("<h3>How much the selectors agree</h3>")
    if len(order) < 2:
        page.add("<p class='note'>One selector only: nothing to compare.</p>")
        return
    agreement, tau = agreement_matrix(selections, order), kendall_matrix(selections, order)
    page.add("<div class='pair'>")
    page.add(page.figure(
        _matrix_figure(agreement, "shared (cell, node, input, op) choices", (0.0, 1.0), "Blues",
                       lambda v: v > 0.6), "agreement",
        "Agreement of the selected cells: per supernet, the number of (cell type, node, input, op) choices two "
        "selectors share divided by the larger of their choice counts (the leaderboard's <i>shared</i> column, "
        "1 = the same cell), averaged over the supernets on which both found a cell; <i>n</i> is the number of "
        "those supernets. Failed selections have no cell and take no part; – : no supernet where both found one."))
    page.add(page.figure(
        _matrix_figure(tau, "Kendall τ of per-(edge, op) scores", (-1.0, 1.0), "RdBu_r", lambda v: abs(v) > 0.6),
        "kendall",
        "Rank agreement of the selectors' scores: per supernet, Kendall's τ-b (<code>scipy.stats.kendalltau</code>) "
        "between the two selectors' per-(edge, op) score tables, every cell type's table flattened and concatenated "
        "(every op, <code>none</code> included), averaged over the supernets on which both recorded scores (also "
        "when the selection found no cell); <i>n</i> is the number of those supernets. NaN entries are left out; a "
        "constant table gives no τ; – : no such supernet (e.g. a selector that records no scores). 1: the same "
        "order, 0: unrelated, −1: reversed."))
    page.add("</div>")


def _scatter(page: _Page, selections: Sequence[SelectionRecord], retrains: Sequence[RetrainRecord],
             order: Sequence[str]) -> None:
    page.add("<h3>Accuracy against selection cost</h3>")
    seconds: dict[str, list[float]] = defaultdict(list)
    accuracies: dict[str, list[float]] = defaultdict(list)
    for s in selections:
        seconds[s.selection.selector].append(max(float(s.selection.seconds), 1e-4))
    for r in retrains:
        accuracies[r.selector].append(100.0 * r.test_accuracy)
    shown = [name for name in order if seconds.get(name) and accuracies.get(name)]
    if not shown:
        page.add("<p class='note'>No retrained cells yet.</p>")
        return
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(7.5, 4.2))
    for position, name in enumerate(shown):
        x, y = np.array(seconds[name]), np.array(accuracies[name])
        centre = float(np.exp(np.log(x).mean()))
        spread = float(np.std(y, ddof=1)) if len(y) > 1 else 0.0
        ax.errorbar([centre], [float(y.mean())], xerr=[[centre - x.min()], [x.max() - centre]], yerr=[[spread],
                    [spread]], fmt="o", capsize=4, markersize=7, color=f"C{position % 10}",
                    label=f"{name} ({len(y)} runs)")
    ax.set_xscale("log")
    ax.set_xlabel("selection seconds (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    figure.tight_layout()
    page.add(page.figure(
        figure, "scatter",
        "Test accuracy of the retrained cells against the wall seconds the selection took, one point per selector: "
        "vertical, the mean test accuracy over all retrains (supernet seeds × retrain seeds) ± the sample standard "
        "deviation (none with one run); horizontal, the geometric mean of the selection seconds over all its "
        "selections (failed ones included) with the range from the fastest to the slowest. Log scale: the "
        "selectors' costs differ by orders of magnitude."))


def _trajectory_section(page: _Page, contents: RunContents) -> None:
    page.add("<section id='trajectories'><h2>Supernet runs</h2>")
    if not contents.supernets:
        page.add("<p class='note'>No finished supernet runs in this store.</p></section>")
        return
    known = quantities()
    for unit in sorted(contents.supernets, key=lambda u: (str(u.result.get("recipe")), str(u.config.get("seed")))):
        try:
            run = load_run(unit.directory)
        except SelbenchError as exc:
            page.add(f"<p class='note'>Supernet <code>{_e(unit.short_key)}</code>: {_e(exc)}</p>")
            continue
        page.add(f"<h3>{_e(run.title)} <span class='meta'>(<code>{_e(unit.short_key)}</code>)</span></h3>")
        for name, (observer, quantity) in known.items():
            if not has_records(run, observer):
                continue
            built = trajectories(run, name)
            page.add(page.figure(trajectories_figure(run, quantity, built, first_row_legends=True), "trajectory",
                                 _trajectory_caption(run, name, quantity.label, observer, quantity.signed)))


def _trajectory_caption(run: TrainingRun, name: str, label: str, observer: str | None, signed: bool) -> str:
    source = ("softmax(α) after every epoch, from the run record" if observer is None
              else f"the <code>{_e(observer)}</code> plugin's training observer, averaged per epoch and split")
    zero = " The grey line marks zero: a value below it lowers the loss." if signed else ""
    return (f"<b>{_e(name)}</b> of every edge over the epochs: {_e(label)} ({source}). One panel per cell type"
            f"{' and split' if observer is not None else ''} and edge group (<i>input</i> edges leave an input node, "
            f"<i>intermediate</i> edges join two intermediate nodes), one line per edge (labelled source→target), "
            f"the group mean dashed black (an edge has the same colour in every row; the first row's legends name "
            f"them); as <code>selbench analyze --plot {_e(name)}</code> draws it.{zero}")
