"""`selbench report` and `selbench draw`: matrices against hand computations, cell drawings, the page in a browser."""
from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from test_leaderboard import (
    COST_SIGN_0,
    PERTURBATION_0,
    PERTURBATION_1,
    REFERENCE_0,
    REFERENCE_1,
)

from selbench import Genotype, Selection, SelectionRun
from selbench.bench.records import RetrainRecord, SelectionRecord
from selbench.bench.store import RunStore
from selbench.cli import main
from selbench.report.cells import genotype_svg
from selbench.report.html import build_report
from selbench.report.matrices import agreement_matrix, kendall_matrix, kendall_tau

pytestmark = pytest.mark.usefixtures("one_thread")

SVG = "{http://www.w3.org/2000/svg}"


def table(values):
    """Eight scores as per-cell [2 edges, 2 ops] tables: the first four normal, the last four reduce."""
    return {"normal": torch.tensor(values[:4], dtype=torch.float64).reshape(2, 2),
            "reduce": torch.tensor(values[4:], dtype=torch.float64).reshape(2, 2)}


ASCENDING = [1, 2, 3, 4, 5, 6, 7, 8]
# (selector, supernet) -> (genotype or failure, scores or None, selection seconds, retrain accuracies)
SELECTIONS = {
    ("alpha-magnitude", 0): (REFERENCE_0, ASCENDING, 0.01, [0.90, 0.92]),
    ("alpha-magnitude", 1): (REFERENCE_1, ASCENDING, 0.02, [0.91]),
    ("perturbation", 0): (PERTURBATION_0, [2, 1, 3, 4, 5, 6, 8, 7], 50.0, [0.93]),  # 2 of 28 pairs swapped
    ("perturbation", 1): (PERTURBATION_1, ASCENDING[::-1], 70.0, []),               # reversed; not retrained
    ("cost-sign", 0): (COST_SIGN_0, None, 3.0, [0.94]),                              # no scores
    ("cost-sign", 1): ("no edge has a negative cost", [3, 1, 2, 4, 5, 6, 7, 8], 4.0, []),  # failed, with scores
}
TOY_LAYOUT = {"name": "toy", "cell_types": ["normal"], "ops": ["none", "a", "b"], "num_input_nodes": 2,
              "edges": [[0, 2], [1, 2], [0, 3], [1, 3], [2, 3]]}


def toy_training_record(directory: Path) -> None:
    """A two-epoch `selbench train` record with α and cost-sign records (as tests/test_analyze.py's)."""
    costs = [[-9, 0.3, 0.1], [-9, 0.2, -0.4], [-9, 0.5, 0.6], [-9, -0.1, 0.9], [-9, 0.7, 0.8]]
    epochs = [{"epoch": e, "alpha_softmax": {"normal": [[0.5, 0.3 + 0.05 * e, 0.2 - 0.05 * e]] * 5},
               "observers": {"cost-sign": {"mean_cost": {s: {"normal": costs} for s in ("train", "valid")},
                                           "steps": {"train": 3, "valid": 3}}}} for e in (1, 2)]
    record = {"format": "selbench-train-record", "recipe_name": "demo", "seed": 0, "mode": "bilevel-1st",
              "alpha_split": "valid", "space": TOY_LAYOUT, "epochs": epochs}
    (directory / "supernet.json").write_text(json.dumps(record))


def fill(store: RunStore) -> dict[int, str]:
    """Supernet 0 with its training record, supernet 2 without selections; supernet 1 is referred to but absent."""
    def train(work):
        toy_training_record(work.directory)
        work.add_artifact("supernet.json")
        return {"recipe": "demo", "seed": 0}

    keys = {0: store.run_unit("supernet", {"recipe": "demo", "seed": 0}, train).key,
            1: "1" * 64,
            2: store.run_unit("supernet", {"recipe": "demo", "seed": 2}, lambda work: {"recipe": "demo", "seed": 2}
                              ).key}
    for (selector, supernet), (outcome, scores, seconds, accuracies) in SELECTIONS.items():
        failed = isinstance(outcome, str)
        chosen = Selection(genotype=None if failed else outcome, failure=outcome if failed else None,
                           scores=None if scores is None else table(scores))
        record = SelectionRecord("demo", keys[supernet], supernet, SelectionRun(
            chosen, selector=selector, distribution="selbench", version="0.1.0", seconds=seconds, seed=0))
        unit = store.run_unit("selection", {"selector": selector, "supernet": supernet},
                              lambda work, record=record: record.to_result())
        for seed, accuracy in enumerate(accuracies):
            retrain = RetrainRecord.from_score(record, selection_key=unit.key, retrain_seed=seed, scorer="retrain",
                                               score={"test_accuracy": accuracy, "params_m": 1.0, "seconds": 60.0})
            store.run_unit("retrain", {"selection": unit.key, "seed": seed}, lambda work, r=retrain: r.to_result())
    return keys


@pytest.fixture
def runs(tmp_path):
    fill(RunStore(tmp_path / "runs", log=lambda line: None))
    return tmp_path / "runs"


def records():
    out = []
    for (selector, supernet), (outcome, scores, seconds, _) in SELECTIONS.items():
        failed = isinstance(outcome, str)
        chosen = Selection(genotype=None if failed else outcome, failure=outcome if failed else None,
                           scores=None if scores is None else table(scores))
        out.append(SelectionRecord("demo", f"sup{supernet}", supernet, SelectionRun(chosen, selector=selector,
                                                                                    seconds=seconds)))
    return out


def tau_by_hand(x, y):
    """Kendall's τ of tie-free sequences: (concordant − discordant) / number of pairs."""
    signs = [np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in itertools.combinations(range(len(x)), 2)]
    return sum(signs) / len(signs)


ORDER = ("alpha-magnitude", "perturbation", "cost-sign")


def test_agreement_matrix_equals_hand_computation():
    agreement = agreement_matrix(records(), ORDER)
    # alpha vs perturbation: 7 of 8 choices on supernet 0 (one op differs), 4 of 8 on supernet 1 (reduce differs)
    assert agreement.value("alpha-magnitude", "perturbation") == pytest.approx((7 / 8 + 4 / 8) / 2)
    # cost-sign found a cell on supernet 0 only: 6 shared choices / max(7, 8)
    assert agreement.value("alpha-magnitude", "cost-sign") == pytest.approx(6 / 8)
    # perturbation vs cost-sign on supernet 0: normal (sep3, 0), (sep3, 1), (skip, 0); reduce (max, 0), (skip, 2)
    assert agreement.value("perturbation", "cost-sign") == pytest.approx(5 / 8)
    assert np.allclose(agreement.values, agreement.values.T) and np.all(np.diag(agreement.values) == 1)
    assert agreement.counts.tolist() == [[2, 2, 1], [2, 2, 1], [1, 1, 1]]


def test_kendall_matrix_equals_hand_computation():
    tau = kendall_matrix(records(), ORDER)
    assert tau_by_hand(ASCENDING, [2, 1, 3, 4, 5, 6, 8, 7]) == pytest.approx(24 / 28)
    # alpha vs perturbation: 24/28 on supernet 0, −1 (reversed) on supernet 1
    assert tau.value("alpha-magnitude", "perturbation") == pytest.approx((24 / 28 - 1) / 2)
    # cost-sign's only scores are those of its failed selection on supernet 1: they count
    assert tau.value("alpha-magnitude", "cost-sign") == pytest.approx(tau_by_hand(ASCENDING, [3, 1, 2, 4, 5, 6, 7, 8]))
    assert tau.value("perturbation", "cost-sign") == pytest.approx(-24 / 28)
    assert tau.counts.tolist() == [[2, 2, 1], [2, 2, 1], [1, 1, 1]]
    # without any scores a selector's row is undefined
    no_scores = [r for r in records() if r.selection.selector != "cost-sign" or r.selection.genotype is not None]
    assert np.isnan(kendall_matrix(no_scores, ORDER).values[2]).all()


def test_kendall_tau_undefined_cases():
    assert kendall_tau(np.ones(4), np.arange(4.0)) is None              # constant table
    assert kendall_tau(np.arange(4.0), np.arange(5.0)) is None          # other shapes
    x, y = np.array([1.0, np.nan, 2.0, 3.0]), np.array([3.0, 1.0, 2.0, 1.0])
    assert kendall_tau(x, y) == pytest.approx(tau_by_hand([1, 2, 3], [3, 2, 1]))  # NaN entry left out


def svg_edges(svg: str) -> dict[str, str]:
    """Edge group id -> the text of its label group."""
    root = ET.fromstring(svg)
    groups = {g.get("id"): g for g in root.iter(f"{SVG}g") if (g.get("id") or "").startswith("edge:")}
    return {gid: "".join(groups[f"{gid}:label"].itertext()).strip() for gid in groups if not gid.endswith(":label")}


@pytest.mark.parametrize("genotype", [COST_SIGN_0, REFERENCE_0,
                                      Genotype.parse("|nor_conv_3x3~0|+|none~0|skip_connect~1|+"
                                                     "|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|")])
def test_drawing_has_one_labelled_edge_per_chosen_pair(genotype):
    edges = svg_edges(genotype_svg(genotype))
    inputs = 1 if genotype.cell_types == ("cell",) else 2
    expected = {f"edge:{cell_type}:{src}:{inputs + node}:{op}": op for cell_type, cell in genotype.items()
                for node, pairs in enumerate(cell.nodes) for op, src in pairs}
    assert edges == expected


def test_draw_command_reads_every_genotype_form(runs, tmp_path, capsys):
    (tmp_path / "g.json").write_text(REFERENCE_0.to_json())
    (tmp_path / "g.txt").write_text(str(REFERENCE_1) + "\n")
    [unit] = [u for u in RunStore(runs).units("selection") if u.config == {"selector": "cost-sign", "supernet": 0}]
    assert main(["draw", str(unit.directory / "record.json"), "--out", str(tmp_path / "unit.svg")]) == 0
    assert len(svg_edges((tmp_path / "unit.svg").read_text())) == 7  # COST_SIGN_0
    for source, out in [(str(tmp_path / "g.json"), "a.svg"), (str(tmp_path / "g.txt"), "b.png"),
                        (str(COST_SIGN_0), "c.svg"), ("|nor_conv_3x3~0|+|none~0|skip_connect~1|", "d.svg")]:
        assert main(["draw", source, "--out", str(tmp_path / out)]) == 0
        assert f"drawing: {tmp_path / out}" in capsys.readouterr().out
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(svg_edges((tmp_path / "a.svg").read_text())) == 8  # 2 cells × 2 nodes × 2 inputs
    assert main(["draw", str(REFERENCE_0), "--out", str(tmp_path / "cell.pdf")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ".svg or .png" in err


def figure_kinds(page: str) -> list[str]:
    return re.findall(r"data-kind='([a-z-]+)'", page)


def test_report_of_a_half_finished_store(runs):
    page = build_report(runs)
    kinds = figure_kinds(page)
    assert kinds.count("cell") == 5 and kinds.count("failed-cell") == 1  # 6 selections, one failed
    assert [k for k in kinds if k not in ("cell", "failed-cell")] == ["agreement", "kendall", "scatter",
                                                                      "trajectory", "trajectory",
                                                                      "trajectory"]  # α, costs, mean-costs
    assert page.count("<figure") == len(kinds) and page.count("<figcaption>") == len(kinds)
    assert "<table class='leaderboard'>" in page and page.count("<svg") == len(kinds) - 1
    missing = page[page.index("id='missing'"):page.index("id='recipe-demo'")]
    assert "seed 2): no selection yet" in missing
    assert "perturbation on supernet seed 1 (recipe demo): cell selected, no retrain yet" in missing
    assert "failed selection: cost-sign on supernet seed 1" in missing
    assert "11111111" in missing and "not in this store" in missing
    # self-contained: nothing to fetch (url(#id) only refers to the page's own clip paths)
    assert not re.search(r"""(src|href)=['"]?(https?:|//)|url\((?!#)|@import""", page)


def test_report_command_and_empty_store(runs, tmp_path, capsys):
    out = tmp_path / "out" / "report.html"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    assert f"report: {out}" in capsys.readouterr().out and out.read_text().startswith("<!DOCTYPE html>")
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "never.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no finished supernets, selections or retrains" in err
    assert not (tmp_path / "never.html").exists()


def test_report_without_matplotlib_is_one_line(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    assert main(["report", str(runs), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'selbench[plot]'" in err


def chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))),
                None)


@pytest.mark.skipif(chromium() is None, reason="no chromium binary on PATH (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(build_report(runs), encoding="utf-8")
    flags = [chromium(), "--headless=new", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
             "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the page has no script: any console message ("INFO:CONSOLE:1] ...", "Uncaught ...") is a problem
    for problem in ("Uncaught", ":CONSOLE", "Failed to load resource"):
        assert problem not in dom.stderr, dom.stderr[-2000:]
    rendered = dom.stdout
    assert rendered.count('<table class="leaderboard">') == 1
    kinds = re.findall(r'data-kind="([a-z-]+)"', rendered)
    assert kinds == figure_kinds(page.read_text()) and len(kinds) == 12
    drawings = re.findall(r"<figure[^>]*>\s*<svg.*?</svg>", rendered, flags=re.DOTALL)
    assert len(drawings) == 11  # every figure but the failed cell is an SVG, and none is empty
    assert all(svg.count("<path") >= 10 and svg.count("<text") >= 3 for svg in drawings)

    shot = tmp_path / "shot.png"
    result = subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,3000", page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    rgb = (pixels * 255).round().astype(np.int64)
    colours = np.unique(rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2])
    assert len(colours) > 100 and pixels.std() > 0.05  # text, lines and colour, not a blank page
    # the lower half holds figures too (cells, matrices), not only the table at the top
    assert (pixels[1500:].std(axis=(0, 1)) > 0.02).all()
