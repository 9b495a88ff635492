"""The grid end to end on a micro recipe: real training, selection, retraining, reuse, leaderboard."""
from __future__ import annotations

import json

import pytest
import torch

from selbench import Selection, SelectionRun
from selbench.bench.grid import retrain_task, run_grid, supernet_task
from selbench.bench.leaderboard import leaderboard
from selbench.bench.records import SelectionRecord
from selbench.bench.store import RunStore, Unit
from selbench.bench.unit_bar import UnitBar
from selbench.recipes.recipe import load_recipe

MICRO = """
description = "micro grid for tests"
[supernet]
space = "darts"
C = 2
layers = 3
steps = 2
[data]
dataset = "digits"
subset = 96
batch_size = 32
[search]
mode = "bilevel-1st"
epochs = 1
[retrain]
C = 4
layers = 3
auxiliary = false
drop_path_prob = 0.1
cutout = 0
epochs = 1
batch_size = 32
"""


@pytest.fixture
def micro_recipe(tmp_path):
    path = tmp_path / "micro.toml"
    path.write_text(MICRO)
    return load_recipe(str(path))


def test_grid_trains_once_reuses_everything_and_feeds_the_leaderboard(micro_recipe, tmp_path):
    lines: list[str] = []
    store = RunStore(tmp_path / "runs", log=lines.append)
    selectors = ["alpha-magnitude", "cost-sign"]
    first = run_grid([micro_recipe], selectors, seeds=[0], retrain_seeds=[0], store=store, progress=False)
    assert (first.supernets, first.selections, first.retrains + first.failed_selections) == (1, 2, 2)
    computed = [line for line in lines if line.startswith("computing")]
    assert len([line for line in computed if line.startswith("computing supernet")]) == 1  # shared by both selectors

    lines.clear()
    again = run_grid([micro_recipe], selectors, seeds=[0], retrain_seeds=[0], store=store, progress=False)
    assert again == first
    assert lines and all(line.startswith("reused") for line in lines)

    table = json.loads(leaderboard(tmp_path / "runs", "json"))
    assert sorted(row["selector"] for row in table) == selectors
    scored = [row for row in table if row["runs"]]
    assert scored and all(0.0 <= row["test_acc_mean"] <= 100.0 for row in scored)


def test_every_unit_shows_a_bar_named_in_words_above_the_grid_bar(micro_recipe, tmp_path, capfd):
    store = RunStore(tmp_path / "runs", log=lambda line: None)
    run_grid([micro_recipe], ["cost-sign"], seeds=[0], retrain_seeds=[0], store=store, progress=True)
    shown = capfd.readouterr().err
    assert "micro · supernet seed 0: epoch 1/1" in shown  # the supernet's steps
    assert "cost-sign · micro · supernet seed 0: cost on" in shown  # the selector's ctx.progress
    assert "cost-sign · micro · supernet seed 0 · retrain seed 0: retrain" in shown  # the scorer's epochs
    assert "grid: 100%" in shown and "3/3" in shown


def test_unit_bar_starts_over_for_each_label_and_shows_nothing_when_disabled(capfd):
    with UnitBar("alpha · demo · supernet seed 0") as bar:
        bar("epoch 1/2", 3, 4)
        first = bar.bar
        bar("epoch 2/2", 1, 4)
        assert bar.bar is first and bar.bar.n == 1 and bar.bar.total == 4
        assert bar.bar.desc.startswith("alpha · demo · supernet seed 0: epoch 2/2")
    assert bar.bar is None  # closed with the unit
    with UnitBar("quiet", enabled=False) as quiet:
        quiet("epoch 1/1", 1, 1)
    assert quiet.bar is None and "quiet" not in capfd.readouterr().err


def test_truncated_retrain_artifact_is_reported_and_recomputed(micro_recipe, tmp_path):
    lines: list[str] = []
    store = RunStore(tmp_path / "runs", log=lines.append)
    run_grid([micro_recipe], ["alpha-magnitude"], seeds=[0], retrain_seeds=[0], store=store, progress=False)
    network = next((tmp_path / "runs" / "retrain").glob("*/network.pt"))
    network.write_bytes(network.read_bytes()[:100])
    lines.clear()
    run_grid([micro_recipe], ["alpha-magnitude"], seeds=[0], retrain_seeds=[0], store=store, progress=False)
    assert any(line.startswith("corrupt retrain") for line in lines)
    assert any(line.startswith("computing retrain") for line in lines)
    assert len(network.read_bytes()) > 100


def test_unit_keys_ignore_where_the_data_files_are(tmp_path):
    path = tmp_path / "micro.toml"
    path.write_text(MICRO)
    failed = SelectionRun(Selection(genotype=None), selector="alpha-magnitude")
    result = SelectionRecord("micro", "0" * 64, 0, failed).to_result()
    selection = Unit("selection", "1" * 64, tmp_path, {"result": result})
    configs = []
    for overrides in ([], ["data.root=/elsewhere", "data.download=true"]):
        recipe = load_recipe(str(path), overrides)
        configs.append((supernet_task(recipe, 0, torch.device("cpu"), False).config,
                        retrain_task(recipe, selection, 0, torch.device("cpu")).config))
    assert configs[0] == configs[1]
