"""The `selbench` command line, run as a user would: in a subprocess, reading stdout, stderr and the exit code."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

import selbench
from darts_reference import (
    DARTS_OPS,
    DARTS_PT_OPS,
    NORMAL_7,
    NORMAL_7_EXPECTED,
    REDUCE_7,
    REDUCE_7_EXPECTED,
    alpha_table,
)
from selbench import Genotype, SelectionRun
from selbench.cli import main


def run_cli(*args: str, cwd, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m selbench.cli ARGS`` outside the source tree, with no plugin disabled unless asked."""
    environment = {k: v for k, v in os.environ.items() if k != "SELBENCH_DISABLE_PLUGINS"}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "selbench.cli", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120)


def write_darts_pt_checkpoint(path, alphas: list[torch.Tensor], ops=DARTS_PT_OPS) -> str:
    """A search checkpoint as DARTS-PT writes it: θ under DARTS names, α = [normal, reduce], optimiser states."""
    supernet = selbench.get_space("darts").build_supernet(C=2, layers=3, num_classes=3, in_channels=1, ops=ops)
    state_dict = {k: v for k, v in supernet.state_dict().items() if not k.startswith("alphas.")}
    torch.save({"epoch": 50, "state_dict": state_dict, "alpha": alphas, "optimizer": {"state": {}},
                "arch_optimizer": {"state": {}}, "scheduler": {"last_epoch": 50}}, path)
    return str(path)


@pytest.fixture
def hand_made_checkpoint(tmp_path) -> str:
    alphas = [alpha_table(DARTS_PT_OPS, NORMAL_7), alpha_table(DARTS_PT_OPS, REDUCE_7)]
    (tmp_path / "search-EXP").mkdir()
    return write_darts_pt_checkpoint(tmp_path / "search-EXP" / "checkpoint.pth.tar", alphas)


def test_select_on_a_darts_pt_checkpoint_prints_the_predicted_cell_and_writes_json(tmp_path, hand_made_checkpoint):
    out = tmp_path / "selections" / "am.json"
    result = run_cli("select", hand_made_checkpoint, "--selector", "alpha-magnitude", "--seed", "3", "--out", str(out),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = Genotype({"normal": NORMAL_7_EXPECTED, "reduce": REDUCE_7_EXPECTED})
    assert Genotype.parse(result.stdout.strip().splitlines()[-1]) == expected
    record = json.loads(out.read_text())
    assert Genotype.from_json(record["genotype"]) == expected
    assert record["genotype_text"] == str(expected)
    assert (record["selector"], record["distribution"], record["seed"]) == ("alpha-magnitude", "selbench", 3)
    selection = SelectionRun.from_dict(record)
    assert selection.genotype == expected
    torch.testing.assert_close(selection.scores["normal"],
                               torch.softmax(alpha_table(DARTS_PT_OPS, NORMAL_7), dim=-1))


def test_plugins_lists_plugin_distribution_version_and_registrations(tmp_path):
    result = run_cli("plugins", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, *rows = [line.split() for line in result.stdout.strip().splitlines() if set(line.strip()) != {"-", " "}]
    assert header == ["plugin", "distribution", "version", "registers"]
    by_plugin = {row[0]: row[1:] for row in rows}
    assert by_plugin["alpha-magnitude"] == ["selbench", selbench.__version__, "selector", "alpha-magnitude"]
    assert by_plugin["darts"][:4] == ["selbench", selbench.__version__, "space", "darts"]


def test_disabled_plugin_is_not_listed(tmp_path):
    result = run_cli("plugins", cwd=tmp_path, env={"SELBENCH_DISABLE_PLUGINS": "alpha-magnitude"})
    assert result.returncode == 0, result.stderr
    assert "alpha-magnitude" not in result.stdout
    assert "darts" in result.stdout


def bad_checkpoint(kind: str, tmp_path) -> str:
    if kind == "truncated":
        good = write_darts_pt_checkpoint(tmp_path / "good.pt", [torch.zeros(14, 7), torch.zeros(14, 7)])
        data = open(good, "rb").read()
        (tmp_path / "truncated.pt").write_bytes(data[: len(data) * 2 // 3])
        return str(tmp_path / "truncated.pt")
    alphas = {"alpha 14x5": [torch.zeros(14, 5), torch.zeros(14, 5)],
              "alpha of 8 ops, state dict of 7": [torch.zeros(14, 8), torch.zeros(14, 8)]}[kind]
    return write_darts_pt_checkpoint(tmp_path / "mismatch.pt", alphas)


BAD_INPUTS = {
    "unknown selector": (["--selector", "best-guess"], "ok",
                         r"unknown selector 'best-guess'; registered selectors: .*alpha-magnitude"),
    "unknown option": (["--selector", "alpha-magnitude", "--option", "depth=3"], "ok",
                       r"unknown option 'depth' for selector 'alpha-magnitude'"),
    "checkpoint with α of 14x5": (["--selector", "alpha-magnitude"], "alpha 14x5",
                                  r"mismatch\.pt: α of shape 14×5 fits no DARTS space"),
    "checkpoint whose α and θ disagree": (["--selector", "alpha-magnitude"], "alpha of 8 ops, state dict of 7",
                                          r"mismatch\.pt does not match a darts supernet with C=2"),
    "truncated checkpoint": (["--selector", "alpha-magnitude"], "truncated",
                             r"truncated\.pt cannot be read \(truncated or not a torch checkpoint"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_on_stderr_with_exit_code_2(tmp_path, hand_made_checkpoint, case):
    args, checkpoint, message = BAD_INPUTS[case]
    path = hand_made_checkpoint if checkpoint == "ok" else bad_checkpoint(checkpoint, tmp_path)
    result = run_cli("select", path, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("selbench: error: ")
    assert re.search(message, lines[0]), lines[0]


IN_PROCESS_BAD_INPUTS = {
    "missing --selector": (["select", "x.pt"], r"the following arguments are required: --selector"),
    "option without =": (["select", "x.pt", "--selector", "alpha-magnitude", "-o", "depth"],
                         r"option 'depth' is not of the form key=value"),
    "missing file": (["select", "absent.pt", "--selector", "alpha-magnitude"], r"absent\.pt: no such file"),
    "unknown command": (["frobnicate"], r"invalid choice: 'frobnicate'"),
    "no command": ([], r"the following arguments are required: COMMAND"),
    "seed that is not a number": (["select", "x.pt", "--selector", "a", "--seed", "one"], r"invalid int value: 'one'"),
}


@pytest.mark.parametrize("case", sorted(IN_PROCESS_BAD_INPUTS))
def test_more_bad_input_in_process(case, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, message = IN_PROCESS_BAD_INPUTS[case]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("selbench: error: "), captured.err
    assert re.search(message, lines[0]), lines[0]
    assert captured.out == ""


def test_select_on_darts_weights_reads_alphas_from_the_captured_stdout(tmp_path, capsys):
    from test_checkpoint import write_darts_run

    supernet, weights, stdout = write_darts_run(tmp_path, old_pytorch=True)
    assert main(["select", str(weights), "--selector", "alpha-magnitude"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "bare DARTS state dict" in error and "--alphas FILE" in error

    assert main(["select", str(weights), "--alphas", str(stdout), "--selector", "alpha-magnitude",
                 "--ops", ",".join(DARTS_OPS)]) == 0
    printed = capsys.readouterr()
    assert Genotype.parse(printed.out.strip().splitlines()[-1]) == selbench.select(supernet, "alpha-magnitude").genotype
    assert "selbench: warning:" in printed.err and "one epoch older than the weights" in printed.err

    swapped = [DARTS_OPS[0], DARTS_OPS[2], DARTS_OPS[1], *DARTS_OPS[3:]]  # the pools cannot be told apart by shape
    assert main(["select", str(weights), "--alphas", str(stdout), "--selector", "alpha-magnitude",
                 "--ops", ",".join(swapped)]) == 0
