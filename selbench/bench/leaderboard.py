"""The leaderboard: one row per (recipe, selector) from the finished units of a runs directory.

It reads the ``retrain`` and ``selection`` units of the run store (their ``result`` follows
:mod:`selbench.records`: a retrain result holds recipe, selector, distribution, version,
supernet_key, supernet_seed, selection_key, retrain_seed, scorer, genotype, test_accuracy,
params_m, macs_m, seconds, device; a selection result is :meth:`SelectionRun.to_dict` plus
recipe, supernet_key, supernet_seed).  Per (recipe, selector):

* ``runs``: scored genotypes (one per supernet seed × retrain seed);
* test accuracy (%): mean, sample standard deviation (ddof=1; undefined below two runs), best;
* mean parameters (M), mean selection seconds (all selections, failed ones included), and
  retrain hours summed over the runs;
* ``p_value``: two-sided Welch's t-test (unequal variances) of this row's accuracies against
  the reference selector's (alpha-magnitude, DARTS's rule) in the same recipe; undefined for
  the reference itself, with fewer than two runs on either side, or when both are constant;
* ``shared``: mean over the supernets of the fraction of (edge, op) choices this selector
  shares with the reference's genotype on the same supernet — shared choices divided by the
  larger of the two choice counts, so 1.0 means the same cell;
* ``failed``: failed selections (no cell found) out of all selections — counted, not hidden —
  and, after them, the units of this row that *crashed* (selections or retrains that raised;
  the next ``selbench run`` retries them, so they are not results yet);
* ``precision``: ``fp32`` when every stage of every run of the row computed in fp32 (the papers'
  setting), else the stages that did not, e.g. ``search bf16, retrain bf16`` (``bf16/fp32``
  where the row's runs differ).  The table shows this column only when some row is not all fp32.

For a recipe with a truth table (a table made by ``selbench tabulate`` from a recipe of the same
name), four more columns say how good the chosen cells are among all cells:
:mod:`selbench.bench.quality` (true accuracy, rank percentile, regret, τ against true importance).

Rows are grouped by recipe and sorted by mean accuracy (best first); rows without scored
runs come last.  Units whose record is corrupt or follows another schema are reported on
the log and left out, and so are retrains whose selection is missing or unusable (a score
without the selection it scores cannot be attributed).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats
from tabulate import tabulate

from selbench.bench.quality import QUALITY_HEADERS, quality_cells, recipe_quality
from selbench.bench.records import RetrainRecord, SelectionRecord
from selbench.bench.store import RunStore
from selbench.core.errors import SelbenchError
from selbench.core.genotype import Genotype
from selbench.core.precision import DEFAULT_PRECISION

REFERENCE_SELECTOR = "alpha-magnitude"
FORMATS = ("markdown", "latex", "csv", "json")
_TABLEFMT = {"markdown": "github", "latex": "latex_booktabs"}


@dataclass(frozen=True)
class Row:
    """One leaderboard line; accuracies in percent, ``None`` where a statistic is undefined."""

    recipe: str
    selector: str
    runs: int
    test_acc_mean: float | None
    test_acc_std: float | None
    test_acc_best: float | None
    params_m_mean: float | None
    selection_seconds_mean: float | None
    retrain_hours: float | None
    p_value: float | None
    shared_with_reference: float | None
    failed_selections: int
    selections: int
    crashed: int = 0
    # selection quality against the recipe's truth table (selbench.bench.quality); None without one
    true_acc: float | None = None
    rank_percentile: float | None = None
    regret: float | None = None
    tau: float | None = None
    precision: str = DEFAULT_PRECISION


def shared_fraction(genotype: Genotype, reference: Genotype) -> float:
    """|shared (cell, node, input, op) choices| / max(|choices of either|): 1.0 iff the same cell."""
    mine, theirs = genotype.edge_choices(), reference.edge_choices()
    return len(mine & theirs) / max(len(mine), len(theirs), 1)


def precision_label(selections: Iterable[SelectionRecord], retrains: Iterable[RetrainRecord]) -> str:
    """``fp32``, or the stages (search, select, retrain) with another precision and theirs (module docstring)."""
    stages = {
        "search": {s.supernet_precision for s in selections},
        "select": {str(s.selection.options.get("precision", DEFAULT_PRECISION)) for s in selections},
        "retrain": {r.precision for r in retrains},
    }
    other = [f"{stage} {'/'.join(sorted(used))}" for stage, used in stages.items() if used - {DEFAULT_PRECISION}]
    return ", ".join(other) or DEFAULT_PRECISION


def welch_p_value(sample: Sequence[float], reference: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test, or ``None`` where it is undefined."""
    if len(sample) < 2 or len(reference) < 2:
        return None
    p = float(stats.ttest_ind(sample, reference, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def load_records(runs_dir: str | os.PathLike, *, log: Callable[[str], None] | None = None
                 ) -> tuple[list[SelectionRecord], list[RetrainRecord], list[Mapping[str, Any]]]:
    """The selection and retrain records of a runs directory, and what its crashed units were about.

    Corrupt or foreign records are reported on ``log`` and skipped; so are retrains of a
    selection that is not among the usable selection records.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise SelbenchError(f"runs directory {root} does not exist; pass the directory `selbench run --runs` wrote")
    store = RunStore(root, log=log)
    selections: list[SelectionRecord] = []
    retrains: list[RetrainRecord] = []
    sources: tuple[tuple[str, Callable[[Mapping[str, Any]], Any], list[Any]], ...] = (
        ("selection", SelectionRecord.from_result, selections), ("retrain", RetrainRecord.from_result, retrains))
    selection_keys: set[str] = set()
    for kind, parse, into in sources:
        for unit in store.units(kind):
            if kind == "retrain" and unit.failed:
                store.log(f"failed retrain {unit.short_key} left out: {unit.result.get('failure')}")
                continue
            try:
                record = parse(unit.result)
            except (SelbenchError, TypeError, ValueError) as exc:  # a record of another schema is data, not a bug
                store.log(f"skipped {kind} {unit.short_key}: {exc}")
                continue
            if kind == "selection":
                selection_keys.add(unit.key)
            elif record.selection_key not in selection_keys:
                store.log(f"skipped retrain {unit.short_key}: its selection {record.selection_key[:16]} "
                          "is missing or unusable")
                continue
            into.append(record)
    crashed = [unit.record.get("about") or {}
               for kind in ("selection", "retrain") for unit in store.units(kind, crashed=True)]
    return selections, retrains, crashed


def build_rows(selections: Iterable[SelectionRecord], retrains: Iterable[RetrainRecord],
               crashed: Iterable[Mapping[str, Any]] = (), *, reference: str = REFERENCE_SELECTOR) -> list[Row]:
    """Aggregate records into sorted leaderboard rows (see the module docstring).

    ``crashed``: the ``about`` of each crashed unit (its recipe and selector), counted per row.
    """
    selections_of: dict[tuple[str, str], list[SelectionRecord]] = defaultdict(list)
    retrains_of: dict[tuple[str, str], list[RetrainRecord]] = defaultdict(list)
    crashes: Counter[tuple[str, str]] = Counter((str(about.get("recipe")), str(about.get("selector")))
                                                for about in crashed if about.get("selector"))
    for selection in selections:
        selections_of[selection.recipe, selection.selection.selector].append(selection)
    for retrain in retrains:
        retrains_of[retrain.recipe, retrain.selector].append(retrain)
    reference_cells: dict[tuple[str, str], list[Genotype]] = defaultdict(list)
    for (recipe, selector), records in selections_of.items():
        if selector == reference:
            for record in records:
                if record.selection.genotype is not None:  # not failed
                    reference_cells[recipe, record.supernet_key].append(record.selection.genotype)

    rows = []
    for recipe, selector in set(selections_of) | set(retrains_of) | set(crashes):
        chosen, scored = selections_of[recipe, selector], retrains_of[recipe, selector]
        accuracies = [100.0 * r.test_accuracy for r in scored]
        reference_accuracies = [100.0 * r.test_accuracy for r in retrains_of.get((recipe, reference), [])]
        overlaps = [shared_fraction(s.selection.genotype, ref)
                    for s in chosen if s.selection.genotype is not None  # not failed
                    for ref in reference_cells[recipe, s.supernet_key]]
        rows.append(Row(
            recipe=recipe,
            selector=selector,
            runs=len(scored),
            test_acc_mean=_mean(accuracies),
            test_acc_std=float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None,
            test_acc_best=max(accuracies, default=None),
            params_m_mean=_mean([r.params_m for r in scored if r.params_m is not None]),
            selection_seconds_mean=_mean([s.selection.seconds for s in chosen]),
            retrain_hours=_sum([r.seconds / 3600.0 for r in scored if r.seconds is not None]),
            p_value=None if selector == reference else welch_p_value(accuracies, reference_accuracies),
            shared_with_reference=_mean(overlaps),
            failed_selections=sum(s.failed for s in chosen),
            selections=len(chosen),
            crashed=crashes[recipe, selector],
            **asdict(recipe_quality(recipe, chosen)),
            precision=precision_label(chosen, scored),
        ))
    return sorted(rows, key=lambda r: (r.recipe, r.test_acc_mean is None, -(r.test_acc_mean or 0.0), r.selector))


def render(rows: Sequence[Row], fmt: str = "markdown", *, reference: str = REFERENCE_SELECTOR) -> str:
    """The rows as a markdown or LaTeX table (tabulate), CSV, or JSON (raw numbers, null = undefined)."""
    if fmt == "json":
        return json.dumps([asdict(row) for row in rows], indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(Row)], lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in asdict(row).items()} for row in rows)
        return buffer.getvalue()
    if fmt not in _TABLEFMT:
        raise SelbenchError(f"unknown leaderboard format {fmt!r}; choose one of {', '.join(FORMATS)}")
    headers, table = text_table(rows, reference=reference)
    return tabulate(table, headers=headers, tablefmt=_TABLEFMT[fmt], disable_numparse=True)


def text_table(rows: Sequence[Row], *, reference: str = REFERENCE_SELECTOR) -> tuple[list[str], list[list[str]]]:
    """The headers and formatted cells of the leaderboard table (markdown, LaTeX and the HTML report show these)."""
    headers = ["recipe", "selector", "runs", "test acc (%)", "best (%)", "params (M)", "select (s)",
               "retrain (h)", f"p vs {reference}", f"shared w/ {reference}", "failed"]
    table = [[
        row.recipe, row.selector, str(row.runs),
        _fmt(row.test_acc_mean, ".2f") + ("" if row.test_acc_std is None else f" ± {row.test_acc_std:.2f}"),
        _fmt(row.test_acc_best, ".2f"), _fmt(row.params_m_mean, ".2f"), _fmt(row.selection_seconds_mean, ".1f"),
        _fmt(row.retrain_hours, ".3f"), _fmt(row.p_value, ".3g"), _fmt(row.shared_with_reference, ".2f"),
        f"{row.failed_selections}/{row.selections}" + (f", {row.crashed} crashed" if row.crashed else ""),
    ] for row in rows]
    if any(row.true_acc is not None for row in rows):  # a recipe with a truth table
        headers += QUALITY_HEADERS
        table = [line + quality_cells(row) for line, row in zip(table, rows)]
    if any(row.precision != DEFAULT_PRECISION for row in rows):
        headers.append("precision")
        table = [line + [row.precision] for line, row in zip(table, rows)]
    return headers, table


def leaderboard(runs_dir: str | os.PathLike, fmt: str = "markdown", *, reference: str = REFERENCE_SELECTOR,
                log: Callable[[str], None] | None = None, require_reference: bool = False) -> str:
    """Read a runs directory and render its leaderboard.

    ``require_reference``: refuse a ``reference`` selector that has no record in ``runs_dir``
    (a reference asked for by name, as ``--reference`` does).
    """
    selections, retrains, crashed = load_records(runs_dir, log=log)
    if not selections and not retrains and not crashed:
        raise SelbenchError(f"no finished selections or retrains under {runs_dir}; "
                            f"run `selbench run RECIPE --runs {runs_dir}` first")
    if require_reference:
        check_reference(reference, runs_dir, selections, retrains, crashed)
    return render(build_rows(selections, retrains, crashed, reference=reference), fmt, reference=reference)


def check_reference(reference: str, runs_dir: str | os.PathLike, selections: Iterable[SelectionRecord],
                    retrains: Iterable[RetrainRecord], crashed: Iterable[Mapping[str, Any]]) -> None:
    """Refuse a reference selector (asked for by name) that has no record in ``runs_dir``."""
    present = sorted({s.selection.selector for s in selections} | {r.selector for r in retrains}
                     | {str(about.get("selector")) for about in crashed if about.get("selector")})
    if reference not in present:
        raise SelbenchError(f"reference selector {reference!r} has no runs under {runs_dir}; "
                            f"the selectors present are {', '.join(present)}")


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _sum(values: Sequence[float]) -> float | None:
    return float(sum(values)) if values else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
