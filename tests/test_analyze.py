"""`selbench analyze`: trajectories from a hand-made record, PNGs from a real run, and the errors."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from selbench.cli import main
from selbench.plugins.cost_sign import COSTS
from selbench.recipes.recipe import Recipe
from selbench.report.trajectories import (
    edge_counts,
    load_run,
    summary_rows,
    trajectories,
)
from selbench.train.driver import train_supernet

pytestmark = pytest.mark.usefixtures("one_thread")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DPI, WIDTH_INCHES = 110, 11  # selbench.plots' figure: 11 inches wide, 2.8 inches per row + 0.6

LAYOUT = {"name": "toy", "cell_types": ["normal"], "ops": ["none", "a", "b"], "num_input_nodes": 2,
          "edges": [[0, 2], [1, 2], [0, 3], [1, 3], [2, 3]]}  # input edges 0-3, one intermediate edge 2→3


def toy_record(path, with_costs=True):
    """Two epochs of one cell with 5 edges and 3 ops; ``none`` always has the largest weight and the lowest
    cost, so a trajectory that does not leave it out is wrong."""
    costs = {  # [epoch][split] -> [edge][op]
        1: {"train": [[-9, 0.3, 0.1], [-9, 0.2, 0.4], [-9, 0.5, 0.6], [-9, 0.1, 0.9], [-9, 0.7, 0.8]],
            "valid": [[-9, 0.3, 0.2], [-9, 0.2, 0.2], [-9, 0.5, 0.6], [-9, 0.1, 0.9], [-9, 0.7, 0.8]]},
        2: {"train": [[-9, -0.3, 0.1], [-9, 0.2, -0.4], [-9, 0.5, 0.6], [-9, -0.1, 0.9], [-9, 0.7, -0.2]],
            "valid": [[-9, 0.3, 0.2], [-9, 0.2, 0.2], [-9, 0.5, 0.6], [-9, 0.1, 0.9], [-9, 0.7, 0.8]]},
    }
    alphas = {1: [[0.5, 0.3, 0.2]] * 5, 2: [[0.6, 0.1, 0.3], [0.5, 0.4, 0.1], [0.8, 0.1, 0.1], [0.4, 0.3, 0.3],
                                            [0.9, 0.05, 0.05]]}
    epochs = [{"epoch": e, "alpha_softmax": {"normal": alphas[e]},
               "observers": {"cost-sign": {"mean_cost": {s: {"normal": costs[e][s]} for s in costs[e]},
                                           "steps": {"train": 3, "valid": 3}}} if with_costs else {}}
              for e in (1, 2)]
    record = {"format": "selbench-train-record", "recipe_name": "toy", "seed": 0, "mode": "bilevel-1st",
              "alpha_split": "valid", "space": LAYOUT, "epochs": epochs}
    path.mkdir(parents=True, exist_ok=True)
    (path / "supernet.json").write_text(json.dumps(record))
    return path


def test_trajectories_and_summary_of_a_hand_made_record(tmp_path):
    run = load_run(toy_record(tmp_path))
    alphas, = trajectories(run, "alphas")
    assert alphas.epochs == [1, 2] and alphas.split is None
    assert torch.equal(alphas.values, torch.tensor([[0.3] * 5, [0.3, 0.4, 0.1, 0.3, 0.05]], dtype=torch.float64))

    valid, train = trajectories(run, "costs")  # the split α learns from first
    assert (valid.split, train.split) == ("valid", "train")
    assert torch.equal(train.values, torch.tensor([[0.1, 0.2, 0.5, 0.1, 0.7], [-0.3, -0.4, 0.5, -0.1, -0.2]],
                                                  dtype=torch.float64))
    assert torch.equal(valid.values[1], torch.tensor([0.2, 0.2, 0.5, 0.1, 0.7], dtype=torch.float64))

    _, mean_train = trajectories(run, "mean-costs")  # the mean over the non-none ops a and b
    assert torch.allclose(mean_train.values[1], torch.tensor([-0.1, -0.1, 0.55, 0.4, 0.25], dtype=torch.float64))

    rows = {(r[0], r[2]): r for r in summary_rows(run, COSTS, trajectories(run, "costs"))}
    assert rows["train", "input"][3:] == [4, 1, 2, "+0.225", "-0.075", 0, 3]
    assert rows["train", "intermediate"][3:] == [1, 1, 2, "+0.7", "-0.2", 0, 1]
    assert rows["valid", "input"][-2:] == [0, 0]


@pytest.fixture(scope="module")
def bilevel_run(tmp_path_factory):
    """A real two-epoch bi-level run, with the observers the installed plugins register (cost-sign among them)."""
    recipe = Recipe.from_dict({"name": "micro", "supernet": {"space": "darts", "C": 2, "layers": 3, "steps": 2},
                               "data": {"dataset": "digits", "subset": 32, "batch_size": 8},
                               "search": {"mode": "bilevel-1st", "epochs": 2, "lr": 0.05, "arch_lr": 0.01}})
    out = tmp_path_factory.mktemp("bilevel")
    train_supernet(recipe, seed=0, out_dir=out, progress=False)
    return out


def png_pixels(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 20_000
    return torch.from_numpy(matplotlib.image.imread(path))


@pytest.mark.parametrize("quantity, rows", [("costs", 4), ("alphas", 2)])  # costs: 2 splits × 2 cell types
def test_analyze_draws_a_png_into_the_run_directory(bilevel_run, capsys, quantity, rows):
    assert main(["analyze", str(bilevel_run), "--plot", quantity]) == 0
    out = capsys.readouterr().out
    assert f"plot: {bilevel_run / f'{quantity}.png'}" in out
    assert f"{quantity}: first and last epoch" in out and "intermediate" in out
    assert ({"alphas", "costs"} - {quantity}).pop() + ":" not in out  # only the plotted quantity's table
    pixels = png_pixels(bilevel_run / f"{quantity}.png")
    assert pixels.shape[:2] == (round(DPI * (2.8 * rows + 0.6)), DPI * WIDTH_INCHES)
    rgb = (pixels[..., :3] * 255).round().long()
    colours = torch.unique(rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2])
    assert len(colours) > 50 and pixels[..., :3].std() > 0.05  # lines, text and colours, not a blank canvas


def test_analyze_writes_to_out_and_accepts_the_record_file(bilevel_run, tmp_path, capsys):
    target = tmp_path / "figures" / "a.png"
    assert main(["analyze", str(bilevel_run / "supernet.json"), "--plot", "alphas", "--out", str(target)]) == 0
    assert png_pixels(target).shape[0] == round(DPI * (2.8 * 2 + 0.6))


def test_missing_matplotlib_is_one_clear_line(bilevel_run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    assert main(["analyze", str(bilevel_run), "--plot", "costs", "--out", str(bilevel_run / "never.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "matplotlib" in err and "pip install 'selbench[plot]'" in err
    assert not (bilevel_run / "never.png").exists()


def test_costs_asked_of_a_run_without_cost_records_name_the_plugin(tmp_path, capsys):
    run = toy_record(tmp_path, with_costs=False)
    assert main(["analyze", str(run)]) == 0  # the α table alone
    assert "costs:" not in capsys.readouterr().out
    assert main(["analyze", str(run), "--plot", "costs"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no records of 'costs'" in err and "'cost-sign'" in err


@pytest.mark.parametrize("argv, message", [
    (["{tmp}/nowhere"], "no supernet.json"),
    (["{run}", "--out", "x.png"], "add --plot"),
    (["{run}", "--plot", "betas"], "unknown quantity 'betas'"),
])
def test_user_mistakes_are_one_line(tmp_path, capsys, argv, message):
    run = toy_record(tmp_path / "run")
    assert main(["analyze"] + [a.format(tmp=tmp_path, run=run) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_edges_counts_the_edges_below_zero_per_epoch_split_and_group(tmp_path, capsys):
    run = toy_record(tmp_path)
    valid, train = edge_counts(load_run(run).layout, trajectories(load_run(run), "costs"))
    # epoch 2, train split: best costs -0.3, -0.4, 0.5, -0.1 on the input edges, -0.2 on the intermediate one
    assert train.counts == {"all": [0, 4], "input": [0, 3], "intermediate": [0, 1]}
    assert valid.counts == {"all": [0, 0], "input": [0, 0], "intermediate": [0, 0]}
    assert main(["analyze", str(run), "--plot", "edges"]) == 0
    out = capsys.readouterr().out
    assert "edges with costs < 0 per epoch" in out and "4 (3 + 1)" in out
    assert png_pixels(run / "edges.png").shape[:2] == (round(110 * 3.6), round(110 * 5.5 * 2))


def test_edges_of_a_run_without_a_signed_quantity_is_one_line(tmp_path, capsys):
    run = toy_record(tmp_path, with_costs=False)
    assert main(["analyze", str(run), "--plot", "edges"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--plot edges counts" in err and "cost-sign" in err
