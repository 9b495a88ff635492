"""Bad input is one clear line and exit code 2, never a traceback; no run resumes another configuration's state."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_analyze import toy_record
from test_leaderboard import fill

import selbench
from conftest import tiny_nb201_supernet, tiny_supernet
from selbench import Genotype, SelbenchError
from selbench.bench.store import RunStore
from selbench.cli import main
from selbench.core.files import atomic_write_json
from selbench.core.options import Option
from selbench.plugin.host import PluginHost, UnknownPluginWarning
from selbench.recipes.recipe import load_recipe
from selbench.retrain.identity import retrain_key
from selbench.retrain.training import STATE_FILE, retrain

GENOTYPE_A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
GENOTYPE_B = "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
TINY_RETRAIN = ["retrain.C=2", "retrain.N=1", "retrain.epochs=2", "data.subset=64"]


def _interrupt_after_first_epoch(label: str, done: int, total: int) -> None:
    raise KeyboardInterrupt


# -- a: resume state carries and checks the configuration -------------------------------------------
def test_retrain_refuses_the_interrupted_state_of_another_configuration(tmp_path):
    recipe = load_recipe("nb201-demo", TINY_RETRAIN)
    with pytest.raises(KeyboardInterrupt):
        retrain(Genotype.parse(GENOTYPE_A), recipe, seed=0, device="cpu", out_dir=tmp_path,
                progress=_interrupt_after_first_epoch)
    assert (tmp_path / STATE_FILE).is_file()
    for genotype, seed in ((GENOTYPE_B, 0), (GENOTYPE_A, 1)):
        with pytest.raises(SelbenchError, match="holds the interrupted retrain of another configuration"):
            retrain(Genotype.parse(genotype), recipe, seed=seed, device="cpu", out_dir=tmp_path)
    other_recipe = load_recipe("nb201-demo", [*TINY_RETRAIN, "retrain.lr=0.05"])
    with pytest.raises(SelbenchError, match="another configuration"):
        retrain(Genotype.parse(GENOTYPE_A), other_recipe, seed=0, device="cpu", out_dir=tmp_path)
    result = retrain(Genotype.parse(GENOTYPE_A), recipe, seed=0, device="cpu", out_dir=tmp_path)  # same: resumes
    assert result["epochs"] == 2 and not (tmp_path / STATE_FILE).exists()


def test_default_retrain_directory_depends_on_genotype_recipe_and_seed():
    recipe = load_recipe("nb201-demo", TINY_RETRAIN)
    a, b = Genotype.parse(GENOTYPE_A), Genotype.parse(GENOTYPE_B)
    keys = {retrain_key(a, recipe, 0), retrain_key(b, recipe, 0), retrain_key(a, recipe, 1),
            retrain_key(a, load_recipe("nb201-demo", [*TINY_RETRAIN, "retrain.lr=0.05"]), 0)}
    assert len(keys) == 4 and retrain_key(a, recipe, 0) == retrain_key(Genotype.parse(GENOTYPE_A), recipe, 0)


def test_cli_retrain_of_another_genotype_into_the_same_out_is_one_line(tmp_path, capsys):
    recipe = load_recipe("nb201-demo", TINY_RETRAIN)
    with pytest.raises(KeyboardInterrupt):
        retrain(Genotype.parse(GENOTYPE_A), recipe, seed=0, device="cpu", out_dir=tmp_path,
                progress=_interrupt_after_first_epoch)
    argv = ["retrain", GENOTYPE_B, "--recipe", "nb201-demo", "--out", str(tmp_path)]
    for item in TINY_RETRAIN:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "choose another --out or delete it" in err[0]


# -- the table: argv -> the one line on stderr ---------------------------------------------------------
MICRO = """
[supernet]
space = "darts"
C = 2
layers = 3
steps = 2
[data]
dataset = "digits"
subset = 64
batch_size = 32
[search]
mode = "single-level"
epochs = 2
[retrain]
"""


@pytest.fixture
def inputs(tmp_path):
    """Tiny files the table refers to as {name}: checkpoints, genotype files, a recipe, a run store, a plain file."""
    selbench.save_supernet(tiny_supernet(), tmp_path / "darts.pt")
    selbench.save_supernet(tiny_nb201_supernet(), tmp_path / "nb201.pt")
    diverged = tiny_supernet()
    with torch.no_grad():
        next(iter(diverged.alphas.values())).fill_(math.nan)
    selbench.save_supernet(diverged, tmp_path / "nan.pt")
    (tmp_path / "bad.json").write_text('{"genotype": ')
    (tmp_path / "latin1.json").write_bytes(b'{"genotype": "\xe9"}')
    (tmp_path / "latin1.txt").write_bytes(b"Genotype(\xe9)")
    (tmp_path / "micro.toml").write_text(MICRO)
    (tmp_path / "afile").write_text("not a directory")
    (tmp_path / "text.pt").write_text("hello")
    (tmp_path / "empty.toml").write_text("")
    (tmp_path / "nosearch.toml").write_text(MICRO.split("[search]")[0] + "[retrain]\n")
    (tmp_path / "misspelled.toml").write_text(MICRO + "[selectors]\nperturbaton = { proj_intv = 1 }\n")
    fill(RunStore(tmp_path / "runs", log=lambda line: None))
    toy_record(tmp_path / "run")
    return {"tmp": str(tmp_path), "blocked": str(tmp_path / "afile" / "below")}


G = GENOTYPE_A
NB201 = ["--recipe", "nb201-demo", *[arg for item in TINY_RETRAIN for arg in ("--set", item)]]
AM = ["--selector", "alpha-magnitude"]
CASES = [
    # e: the device is checked first, by one helper, in every command that takes one
    (["select", "{tmp}/darts.pt", *AM, "--device", "nonsense"], "--device nonsense: not a torch device"),
    (["select", "{tmp}/darts.pt", *AM, "--device", "meta"], "--device meta: the meta device holds no data"),
    (["select", "{tmp}/darts.pt", *AM, "--device", "cuda:99"], "--device cuda:99:"),
    (["train", "{tmp}/micro.toml", "--device", "meta", "--out", "{tmp}/t"], "--device meta"),
    (["train", "{tmp}/micro.toml", "--device", "nonsense", "--out", "{tmp}/t"], "--device nonsense"),
    (["retrain", G, *NB201, "--device", "nonsense", "--out", "{tmp}/r"], "--device nonsense"),
    (["run", "{tmp}/micro.toml", "--device", "cuda:99", "--runs", "{tmp}/store"], "--device cuda:99:"),
    # g: genotype files that are not JSON or not UTF-8
    (["retrain", "{tmp}/bad.json", *NB201, "--out", "{tmp}/r"], "is not UTF-8 JSON"),
    (["retrain", "{tmp}/latin1.json", *NB201, "--out", "{tmp}/r"], "is not UTF-8 JSON"),
    (["retrain", "{tmp}/latin1.txt", *NB201, "--out", "{tmp}/r"], "is not UTF-8 text"),
    # f: a checkpoint of another space
    (["select", "{tmp}/nb201.pt", *AM, "--space", "darts"], "a checkpoint of another shape"),
    (["select", "{tmp}/darts.pt", *AM, "--space", "nb201"], "a checkpoint of another shape"),
    # d: outputs that cannot be written are refused before any work
    (["select", "{tmp}/darts.pt", *AM, "--out", "{blocked}/s.json"], "cannot write there"),
    (["select", "{tmp}/darts.pt", *AM, "--out", "{tmp}"], "is a directory; name a file"),
    (["train", "{tmp}/micro.toml", "--out", "{blocked}"], "cannot write there"),
    (["retrain", G, *NB201, "--out", "{blocked}"], "cannot write there"),
    (["report", "{tmp}/runs", "--out", "{blocked}/r.html"], "cannot write there"),
    (["analyze", "{tmp}/run", "--plot", "alphas", "--out", "{blocked}/a.png"], "cannot write there"),
    (["run", "{tmp}/micro.toml", "--runs", "{blocked}"], "--runs"),
    # b: a diverged supernet is refused by select() and stops training
    (["select", "{tmp}/nan.pt", *AM], "non-finite values"),
    (["train", "{tmp}/micro.toml", "--set", "search.lr=nan", "--quiet", "--out", "{tmp}/t"],
     "supernet training diverged: epoch 1 has valid loss nan"),
    # i: smaller ones
    (["select", "{tmp}", *AM], "is a directory, not a checkpoint file"),
    (["leaderboard", "{tmp}/runs", "--reference", "nosuch"], "the selectors present are"),
    (["report", "{tmp}/runs", "--reference", "nosuch", "--out", "{tmp}/r.html"], "the selectors present are"),
    (["select", "{tmp}/text.pt", *AM], "is not a torch checkpoint (it starts with b'hell')"),
    # recipes: no silent defaults for a missing section, range errors name the override
    (["train", "{tmp}/empty.toml", "--out", "{tmp}/t"], "empty.toml has no [supernet] section"),
    (["run", "{tmp}/nosearch.toml", "--runs", "{tmp}/store"], "nosearch.toml has no [search] section"),
    (["train", "{tmp}/micro.toml", "--set", "search.epochs=-1", "--out", "{tmp}/t"],
     "micro.toml with --set search.epochs=-1: search.epochs must be >= 0"),
    # c: selector names and options are checked before any unit runs
    (["run", "{tmp}/micro.toml", "-o", "perturbaton.proj_intv=1", "--runs", "{tmp}/store"],
     "-o: options for 'perturbaton', which is not a selector"),
    (["run", "{tmp}/misspelled.toml", "--runs", "{tmp}/store"],
     "recipe misspelled [selectors]: options for 'perturbaton'"),
    (["run", "{tmp}/micro.toml", "-o", "cost-sign.batches=abc", "--runs", "{tmp}/store"], "expected an integer"),
    # the run store's own options
    (["run", "{tmp}/micro.toml", "--selectors", "alpha-magnitude", "--redo", "cost-sign", "--runs", "{tmp}/store"],
     "--redo cost-sign: not among the selectors of this run"),
    (["run", "{tmp}/micro.toml", "--stale-after", "0", "--runs", "{tmp}/store"],
     "--stale-after 0: expected a positive"),
]


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=[" ".join(argv[:1] + argv[-2:]) for argv, _ in CASES])
def test_bad_input_is_one_line_and_exit_code_2(inputs, capsys, argv, expected):
    existing = Path(inputs["tmp"]) / "runs"
    before = snapshot(existing)
    code = main([arg.format(**inputs) for arg in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in captured.err, captured.err
    assert snapshot(existing) == before  # an existing run directory is left as it was
    assert not [p for p in (Path(inputs["tmp"]) / "store").rglob("*") if p.is_file()]  # nothing computed


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_nothing_is_written_when_training_diverges(inputs, capsys):
    assert main(["train", inputs["tmp"] + "/micro.toml", "--set", "search.lr=nan", "--quiet",
                 "--out", inputs["tmp"] + "/t"]) == 2
    assert not any(path.suffix == ".json" for path in (Path(inputs["tmp"]) / "t").iterdir())


def test_records_are_strict_json(tmp_path):
    with pytest.raises(SelbenchError, match="non-finite number"):
        atomic_write_json({"loss": math.nan}, tmp_path / "record.json")
    assert not (tmp_path / "record.json").exists()


def test_a_bad_integer_option_names_the_option_and_the_type():
    with pytest.raises(SelbenchError, match=r"option 'proj_intv' of selector 'perturbation': bad value 'abc' "
                                            r"\(expected an integer\)"):
        Option(1).parse("abc", "option 'proj_intv' of selector 'perturbation'")
    with pytest.raises(SelbenchError, match=r"expected a number"):
        Option(0.5).parse("x", "option 'eps'")


def test_unknown_names_in_disable_plugins_are_a_warning(monkeypatch):
    monkeypatch.setenv("SELBENCH_DISABLE_PLUGINS", "alpha-magnitude,nosuch-plugin")
    with pytest.warns(UnknownPluginWarning, match="'nosuch-plugin'"):
        PluginHost()


def test_train_over_a_damaged_finished_checkpoint_is_refused(inputs, capsys):
    out = Path(inputs["tmp"]) / "t"
    argv = ["train", inputs["tmp"] + "/micro.toml", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    checkpoint = out / "supernet.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-100])
    capsys.readouterr()
    assert main(argv) == 2
    assert "supernet.pt does not match its record supernet.json (truncated or modified)" in capsys.readouterr().err
