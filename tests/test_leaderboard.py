"""Leaderboard statistics on synthetic records, checked against hand computations."""
from __future__ import annotations

import csv
import io
import json
import math

import pytest
from scipy import integrate

from selbench import CellGenotype, Genotype, SelbenchError, Selection, SelectionRun
from selbench.bench.leaderboard import (
    build_rows,
    leaderboard,
    load_records,
    render,
    shared_fraction,
)
from selbench.bench.records import RecordError, RetrainRecord, SelectionRecord
from selbench.bench.store import RunStore
from selbench.cli import main

SEP3, SKIP, MAX, DIL3 = "sep_conv_3x3", "skip_connect", "max_pool_3x3", "dil_conv_3x3"


def cells(normal, reduce):
    """A two-cell genotype from per-node lists of (op, input) pairs."""
    return Genotype({"normal": CellGenotype.of(normal, [2, 3]), "reduce": CellGenotype.of(reduce, [2, 3])})


REFERENCE_0 = cells([[(SEP3, 0), (SEP3, 1)], [(SKIP, 0), (SEP3, 2)]], [[(MAX, 0), (MAX, 1)], [(SKIP, 2), (MAX, 0)]])
REFERENCE_1 = cells([[(SEP3, 0), (SKIP, 1)], [(SEP3, 0), (SEP3, 1)]], [[(MAX, 0), (MAX, 1)], [(MAX, 0), (MAX, 1)]])
# 7 of 8 choices as REFERENCE_0 (one op differs)
PERTURBATION_0 = cells([[(SEP3, 0), (SEP3, 1)], [(SKIP, 0), (DIL3, 2)]], [[(MAX, 0), (MAX, 1)], [(SKIP, 2), (MAX, 0)]])
# same normal cell as REFERENCE_1, reduce cell shares nothing: 4 of 8
PERTURBATION_1 = cells([[(SEP3, 0), (SKIP, 1)], [(SEP3, 0), (SEP3, 1)]],
                       [[(SEP3, 0), (SEP3, 1)], [(SKIP, 2), (SKIP, 0)]])
# variable in-degree: 7 choices, 6 of them in REFERENCE_0 (all 4 normal ones and 2 reduce ones): 6 / max(7, 8)
COST_SIGN_0 = cells([[(SEP3, 0), (SEP3, 1)], [(SKIP, 0), (SEP3, 2), (MAX, 1)]], [[(MAX, 0)], [(SKIP, 2)]])

# (recipe, selector) -> supernet -> (genotype or failure, selection seconds, {retrain seed: test accuracy})
GRID = {
    ("demo", "alpha-magnitude"): {"sup0": (REFERENCE_0, 1.0, {0: 0.90, 1: 0.92}),
                                  "sup1": (REFERENCE_1, 3.0, {0: 0.91, 1: 0.93})},
    ("demo", "perturbation"): {"sup0": (PERTURBATION_0, 100.0, {0: 0.93, 1: 0.94}),
                               "sup1": (PERTURBATION_1, 140.0, {0: 0.95})},
    ("demo", "cost-sign"): {"sup0": (COST_SIGN_0, 10.0, {0: 0.91, 1: 0.935}),
                            "sup1": ("no edge has a negative cost", 30.0, {})},
    ("demo", "lonely"): {"sup0": (REFERENCE_0, 2.0, {0: 0.80})},
    ("demo", "pending"): {"sup0": (REFERENCE_1, 5.0, {})},
    ("other", "alpha-magnitude"): {"sup9": (REFERENCE_1, 1.0, {0: 0.50, 1: 0.70})},
}
PARAMS_M = 3.0
RETRAIN_SECONDS = 1800.0


def fill(store: RunStore) -> None:
    for (recipe, selector), supernets in GRID.items():
        for supernet, (outcome, seconds, accuracies) in supernets.items():
            failed = isinstance(outcome, str)
            chosen = Selection(genotype=None if failed else outcome, failure=outcome if failed else None)
            selection = SelectionRun(chosen, selector=selector, distribution="selbench", version="0.1.0",
                                     seconds=seconds)
            record = SelectionRecord(recipe, supernet, int(supernet[-1]), selection)
            unit = store.run_unit("selection", {"recipe": recipe, "selector": selector, "supernet": supernet},
                                  lambda work, record=record: record.to_result())
            for seed, accuracy in accuracies.items():
                retrain = RetrainRecord.from_score(
                    record, selection_key=unit.key, retrain_seed=seed, scorer="retrain",
                    score={"test_accuracy": accuracy, "params_m": PARAMS_M + seed, "seconds": RETRAIN_SECONDS,
                           "device": "cpu", "epochs": 3})
                store.run_unit("retrain", {"selection": unit.key, "seed": seed}, lambda work, r=retrain: r.to_result())


@pytest.fixture
def runs(tmp_path):
    fill(RunStore(tmp_path / "runs", log=lambda line: None))
    return tmp_path / "runs"


@pytest.fixture
def rows(runs):
    return {(row.recipe, row.selector): row for row in build_rows(*load_records(runs, log=lambda line: None))}


def welch_by_hand(a, b):
    """Welch's t and the Welch–Satterthwaite degrees of freedom, then the two-sided p from the t density."""
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    var_a = sum((x - mean_a) ** 2 for x in a) / (len(a) - 1)
    var_b = sum((x - mean_b) ** 2 for x in b) / (len(b) - 1)
    se_a, se_b = var_a / len(a), var_b / len(b)
    t = (mean_a - mean_b) / math.sqrt(se_a + se_b)
    df = (se_a + se_b) ** 2 / (se_a ** 2 / (len(a) - 1) + se_b ** 2 / (len(b) - 1))
    norm = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    tail, _ = integrate.quad(lambda x: norm * (1 + x * x / df) ** (-(df + 1) / 2), abs(t), math.inf)
    return 2 * tail


def test_shared_fraction_on_hand_made_genotypes():
    assert shared_fraction(REFERENCE_0, REFERENCE_0) == 1.0
    assert shared_fraction(PERTURBATION_0, REFERENCE_0) == 7 / 8
    assert shared_fraction(PERTURBATION_1, REFERENCE_1) == 4 / 8
    assert shared_fraction(COST_SIGN_0, REFERENCE_0) == shared_fraction(REFERENCE_0, COST_SIGN_0) == 6 / 8


def test_accuracy_statistics(rows):
    reference = rows["demo", "alpha-magnitude"]
    assert reference.runs == 4
    assert reference.test_acc_mean == pytest.approx((90 + 92 + 91 + 93) / 4)
    # deviations from 91.5: -1.5, 0.5, -0.5, 1.5 -> squares sum to 5, sample variance 5 / 3
    assert reference.test_acc_std == pytest.approx(math.sqrt(5 / 3))
    assert reference.test_acc_best == pytest.approx(93)
    perturbation = rows["demo", "perturbation"]
    assert (perturbation.runs, perturbation.test_acc_mean, perturbation.test_acc_std) == (
        3, pytest.approx(94), pytest.approx(1.0))
    lonely = rows["demo", "lonely"]
    assert lonely.runs == 1 and lonely.test_acc_mean == pytest.approx(80) and lonely.test_acc_std is None


def test_cost_columns(rows):
    reference = rows["demo", "alpha-magnitude"]
    assert reference.params_m_mean == pytest.approx((3 + 4 + 3 + 4) / 4)
    assert reference.selection_seconds_mean == pytest.approx((1 + 3) / 2)
    assert reference.retrain_hours == pytest.approx(4 * 1800 / 3600)
    cost_sign = rows["demo", "cost-sign"]
    assert cost_sign.selection_seconds_mean == pytest.approx((10 + 30) / 2)  # the failed one took time too
    pending = rows["demo", "pending"]
    assert (pending.runs, pending.test_acc_mean, pending.retrain_hours, pending.params_m_mean) == (0, None, None, None)


def test_welch_p_values_against_hand_computation(rows):
    reference = [90, 92, 91, 93]
    assert rows["demo", "perturbation"].p_value == pytest.approx(welch_by_hand([93, 94, 95], reference), rel=1e-6)
    assert rows["demo", "cost-sign"].p_value == pytest.approx(welch_by_hand([91, 93.5], reference), rel=1e-6)
    assert rows["demo", "alpha-magnitude"].p_value is None   # the reference itself
    assert rows["demo", "lonely"].p_value is None            # one run: no variance
    assert rows["other", "alpha-magnitude"].p_value is None
    # the p-value does not depend on percent vs fraction, and the hand value is not trivial
    assert 0.001 < welch_by_hand([93, 94, 95], reference) < 0.1


def test_shared_fraction_and_failures_per_row(rows):
    assert rows["demo", "alpha-magnitude"].shared_with_reference == 1.0
    assert rows["demo", "perturbation"].shared_with_reference == pytest.approx((7 / 8 + 4 / 8) / 2)
    assert rows["demo", "cost-sign"].shared_with_reference == pytest.approx(6 / 8)  # failed sup1 has no cell
    assert rows["demo", "lonely"].shared_with_reference == 1.0
    # REFERENCE_1 against REFERENCE_0: (sep3, 0) into node 0 of normal, both reduce node-0 pools, (max, 0) into node 1
    assert rows["demo", "pending"].shared_with_reference == pytest.approx(4 / 8)
    failed = {key: (row.failed_selections, row.selections) for key, row in rows.items()}
    assert failed["demo", "cost-sign"] == (1, 2)
    assert failed["demo", "perturbation"] == (0, 2)


def test_rows_are_grouped_by_recipe_and_sorted_by_mean_accuracy(runs):
    order = [(row.recipe, row.selector) for row in build_rows(*load_records(runs, log=lambda line: None))]
    assert order == [("demo", "perturbation"), ("demo", "cost-sign"), ("demo", "alpha-magnitude"),
                     ("demo", "lonely"), ("demo", "pending"), ("other", "alpha-magnitude")]


def test_every_format_parses(runs):
    quiet = dict(log=lambda line: None)
    rows = build_rows(*load_records(runs, **quiet))
    as_json = json.loads(leaderboard(runs, "json", **quiet))
    assert [(r["recipe"], r["selector"]) for r in as_json] == [(r.recipe, r.selector) for r in rows]
    assert as_json[0]["test_acc_mean"] == pytest.approx(94) and as_json[2]["p_value"] is None
    as_csv = list(csv.DictReader(io.StringIO(leaderboard(runs, "csv", **quiet))))
    assert len(as_csv) == len(rows)
    assert float(as_csv[0]["test_acc_std"]) == pytest.approx(1.0) and as_csv[2]["p_value"] == ""
    assert as_csv[1]["failed_selections"] == "1" and as_csv[1]["selections"] == "2"
    markdown = leaderboard(runs, "markdown", **quiet).splitlines()
    assert len(markdown) == 2 + len(rows) and markdown[1].startswith("|-")
    assert "94.00 ± 1.00" in markdown[2] and "1/2" in markdown[3]
    assert [cell.strip() for cell in markdown[4].strip("|").split("|")][8] == "-"  # reference p-value
    latex = leaderboard(runs, "latex", **quiet)
    body = [line for line in latex.splitlines() if line.endswith("\\\\")]
    assert latex.startswith("\\begin{tabular}") and latex.rstrip().endswith("\\end{tabular}")
    assert len(body) == 1 + len(rows) and all(line.count("&") == 10 for line in body)


def test_corrupt_and_foreign_records_are_reported_not_used(runs):
    lines: list[str] = []
    store = RunStore(runs, log=lines.append)
    [victim] = [u for u in store.units("retrain") if u.result["selector"] == "lonely"]
    (victim.directory / "record.json").write_text("{")
    store.run_unit("retrain", {"foreign": 1}, lambda work: {"test_accuracy": 0.99})
    rows = {(r.recipe, r.selector): r for r in build_rows(*load_records(runs, log=lines.append))}
    assert rows["demo", "lonely"].runs == 0
    assert any(line.startswith(f"corrupt retrain {victim.short_key}") for line in lines)
    assert any(line.startswith("skipped retrain") and "lacks" in line for line in lines)


def test_a_retrain_whose_selection_is_unusable_is_left_out(runs, rows):
    lines: list[str] = []
    store = RunStore(runs, log=lines.append)
    selection = next(u for u in store.units("selection") if u.result["selector"] == "alpha-magnitude")
    (selection.directory / "record.json").write_text('{"format": "selbench-unit"')
    after = {(r.recipe, r.selector): r for r in build_rows(*load_records(runs, log=lines.append))}
    orphans = [u for u in store.units("retrain") if u.config["selection"] == selection.key]
    assert orphans and after[selection.result["recipe"], "alpha-magnitude"].runs == (
        rows[selection.result["recipe"], "alpha-magnitude"].runs - len(orphans))
    assert sum("is missing or unusable" in line for line in lines) == len(orphans)


def test_retrain_record_round_trips_and_rejects_failed_selections():
    selection = SelectionRecord("demo", "sup0", 0,
                                SelectionRun(Selection(genotype=REFERENCE_0), selector="alpha-magnitude"))
    record = RetrainRecord.from_score(selection, selection_key="k" * 64, retrain_seed=2, scorer="retrain",
                                      score={"test_accuracy": 0.5, "macs_m": 12.5, "epochs": 4, "artifacts": []})
    assert record.extra == {"epochs": 4} and record.macs_m == 12.5
    assert RetrainRecord.from_result(json.loads(json.dumps(record.to_result()))) == record
    failed = SelectionRecord("demo", "sup0", 0, SelectionRun(Selection(genotype=None, failure="none"), selector="x"))
    with pytest.raises(RecordError, match="failed"):
        RetrainRecord.from_score(failed, selection_key="k" * 64, retrain_seed=0, scorer="retrain",
                                 score={"test_accuracy": 0.5})


def test_cli(runs, capsys, tmp_path):
    assert main(["leaderboard", str(runs), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(build_rows(*load_records(runs, log=lambda line: None)))
    assert main(["leaderboard", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["leaderboard", str(tmp_path / "empty")]) == 2
    assert "no finished selections or retrains" in capsys.readouterr().err


def test_render_rejects_unknown_format():
    with pytest.raises(SelbenchError, match="unknown leaderboard format"):
        render([], "html")


def test_selection_records_carry_their_version_and_older_ones_still_read():
    run = SelectionRun(Selection(genotype=REFERENCE_0, counters={"hvps": 3}), selector="alpha-magnitude",
                       distribution="selbench", version="0.1.0", options={"a": 1}, seed=2, device="cpu", seconds=1.5,
                       counters={"hvps": 3, "forward_passes": 4})
    written = json.loads(json.dumps(run.to_dict()))
    assert written["record_version"] == 2
    assert SelectionRun.from_dict(written).to_dict() == written
    before = {k: v for k, v in written.items() if k != "record_version"}  # as selbench wrote them before versions
    back = SelectionRun.from_dict(before)
    assert back.to_dict() == written and back.genotype == REFERENCE_0 and back.counters == run.counters
    with pytest.raises(SelbenchError, match="selection record version 3 is newer than this selbench reads"):
        SelectionRun.from_dict({**written, "record_version": 3})
