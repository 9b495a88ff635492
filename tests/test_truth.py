"""Truth tables: `selbench tabulate` end to end on a tiny space, the table format, --verify, and the table scorer."""
from __future__ import annotations

import json

import pytest

from selbench import Genotype, SelbenchError, count_parameters, load_recipe
from selbench.bench.store import RunStore
from selbench.cli import main
from selbench.recipes.recipe import Recipe
from selbench.retrain.scoring import score_genotype
from selbench.retrain.training import build_retrain_network
from selbench.truth import build
from selbench.truth.build import KIND, all_cells
from selbench.truth.catalog import TABLES_ENV, known_tables
from selbench.truth.table import TableError, TruthTable, read_table, truth_hash, write_table
from selbench.truth.verify import tolerance

# one intermediate node, two ops: two cells, each trained for one epoch on 64 digits
TINY = """
[supernet]
space = "nb201"
steps = 1
ops = ["skip_connect", "nor_conv_1x1"]
C = 2
N = 1
[data]
dataset = "digits"
subset = 64
batch_size = 32
crop_padding = 0
flip = false
[search]
epochs = 1
[retrain]
C = 2
N = 1
epochs = 1
batch_size = 32
auxiliary_weight = 0.0
drop_path_prob = 0.0
"""
SKIP, CONV = "|skip_connect~0|", "|nor_conv_1x1~0|"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny recipe tabulated with seeds 0 and 1 by the command line: (recipe path, runs, table path)."""
    root = tmp_path_factory.mktemp("truth")
    recipe = root / "tiny.toml"
    recipe.write_text(TINY)
    runs, out = root / "runs", root / "tiny.json"
    assert main(["tabulate", str(recipe), "--runs", str(runs), "--out", str(out), "--seeds", "0,1", "--quiet"]) == 0
    return recipe, runs, out


def test_tabulate_trains_every_cell_with_every_seed_in_its_own_unit(built):
    recipe_path, runs, out = built
    recipe = load_recipe(recipe_path)
    table = read_table(out)
    assert sorted(table.cells) == sorted(str(g) for g in all_cells(recipe)) == sorted([SKIP, CONV])
    assert table.seeds == (0, 1) and table.recipe == "tiny" and table.recipe_hash == truth_hash(recipe)
    units = {(u.config["cell"], u.config["seed"]): u.result for u in RunStore(runs, log=print).units(KIND)}
    assert set(units) == {(cell, seed) for cell in (SKIP, CONV) for seed in (0, 1)}
    for cell, entry in table.cells.items():
        assert entry.test_accuracy == tuple(units[cell, seed]["test_accuracy"] for seed in (0, 1))
        assert entry.valid_accuracy == tuple(units[cell, seed]["valid_accuracy"] for seed in (0, 1))
        network = build_retrain_network(Genotype.parse(cell), recipe, num_classes=10, in_channels=1)
        assert entry.params_m == count_parameters(network) / 1e6
    assert table.cells[CONV].params_m > table.cells[SKIP].params_m  # the 1x1 convolutions of the three cells


def test_a_second_tabulate_trains_nothing(built, monkeypatch, tmp_path):
    recipe, runs, out = built

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(build, "retrain", no_training)
    again = tmp_path / "again.json"
    assert main(["tabulate", str(recipe), "--runs", str(runs), "--out", str(again), "--seeds", "0,1", "--quiet"]) == 0
    assert read_table(again).cells == read_table(out).cells


def test_the_table_format_round_trips_and_refuses_edited_numbers(built, tmp_path):
    _, _, out = built
    table = read_table(out)
    copy = write_table(table, tmp_path / "copy.json")
    assert read_table(copy) == table
    data = json.loads(out.read_text())
    data["cells"][SKIP]["test_accuracy_mean"] += 0.01
    (tmp_path / "mean.json").write_text(json.dumps(data))
    with pytest.raises(TableError, match="not the mean of its seeds"):
        read_table(tmp_path / "mean.json")
    data = json.loads(out.read_text())
    data["recipe_hash"] = "0" * 64
    (tmp_path / "hash.json").write_text(json.dumps(data))
    with pytest.raises(TableError, match="recipe_hash"):
        read_table(tmp_path / "hash.json")


def test_verify_passes_on_the_table_and_fails_on_an_altered_row(built, tmp_path, capsys):
    recipe, _, out = built
    assert main(["tabulate", str(recipe), "--verify", "--table", str(out), "--sample", "2", "--quiet"]) == 0
    assert "agrees with re-training on 2 of 2 cells" in capsys.readouterr().out

    table = read_table(out)
    altered = dict(table.cells)
    true = altered[CONV]
    altered[CONV] = type(true)((1.0, 1.0), true.valid_accuracy, true.params_m, true.macs_m, true.seconds)
    tampered = TruthTable(table.recipe, table.recipe_hash, table.config, table.seeds, altered)
    assert abs(1.0 - true.test_mean) > tolerance(tampered), "the alteration must exceed the noise the table records"
    path = write_table(tampered, tmp_path / "tampered.json")
    assert main(["tabulate", str(recipe), "--verify", "--table", str(path), "--sample", "2", "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "FAIL |nor_conv_1x1~0|" in captured.out and "ok   |skip_connect~0|" in captured.out
    assert "disagrees with re-training on 1 of 2 cells" in captured.err and len(captured.err.splitlines()) == 1


def test_verify_refuses_a_recipe_the_table_was_not_made_from(built, capsys):
    recipe, _, out = built
    assert main(["tabulate", str(recipe), "--verify", "--table", str(out), "--set", "retrain.epochs=2"]) == 2
    assert "made from another configuration" in capsys.readouterr().err


def test_the_table_scorer_reads_the_mean_and_refuses_what_no_table_covers(built, monkeypatch, tmp_path, capsys):
    recipe_path, _, out = built
    recipe = load_recipe(recipe_path)
    monkeypatch.setenv(TABLES_ENV, str(out))
    score = score_genotype("table", Genotype.parse(CONV), recipe, seed=0, device="cpu", out_dir=tmp_path)
    assert score["test_accuracy"] == read_table(out).cells[CONV].test_mean and score["table_seeds"] == 2

    with pytest.raises(SelbenchError, match=r"no cell \|avg_pool_3x3~0\|"):
        score_genotype("table", Genotype.parse("|avg_pool_3x3~0|"), recipe, seed=0, device="cpu", out_dir=tmp_path)

    other = load_recipe(recipe_path, ["retrain.epochs=3"])
    with pytest.raises(SelbenchError, match="no table covers recipe 'tiny'.*nb201: .*truth-tables: no selbench table"):
        score_genotype("table", Genotype.parse(CONV), other, seed=0, device="cpu", out_dir=tmp_path)

    # the grid asks before any training: one line, exit code 2, nothing trained
    runs = tmp_path / "runs"
    assert main(["run", str(recipe_path), "--set", "retrain.epochs=3", "--scorer", "table", "--runs", str(runs),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no table covers recipe 'tiny'" in err and len(err.splitlines()) == 1
    assert not (runs / "supernet").exists()


# -- the shipped table -----------------------------------------------------------------------------
SHIPPED = "truth-nb201-digits"


def shipped() -> TruthTable:
    return next(table for table in known_tables() if table.recipe == SHIPPED)


def test_the_shipped_table_was_made_from_the_shipped_recipe():
    recipe = load_recipe(SHIPPED)
    table = shipped()
    assert table.recipe_hash == truth_hash(recipe)
    table.check_recipe(recipe)
    assert sorted(table.cells) == sorted(str(g) for g in all_cells(recipe))
    assert len(table.seeds) >= 3


def test_the_shipped_table_separates_its_top_and_bottom_quartiles_beyond_seed_noise():
    """Most (top-quartile cell, bottom-quartile cell) pairs differ by more than 2 standard errors of a difference."""
    noise = shipped().noise
    assert noise.pairs_separated is not None and noise.pairs_separated > 0.5, noise


def test_truth_hash_ignores_what_does_not_change_the_cells():
    recipe = load_recipe(SHIPPED)
    assert truth_hash(load_recipe(SHIPPED, ["search.epochs=3", "supernet.C=4"])) == truth_hash(recipe)
    assert truth_hash(load_recipe(SHIPPED, ["retrain.epochs=3"])) != truth_hash(recipe)
    renamed = Recipe.from_dict({**recipe.to_dict(), "name": "renamed"})
    assert truth_hash(renamed) == truth_hash(recipe)
