"""Recipes: the shipped files, validation, typed overrides, the config hash, `selbench recipes`."""
from __future__ import annotations

import subprocess
import sys

import pytest

import selbench
from selbench.cli import main
from selbench.recipes.recipe import (
    RETRAIN_TRAINING_DEFAULTS,
    Recipe,
    builtin_recipe_names,
    load_recipe,
    retrain_network_defaults,
)

SHIPPED = {"demo", "fmnist-small", "darts-fmnist", "darts-cifar10", "darts-cifar10-2nd", "darts-pt-cifar10",
           "single-level-cifar10"}
DARTS_OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
             "dil_conv_3x3", "dil_conv_5x5"]


def write(tmp_path, text, name="mine.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_shipped_recipe_loads_and_is_described():
    assert SHIPPED <= set(builtin_recipe_names())
    for name in builtin_recipe_names():
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.description
        assert set(RETRAIN_TRAINING_DEFAULTS) <= set(recipe.retrain)  # network keys: the space's build_network
        assert set(retrain_network_defaults(recipe.supernet["space"])) <= set(recipe.retrain_network())
        supernet = recipe.build_supernet(num_classes=10, in_channels=3)
        assert isinstance(supernet, selbench.Supernet)


def test_paper_recipes_carry_the_darts_settings():
    recipe = load_recipe("darts-cifar10")
    assert recipe.supernet == {"space": "darts", "C": 16, "layers": 8, "steps": 4}
    assert recipe.data["dataset"] == "cifar10" and recipe.data["train_portion"] == 0.5
    assert recipe.data["batch_size"] == 64
    search = recipe.search
    assert (search["mode"], search["epochs"], search["lr"], search["lr_min"], search["momentum"]) == \
        ("bilevel-1st", 50, 0.025, 0.001, 0.9)
    assert (search["weight_decay"], search["grad_clip"], search["arch_lr"], search["arch_beta1"],
            search["arch_beta2"], search["arch_weight_decay"]) == (3e-4, 5.0, 3e-4, 0.5, 0.999, 1e-3)
    assert recipe.retrain == {"C": 36, "layers": 20, "auxiliary": True, "auxiliary_weight": 0.4, "drop_path_prob": 0.2,
                              "cutout": 16, "epochs": 600, "batch_size": 96, "lr": 0.025, "lr_min": 0.0,
                              "momentum": 0.9, "weight_decay": 3e-4, "grad_clip": 5.0}
    assert load_recipe("darts-cifar10-2nd").search["mode"] == "bilevel-2nd"
    assert load_recipe("single-level-cifar10").search["mode"] == "single-level"
    assert load_recipe("darts-pt-cifar10").supernet["ops"] == DARTS_OPS[1:]
    assert recipe.data["split"] == "ordered"  # θ on the first half of the training set, α on the second, as DARTS
    for name in ("darts-cifar10-2nd", "single-level-cifar10", "darts-pt-cifar10"):
        other = load_recipe(name)
        # single-level DARTS is no reference recipe: it keeps the default (seeded) split and its config hash
        data = {k: v for k, v in recipe.data.items() if k != "split" or name != "single-level-cifar10"}
        assert other.retrain == recipe.retrain and other.data == data


def test_overrides_are_typed_like_the_value_they_replace():
    recipe = load_recipe("demo", ["search.epochs=3", "search.lr=1", "data.flip=true", "supernet.C=6",
                                  'supernet.ops=["none", "skip_connect"]', "retrain.auxiliary=no",
                                  "search.mode=single-level"])
    assert recipe.search["epochs"] == 3 and recipe.search["lr"] == 1.0 and isinstance(recipe.search["lr"], float)
    assert recipe.data["flip"] is True and recipe.supernet["C"] == 6
    assert recipe.supernet["ops"] == ["none", "skip_connect"] and recipe.retrain["auxiliary"] is False
    assert recipe.search["mode"] == "single-level"


@pytest.mark.parametrize("override, message", [
    ("search.epoch=3", "unknown key search.epoch"),
    ("searching.epochs=3", "unknown section [searching]"),
    ("search.epochs=three", "search.epochs"),
    ("supernet.width=3", "unknown key supernet.width for the darts space"),
    ("search.mode=trilevel", "search.mode 'trilevel' is not one of"),
    ("data.train_portion=1.5", "train_portion must be in (0, 1]"),
    ("retrain.drop_path_prob=1.0", "retrain.drop_path_prob must be in [0, 1)"),
    ("search.epochs", "expected section.key=value"),
])
def test_bad_overrides_are_one_clear_line(override, message):
    with pytest.raises(selbench.SelbenchError) as exc:
        load_recipe("demo", [override])
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_a_recipe_file_with_an_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, '[data]\ndataset = "digits"\nbatchsize = 8\n')
    with pytest.raises(selbench.SelbenchError) as exc:
        load_recipe(path)
    assert str(path) in str(exc.value) and "data.batchsize" in str(exc.value)
    path = write(tmp_path, "[model]\nC = 3\n", "other.toml")
    with pytest.raises(selbench.SelbenchError, match=r"unknown section \[model\]"):
        load_recipe(str(path))
    path = write(tmp_path, "[search]\nepochs = 2.5\n", "typed.toml")
    with pytest.raises(selbench.SelbenchError, match="search.epochs must be int"):
        load_recipe(path)
    path = write(tmp_path, "[supernet]\nnum_classes = 3\n", "classes.toml")
    with pytest.raises(selbench.SelbenchError, match="set by the dataset"):
        load_recipe(path)
    path = write(tmp_path, "[search\n", "broken.toml")
    with pytest.raises(selbench.SelbenchError, match="not valid TOML"):
        load_recipe(path)


def test_empty_sections_take_the_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, 'description = "tiny"\n[supernet]\n[data]\n[search]\nepochs = 2\n[retrain]\n'))
    assert recipe.name == "mine" and recipe.description == "tiny"
    assert recipe.search["epochs"] == 2 and recipe.search["lr"] == 0.025
    darts_evaluation_network = {"C": 36, "layers": 20, "auxiliary": True}  # REFERENCES: DARTS's CIFAR-10 network
    assert recipe.supernet == {"space": "darts"}
    assert recipe.retrain == {**darts_evaluation_network, **RETRAIN_TRAINING_DEFAULTS}


@pytest.mark.parametrize("text", ["", 'description = "no search"\n[supernet]\n[data]\n[retrain]\n'])
def test_a_missing_section_is_refused_not_defaulted(tmp_path, text):
    with pytest.raises(selbench.SelbenchError, match=r"mine.toml has no \[(supernet|search)\] section; write it"):
        load_recipe(write(tmp_path, text))
    with pytest.raises(selbench.SelbenchError, match="has no"):  # an override does not stand in for a section
        load_recipe(write(tmp_path, text), ["search.epochs=1"])


def test_a_recipe_can_start_from_another(tmp_path):
    demo = load_recipe("demo")
    recipe = load_recipe(write(tmp_path, 'base = "demo"\n[search]\nepochs = 1\n[retrain]\nepochs = 3\n'))
    assert recipe.search == {**demo.search, "epochs": 1}
    assert recipe.retrain == {**demo.retrain, "epochs": 3}
    assert (recipe.supernet, recipe.data, recipe.description) == (demo.supernet, demo.data, demo.description)
    (tmp_path / "child.toml").write_text('base = "mine.toml"\n[data]\nsubset = 50\n')
    child = load_recipe(tmp_path / "child.toml")
    assert child.name == "child" and child.data["subset"] == 50 and child.search["epochs"] == 1
    (tmp_path / "loop.toml").write_text('base = "loop.toml"\n')
    with pytest.raises(selbench.SelbenchError, match="its base chain comes back to it"):
        load_recipe(tmp_path / "loop.toml")


def test_a_range_error_from_set_names_the_override(tmp_path):
    match = r"demo.toml with --set search.epochs=-1: search.epochs must be >= 0"
    with pytest.raises(selbench.SelbenchError, match=match):
        load_recipe("demo", ["search.epochs=-1"])


def test_unknown_names_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(selbench.SelbenchError, match="unknown recipe 'dmeo'; built-in recipes: .*demo"):
        load_recipe("dmeo")
    with pytest.raises(selbench.SelbenchError, match="does not exist"):
        load_recipe(tmp_path / "absent.toml")


def test_config_hash_is_stable_and_tracks_what_changes_results():
    recipe = load_recipe("demo")
    assert recipe.config_hash() == load_recipe("demo").config_hash()
    shuffled = {key: dict(reversed(list(value.items()))) if isinstance(value, dict) else value
                for key, value in reversed(list(recipe.to_dict().items()))}
    assert Recipe.from_dict(shuffled) == recipe and Recipe.from_dict(shuffled).config_hash() == recipe.config_hash()
    assert load_recipe("demo", ["data.root=/elsewhere", "data.download=true"]).config_hash() == recipe.config_hash()
    assert load_recipe("demo", ["search.epochs=1"]).config_hash() != recipe.config_hash()
    changed_retrain = load_recipe("demo", ["retrain.epochs=1"])
    assert changed_retrain.config_hash("supernet", "data", "search") == recipe.config_hash("supernet", "data", "search")
    assert changed_retrain.config_hash() != recipe.config_hash()
    code = "import selbench; print(selbench.load_recipe('demo').config_hash())"
    other_process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other_process.stdout.strip() == recipe.config_hash()


def test_retrain_data_takes_the_retrain_batch_size_and_cutout():
    recipe = load_recipe("darts-cifar10")
    data = recipe.retrain_data()
    assert data["batch_size"] == 96 and data["cutout"] == 16 and data["dataset"] == "cifar10"


def test_recipes_command_lists_one_line_per_recipe(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = builtin_recipe_names()
    assert len(lines) == len(names) + 1  # a header, then one line per recipe
    for name, line in zip(names, lines[1:]):
        assert line.split()[0] == name


def test_the_executor_table_says_where_units_run_not_what_they_compute(tmp_path):
    plain = load_recipe(write(tmp_path, 'base = "demo"\n'))
    slurm = load_recipe(write(tmp_path, 'base = "demo"\n[executor]\npartition = "gpu"\ntime = 90\n', "slurm.toml"))
    assert slurm.executor == {"partition": "gpu", "time": 90} and plain.executor == {}
    assert slurm.config_hash() == plain.config_hash()
    with pytest.raises(selbench.SelbenchError, match=r"\[executor\] must hold key = value lines"):
        load_recipe(write(tmp_path, 'base = "demo"\n[executor.gpu]\npartition = "gpu"\n', "bad.toml"))
