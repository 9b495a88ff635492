"""Nothing lost, nothing stale, nothing computed twice: crashes, redo, claims, concurrent runs, kills."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import types
from dataclasses import asdict
from pathlib import Path

import pytest
from test_pipeline import MICRO as PIPELINE_MICRO

from selbench import PluginHost, Selection, Selector, hookimpl, use_plugin_host
from selbench.bench.claims import CLAIM, Claims, Owner, read_claim
from selbench.bench.grid import run_grid
from selbench.bench.leaderboard import leaderboard
from selbench.bench.store import ATTEMPTS, RECORD, Busy, RunStore, Unit
from selbench.cli import main
from selbench.core.errors import OptionError
from selbench.core.files import atomic_write_json, config_key
from selbench.recipes.recipe import load_recipe

MICRO = PIPELINE_MICRO.replace("epochs = 1", "epochs = 2")  # two epochs: kills can land between them
QUIET = {"progress": False}


@pytest.fixture
def micro(tmp_path):
    path = tmp_path / "micro.toml"
    path.write_text(MICRO)
    return path


def records(runs: Path) -> dict[str, list[dict]]:
    """Every unit record under ``runs`` by kind (crashed ones included)."""
    return {kind: [json.loads(p.read_text()) for p in sorted((runs / kind).glob(f"*/{RECORD}"))]
            for kind in ("supernet", "selection", "retrain")}


def flaky_plugin(state: dict) -> types.SimpleNamespace:
    """A selector that raises while ``state["crash"]`` is set, else answers "no cell" (a cached failure)."""

    def run(ctx):
        if state["crash"]:
            raise RuntimeError("simulated out-of-memory")
        return Selection(genotype=None, failure="no edge kept")

    @hookimpl
    def selbench_register_selectors(register):
        register(Selector(name="flaky", run=run))

    return types.SimpleNamespace(selbench_register_selectors=selbench_register_selectors)


@pytest.fixture
def with_flaky():
    """The installed plugins plus the flaky selector, for one test; returns its switch."""
    state = {"crash": True}
    use_plugin_host(PluginHost([("flaky", flaky_plugin(state))]))
    yield state
    use_plugin_host(None)


def test_a_crash_is_recorded_shown_and_retried_and_a_failure_is_cached(micro, tmp_path, with_flaky):
    state = with_flaky
    lines: list[str] = []
    store = RunStore(tmp_path / "runs", log=lines.append)
    recipe = load_recipe(str(micro))
    grid = {"seeds": [0], "retrain_seeds": [0], "store": store, **QUIET}

    first = run_grid([recipe], ["flaky", "alpha-magnitude"], **grid)
    assert first.crashed == ("selection flaky · micro · supernet seed 0",)
    crashed = [r for r in records(tmp_path / "runs")["selection"] if r["status"] == "crashed"]
    assert len(crashed) == 1 and crashed[0]["crash"]["type"] == "RuntimeError"
    assert "simulated out-of-memory" in crashed[0]["crash"]["traceback"]
    assert crashed[0]["about"] == {"recipe": "micro", "selector": "flaky", "supernet_seed": 0}
    table = leaderboard(tmp_path / "runs")
    assert "0/0, 1 crashed" in next(line for line in table.splitlines() if "flaky" in line)
    assert first.retrains == 1  # the crash stopped nothing else

    state["crash"] = False
    lines.clear()
    second = run_grid([recipe], ["flaky", "alpha-magnitude"], **grid)
    assert second.crashed == () and second.failed_selections == 1
    assert [line for line in lines if line.startswith(("retrying", "computing"))] == [
        f"retrying crashed selection {first.crashed[0].split(' ', 1)[1]} ({crashed[0]['key'][:16]}) "
        "(it raised RuntimeError)",
        f"computing selection {first.crashed[0].split(' ', 1)[1]} ({crashed[0]['key'][:16]})"]
    flaky = next(r for r in records(tmp_path / "runs")["selection"] if r["about"]["selector"] == "flaky")
    assert flaky["status"] == "failed" and [a["outcome"] for a in flaky["attempts"]] == ["crashed", "failed"]
    assert "1/1" in next(line for line in leaderboard(tmp_path / "runs").splitlines() if "flaky" in line)

    state["crash"] = True  # a finished "no cell" answer is a result: it is reused, the selector is not run
    lines.clear()
    assert run_grid([recipe], ["flaky", "alpha-magnitude"], **grid).crashed == ()
    assert all(line.startswith("reused") for line in lines)


def test_cli_run_with_a_crash_exits_1_and_names_the_unit(micro, tmp_path, with_flaky, capsys):
    code = main(["run", str(micro), "--selectors", "flaky", "--runs", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("selbench: 1 unit(s) crashed (selection flaky · micro · supernet seed 0)")
    assert "Traceback" not in "\n".join(err)


def test_redo_recomputes_one_selectors_selections_and_retrains(micro, tmp_path):
    lines: list[str] = []
    store = RunStore(tmp_path / "runs", log=lines.append)
    recipe = load_recipe(str(micro))
    grid = {"seeds": [0], "retrain_seeds": [0], "store": store, **QUIET}
    run_grid([recipe], ["alpha-magnitude", "cost-sign"], **grid)
    before = records(tmp_path / "runs")
    lines.clear()
    run_grid([recipe], ["alpha-magnitude", "cost-sign"], redo=["cost-sign"], **grid)
    computed = [line.split(" (")[0] for line in lines if line.startswith("computing")]
    redone = [r for r in before["selection"] if r["about"]["selector"] == "cost-sign"]
    assert computed[0] == "computing selection cost-sign · micro · supernet seed 0"
    if redone[0]["status"] == "complete":  # its cell is retrained again too
        assert computed[1:] == ["computing retrain cost-sign · micro · supernet seed 0 · retrain seed 0"]
    assert not any("alpha-magnitude" in line or "supernet micro" in line for line in computed)
    assert len(list((tmp_path / "runs" / "selection").glob("*.replaced"))) == 1
    with pytest.raises(OptionError, match="--redo perturbation: not among the selectors of this run"):
        run_grid([recipe], ["alpha-magnitude"], redo=["perturbation"], **grid)


def claimed(directory: Path, owner: Owner) -> None:
    directory.mkdir(parents=True)
    atomic_write_json(asdict(owner), directory / CLAIM)


def test_a_live_claim_makes_the_unit_busy_and_a_stale_one_is_taken_over(tmp_path):
    lines: list[str] = []
    store = RunStore(tmp_path / "runs", log=lines.append, stale_after=30)
    config = {"seed": 0}
    directory = store.directory("supernet", config_key(config))
    elsewhere = Owner("another-host", 4242, "2026-01-01T00:00:00+00:00", time.time())
    claimed(directory, elsewhere)
    calls = []

    def compute(work):
        calls.append(read_claim(work.directory / CLAIM))
        return {"ok": True}

    busy = store.try_unit("supernet", config, compute, label="supernet x")
    assert isinstance(busy, Busy) and busy.owner == elsewhere and not calls

    atomic_write_json({**asdict(elsewhere), "heartbeat": time.time() - 31}, directory / CLAIM)
    unit = store.try_unit("supernet", config, compute, label="supernet x")
    assert isinstance(unit, Unit) and unit.status == "complete"
    assert calls[0].host == socket.gethostname() and calls[0].pid == os.getpid()
    assert any("taking over from another-host pid 4242" in line and "no heartbeat for 3" in line for line in lines)
    assert not (directory / CLAIM).exists()  # released after the record was written


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    lines: list[str] = []
    store = RunStore(tmp_path / "runs", log=lines.append)  # heartbeat limit 10 minutes
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    config = {"seed": 1}
    claimed(store.directory("supernet", config_key(config)), Owner(socket.gethostname(), gone.pid, "then", time.time()))
    assert isinstance(store.try_unit("supernet", config, lambda work: {}), Unit)
    assert any(f"its process {gone.pid} on this host is gone" in line for line in lines)


def test_the_heartbeat_keeps_a_long_claim_fresh(tmp_path):
    claims = Claims(stale_after=1.0, heartbeat_every=0.05)
    directory = tmp_path / "unit"
    me = claims.acquire(directory, tmp_path / "unit.lock", finished=lambda: False, warn=print)
    assert me is not None
    time.sleep(0.4)
    beat = read_claim(directory / CLAIM)
    assert beat is not None and beat.same_worker(me) and beat.heartbeat > me.heartbeat + 0.2
    claims.release(directory)
    assert not (directory / CLAIM).exists()


def test_files_get_the_mode_the_umask_gives(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_json({"a": 1}, tmp_path / "shared.json")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o640


def selbench_command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "selbench.cli", *argv]


def grid_argv(micro: Path, runs: Path) -> list[str]:
    return ["run", str(micro), "--selectors", "alpha-magnitude,cost-sign", "--runs", str(runs), "--quiet",
            "--format", "json"]


def leaderboard_rows(runs: Path) -> list[dict]:
    """The leaderboard without wall times (which differ from run to run)."""
    rows = json.loads(leaderboard(runs, "json", log=lambda line: None))
    return [{k: v for k, v in row.items() if k not in ("selection_seconds_mean", "retrain_hours")} for row in rows]


def attempts(runs: Path) -> dict[str, int]:
    """Computations started per unit (killed ones included), from the attempt logs."""
    return {f"{path.parent.parent.name}/{path.parent.name}": len(json.loads(path.read_text()))
            for path in runs.glob(f"*/*/{ATTEMPTS}")}


def test_two_concurrent_runs_compute_every_unit_once(micro, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "runs"
    workers = [subprocess.Popen(selbench_command(*grid_argv(micro, runs)), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    computed = attempts(runs)
    assert len(computed) == 1 + 2 + 2 and set(computed.values()) == {1}, computed
    assert all(r["status"] in ("complete", "failed") for kind in records(runs).values() for r in kind)
    assert len(leaderboard_rows(runs)) == 2


KILLER = textwrap.dedent('''
    """Run `selbench` and SIGKILL it at one moment: the COUNT-th optimiser step, or half-way into a file write."""
    import os
    import signal
    import sys
    from pathlib import Path

    import torch

    import selbench.core.files as files
    from selbench.cli import main

    moment, count, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    seen = [0]


    def due():
        seen[0] += 1
        return seen[0] == count


    def die():
        os.kill(os.getpid(), signal.SIGKILL)


    if moment == "step":
        step = torch.optim.SGD.step

        def killing_step(self, *args, **kwargs):
            if due():
                die()
            return step(self, *args, **kwargs)

        torch.optim.SGD.step = killing_step
    else:
        name, write_file = moment.split(":", 1)[1], files.atomic_write

        def killing_write(path, write):
            if Path(path).name != name or not due():
                return write_file(path, write)

            def half(handle):
                write(handle)
                handle.truncate(handle.tell() // 2)
                handle.flush()
                die()

            return write_file(path, half)

        files.atomic_write = killing_write
    sys.exit(main(argv))
''')

# (moment, count): where each restarted run is killed, in the order the grid reaches them
KILLS = [
    ("step", 3),  # supernet training, second epoch (after the first epoch's resume state)
    ("write:supernet.pt", 1),  # half-way through writing the supernet checkpoint
    ("write:record.json", 1),  # half-way through writing the supernet unit's record
    ("write:record.json", 2),  # after the first selection is recorded, half-way through the second's record
    ("write:retrain_state.pt", 2),  # retraining the first cell, after its first epoch
]


def test_killed_anywhere_the_restarted_run_ends_as_an_uninterrupted_one(micro, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(selbench_command(*grid_argv(micro, clean)), env=env, check=True, capture_output=True)
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    for moment, count in KILLS:
        done = subprocess.run([sys.executable, str(killer), moment, str(count), *grid_argv(micro, killed)], env=env,
                              capture_output=True, text=True)
        assert done.returncode == -signal.SIGKILL, (moment, done.stderr[-2000:])
    finished = subprocess.run(selbench_command(*grid_argv(micro, killed)), env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert leaderboard_rows(killed) == leaderboard_rows(clean)
    # each kill interrupted exactly one unit, which alone was computed again
    started = attempts(killed)
    assert sum(started.values()) - len(started) == len(KILLS), started
    assert started.keys() == attempts(clean).keys()
    assert not list(killed.rglob("*.tmp"))  # the half-written files of the kills were cleared on restart


def test_sigint_ends_the_run_with_one_line_and_exit_130(micro, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "runs"
    # as in a terminal: a test run started in the background inherits an ignored SIGINT, and Python keeps it so
    worker = subprocess.Popen(selbench_command(*grid_argv(micro, runs)), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(runs.glob(f"supernet/*/{ATTEMPTS}")) and time.time() < deadline:
        time.sleep(0.05)
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("selbench: interrupted;") and "Traceback" not in err
    log = json.loads(next(runs.glob(f"supernet/*/{ATTEMPTS}")).read_text())
    assert log[-1]["outcome"] == "interrupted"
    assert not list(runs.glob(f"*/*/{RECORD}")) and not list(runs.glob(f"*/*/{CLAIM}"))
