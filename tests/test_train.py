"""`selbench train`: checkpoint and record, determinism, resuming, frozen α, and data for `selbench select`."""
from __future__ import annotations

import json

import pytest
import torch

import selbench
from selbench.cli import main
from selbench.plugin.host import PluginHost
from selbench.recipes.recipe import Recipe
from selbench.train.driver import STATE_FILE, TRAIN_SECTIONS, train_supernet

pytestmark = pytest.mark.usefixtures("one_thread")

MICRO = {
    "name": "micro",
    "supernet": {"space": "darts", "C": 2, "layers": 3, "steps": 2},
    "data": {"dataset": "digits", "subset": 32, "batch_size": 8, "crop_padding": 1, "flip": True, "cutout": 3},
    "search": {"mode": "bilevel-1st", "epochs": 3, "lr": 0.05, "arch_lr": 0.01},
}


def micro(**search) -> Recipe:
    return Recipe.from_dict({**MICRO, "search": {**MICRO["search"], **search}})


def micro_toml(tmp_path, **search) -> str:
    lines = []
    for section in ("supernet", "data", "search"):
        lines.append(f"[{section}]")
        values = {**MICRO[section], **(search if section == "search" else {})}
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = tmp_path / "micro.toml"
    path.write_text("\n".join(lines) + "\n[retrain]\n")  # the defaults: training only reads the other three
    return str(path)


def checkpoint_tensors(path):
    data = selbench.read_checkpoint(path)
    return {**{f"theta.{k}": v for k, v in data["state_dict"].items()},
            **{f"alpha.{k}": v for k, v in data["alphas"].items()}}


class Interrupted(Exception):
    pass


def test_training_writes_a_loadable_checkpoint_and_a_record(tmp_path):
    recipe = micro()
    path = train_supernet(recipe, seed=0, device="cpu", out_dir=tmp_path, progress=False)
    supernet = selbench.load_supernet(path)
    meta = supernet.metadata
    assert meta["recipe"] == recipe.to_dict() and meta["recipe_name"] == "micro" and meta["seed"] == 0
    assert (meta["mode"], meta["epochs"], meta["alpha_split"]) == ("bilevel-1st", 3, "valid")
    assert meta["config_hash"] == recipe.config_hash(*TRAIN_SECTIONS)
    record = json.loads((tmp_path / "supernet.json").read_text())
    assert record["config_hash"] == meta["config_hash"] and record["device"].startswith("cpu")
    assert record["torch_version"] == torch.__version__ and record["selbench_version"] == selbench.__version__
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3] and record["wall_seconds"] > 0
    lrs = [e["lr"] for e in record["epochs"]]
    assert lrs[0] == 0.05 and lrs[0] > lrs[1] > lrs[2]  # cosine
    for entry in record["epochs"]:
        assert 0 <= entry["train_accuracy"] <= 1 and 0 <= entry["valid_accuracy"] <= 1 and entry["valid_loss"] > 0
    for cell_type, alpha in supernet.alphas.items():
        recorded = torch.tensor(record["epochs"][-1]["alpha_softmax"][cell_type])
        assert torch.allclose(recorded, alpha.detach().softmax(-1), atol=1e-6)
    assert not (tmp_path / STATE_FILE).exists()


def test_same_seed_gives_identical_alpha_and_another_seed_does_not(tmp_path):
    runs = [train_supernet(micro(epochs=1), seed=seed, device="cpu", out_dir=tmp_path / f"{i}", progress=False)
            for i, seed in enumerate((5, 5, 6))]
    first, again, other = (selbench.read_checkpoint(p)["alphas"] for p in runs)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["normal"], other["normal"])


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path):
    recipe = micro()
    reference = train_supernet(recipe, seed=1, device="cpu", out_dir=tmp_path / "whole", progress=False)
    seen = []

    def kill_in_epoch_two(label, step, steps):
        seen.append((label, step))
        if label == "epoch 2/3" and step == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_supernet(recipe, seed=1, device="cpu", out_dir=tmp_path / "resumed", progress=kill_in_epoch_two)
    assert not (tmp_path / "resumed" / "supernet.pt").exists()
    assert (tmp_path / "resumed" / STATE_FILE).exists()  # epoch 1 was saved; epoch 2 was cut short
    seen.clear()
    resumed = train_supernet(recipe, seed=1, device="cpu", out_dir=tmp_path / "resumed",
                             progress=lambda label, step, steps: seen.append((label, step)))
    assert seen[0] == ("epoch 2/3", 1)  # it started again at epoch 2, not at 1

    expected, got = checkpoint_tensors(reference), checkpoint_tensors(resumed)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)

    def without_time(path):
        return [{k: v for k, v in e.items() if k != "seconds"}
                for e in json.loads((path.parent / "supernet.json").read_text())["epochs"]]

    assert without_time(reference) == without_time(resumed)


def test_frozen_alpha_keeps_the_initial_alpha_bit_identical(tmp_path):
    recipe = micro(mode="frozen-alpha", epochs=2)
    path = train_supernet(recipe, seed=3, device="cpu", out_dir=tmp_path, progress=False)
    torch.manual_seed(3)
    initial = recipe.build_supernet(num_classes=10, in_channels=1)
    trained = selbench.load_supernet(path)
    assert all(torch.equal(trained.alphas[k], initial.alphas[k]) for k in initial.alphas)
    assert not torch.equal(trained.stem[0].weight, initial.stem[0].weight)
    assert trained.metadata["alpha_split"] is None


@pytest.mark.parametrize("mode, split", [("single-level", "train"), ("bilevel-2nd", "valid")])
def test_other_modes_train_alpha_and_record_their_split(tmp_path, mode, split):
    recipe = micro(mode=mode, epochs=1)
    path = train_supernet(recipe, seed=0, device="cpu", out_dir=tmp_path, progress=False)
    torch.manual_seed(0)
    initial = recipe.build_supernet(num_classes=10, in_channels=1)
    trained = selbench.load_supernet(path)
    assert trained.metadata["alpha_split"] == split and trained.metadata["mode"] == mode
    assert not torch.equal(trained.alphas["normal"], initial.alphas["normal"])


def test_a_finished_run_is_not_trained_again(tmp_path):
    recipe = micro(epochs=1)
    path = train_supernet(recipe, seed=0, device="cpu", out_dir=tmp_path, progress=False)
    before = path.stat().st_mtime_ns

    def no_training(*args):
        raise AssertionError("a finished run trained again")

    assert train_supernet(recipe, seed=0, device="cpu", out_dir=tmp_path, progress=no_training) == path
    assert path.stat().st_mtime_ns == before
    with pytest.raises(selbench.SelbenchError, match="another configuration or seed"):
        train_supernet(micro(epochs=2), seed=0, device="cpu", out_dir=tmp_path, progress=False)


def test_train_command_without_cifar_files_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SELBENCH_DATA", str(tmp_path))
    assert main(["train", "darts-cifar10", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(tmp_path / "cifar10") in err and "cifar-10-python.tar.gz" in err and "--download" in err


# -- data for selectors ------------------------------------------------------------------------------
class DataProbe:
    """A selector plugin that needs data and remembers the labels of the valid split it was given."""

    valid_labels: list[torch.Tensor] = []

    @staticmethod
    def run(ctx):
        DataProbe.valid_labels = [labels for _, labels in ctx.batches("valid")]
        return ctx.space.genotype_from_scores(ctx.mixing_weights())

    @staticmethod
    @selbench.hookimpl
    def selbench_register_selectors(register):
        register(selbench.Selector(name="data-probe", run=DataProbe.run, needs_data=True))


@pytest.fixture
def probe_host():
    selbench.use_plugin_host(PluginHost([("data-probe", DataProbe)]))
    yield
    selbench.use_plugin_host(None)


def test_select_rebuilds_the_training_data_from_the_checkpoint(tmp_path, probe_host, capsys):
    recipe_file = micro_toml(tmp_path, epochs=1)
    assert main(["train", recipe_file, "--seed", "4", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert "valid accuracy" in capsys.readouterr().out
    assert main(["select", str(tmp_path / "run" / "supernet.pt"), "--selector", "data-probe"]) == 0
    expected = [labels for _, labels in selbench.load_data(MICRO["data"], seed=4).batches("valid")]
    assert len(expected) == 2 and all(torch.equal(a, b) for a, b in zip(DataProbe.valid_labels, expected))


def test_select_on_a_foreign_checkpoint_needs_a_recipe(tmp_path, probe_host, capsys):
    supernet = micro().build_supernet(num_classes=10, in_channels=1)
    selbench.save_supernet(supernet, tmp_path / "foreign.pt")
    assert main(["select", str(tmp_path / "foreign.pt"), "--selector", "data-probe"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--recipe" in err
    recipe_file = micro_toml(tmp_path)
    assert main(["select", str(tmp_path / "foreign.pt"), "--selector", "data-probe", "--recipe", recipe_file,
                 "--seed", "2"]) == 0
    expected = [labels for _, labels in selbench.load_data(MICRO["data"], seed=2).batches("valid")]
    assert all(torch.equal(a, b) for a, b in zip(DataProbe.valid_labels, expected))
