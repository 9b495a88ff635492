"""Executors: processes:N and a real one-node Slurm give the local leaderboard, each unit computed once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_resilience import MICRO, attempts, leaderboard_rows, records

from selbench.bench.executors import parse_executor, worker_environment
from selbench.bench.slurm import SLURM_DIR, check_slurm, slurm_parameters
from selbench.cli import main
from selbench.cli.status import status_text
from selbench.core.errors import OptionError, SelbenchError
from selbench.train.record import RECORD_FILE, STATE_FILE

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "micro.toml"
    path.write_text(MICRO)
    return path


@pytest.fixture(scope="module")
def local_runs(micro, tmp_path_factory):
    """The grid run in this process: the leaderboard every executor must reproduce."""
    runs = tmp_path_factory.mktemp("local") / "runs"
    run = subprocess.run(command(micro, runs), env=environment(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return runs


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    return {**(base or os.environ), "OMP_NUM_THREADS": "1"}


def command(micro: Path, runs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "selbench.cli", "run", str(micro), "--selectors", "alpha-magnitude,cost-sign",
            "--runs", str(runs), "--quiet", "--format", "json", *extra]


def test_processes_gives_the_local_leaderboard_with_one_computation_per_unit(micro, local_runs, tmp_path):
    runs = tmp_path / "runs"
    driver = subprocess.Popen(command(micro, runs, "--executor", "processes:2"), env=environment(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_pid = driver.pid
    _, stderr = driver.communicate()
    assert driver.returncode == 0, stderr[-2000:]
    assert leaderboard_rows(runs) == leaderboard_rows(local_runs)
    assert set(attempts(runs).values()) == {1} and attempts(runs).keys() == attempts(local_runs).keys()
    # Which worker takes which unit depends on timing (a late-starting worker may find nothing
    # left); what is fixed is that the workers, not the driver, computed every unit.
    pids = {a["pid"] for kind in records(runs).values() for r in kind for a in r["attempts"]}
    assert pids and run_pid not in pids


def test_slurm_gives_the_local_leaderboard_and_a_restarted_driver_submits_only_what_is_missing(
        micro, local_runs, tmp_path, slurm_cluster):
    runs = tmp_path / "runs"
    env = environment(slurm_cluster)
    driver = subprocess.Popen(command(micro, runs, "--executor", "slurm"), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not _submitted(runs, "retrain"):
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)  # the driver dies with every stage queued or running
    driver.wait()
    assert _submitted(runs, "retrain"), "the driver never submitted the retrain array"

    again = subprocess.run(command(micro, runs, "--executor", "slurm"), env=env, capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "submitted" not in again.stderr  # everything was queued, running or finished already
    assert leaderboard_rows(runs) == leaderboard_rows(local_runs)
    assert set(attempts(runs).values()) == {1} and attempts(runs).keys() == attempts(local_runs).keys()
    status = status_text(runs)
    assert "supernet: 1 done, 0 failed, 0 crashed, 0 running" in status and "Slurm job arrays:" in status


def test_a_preempted_slurm_job_is_requeued_and_resumes_from_its_last_epoch(micro, tmp_path, slurm_cluster):
    runs = tmp_path / "runs"
    env = environment(slurm_cluster)
    driver = subprocess.Popen(command(micro, runs, "--executor", "slurm", "--set", "search.epochs=12"), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    saved = _wait_for_saved_epochs(runs, deadline=time.time() + 180)
    assert saved, "the supernet job saved no epoch within 3 minutes"
    job = _jobs(runs)["supernet:0"]["job"]
    # what Slurm does before preempting a job or at its time limit: USR2 (submitit's --signal=USR2@90)
    subprocess.run(["scancel", "--signal=USR2", job], env=env, check=True, capture_output=True)
    _start_when_requeued(job, env, deadline=time.time() + 120)
    _, stderr = driver.communicate(timeout=900)
    assert driver.returncode == 0, stderr[-3000:]

    supernet = records(runs)["supernet"][0]
    outcomes = [attempt["outcome"] for attempt in supernet["attempts"]]
    assert len(outcomes) == 2 and outcomes[0] in ("interrupted", "killed") and outcomes[1] == "complete", outcomes
    history = json.loads(next((runs / "supernet").glob(f"*/{RECORD_FILE}")).read_text())["epochs"]
    assert len(history) == 12
    # the epochs saved before the signal are the record's, measured seconds and all: resumed, not trained again
    assert history[:len(saved)] == saved
    assert all(row["runs"] for row in leaderboard_rows(runs))


def _wait_for_saved_epochs(runs: Path, deadline: float) -> list[dict]:
    """The epochs of the supernet's resumable state once it holds at least one (empty at the deadline)."""
    while time.time() < deadline:
        for state in (runs / "supernet").glob(f"*/{STATE_FILE}"):
            try:
                history = torch.load(state, weights_only=False)["history"]
            except (OSError, RuntimeError, EOFError, KeyError):
                continue  # being replaced this instant
            if history:
                return history
        time.sleep(0.1)
    return []


def _start_when_requeued(job: str, env: dict[str, str], deadline: float) -> None:
    """Slurm holds a requeued job for about two minutes (its begin time); an administrator's nudge saves them.

    The nudge waits for the node to be idle again: released while the killed run's step is still being
    cleaned up, the job is allocated at once and killed again ("Job credential revoked").
    """
    while time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], env=env, capture_output=True, text=True)
        node = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        if state.stdout.strip() == "PENDING" and node.stdout.strip() == "idle":
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, capture_output=True)
            return
        time.sleep(0.2)


def _jobs(runs: Path) -> dict[str, dict[str, str]]:
    return json.loads(next((runs / SLURM_DIR).glob("*.jobs.json")).read_text())


def _submitted(runs: Path, stage: str) -> bool:
    for path in (runs / SLURM_DIR).glob("*.jobs.json"):
        try:
            if any(key.startswith(f"{stage}:") for key in json.loads(path.read_text())):
                return True
        except ValueError:
            pass
    return False


def test_status_names_running_units_and_crashes(micro, local_runs, tmp_path):
    text = status_text(local_runs)
    assert text.splitlines()[0] == "supernet: 1 done, 0 failed, 0 crashed, 0 running"
    assert text.count("crashed  ") == 0
    with pytest.raises(SelbenchError, match="does not exist"):
        status_text(tmp_path / "nowhere")


def test_executor_names_and_options_are_checked(monkeypatch):
    assert parse_executor("local") == ("local", 1) and parse_executor("processes:3") == ("processes", 3)
    for bad in ("processes", "processes:0", "slurm:2", "dask"):
        with pytest.raises(OptionError, match=f"--executor {bad}: expected local, processes:N"):
            parse_executor(bad)
    assert slurm_parameters({"partition": "gpu", "time": "90", "mem_gb": "32"}) == {
        "partition": "gpu", "time": 90, "mem": "32G"}
    with pytest.raises(OptionError, match="--executor-opt walltime: unknown"):
        slurm_parameters({"walltime": "1"})
    with pytest.raises(OptionError, match="--executor-opt gpus=two: expected a whole number"):
        slurm_parameters({"gpus": "two"})


def test_missing_submitit_or_sbatch_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(SelbenchError, match=r"pip install 'selbench\[slurm\]'"):
        check_slurm()
    monkeypatch.delitem(sys.modules, "submitit")
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SelbenchError, match="no sbatch on PATH"):
        check_slurm()


def test_cli_refuses_a_bad_executor_before_any_work(micro, tmp_path, capsys):
    assert main(["run", str(micro), "--executor", "threads:2", "--runs", str(tmp_path / "runs")]) == 2
    assert "--executor threads:2" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "supernet").exists()


def test_each_worker_gets_its_own_gpu_or_a_share_of_the_threads():
    base = {"CUDA_VISIBLE_DEVICES": "4,5"}
    assert [worker_environment(i, 3, "cuda", base)["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["4", "5", "4"]
    threads = worker_environment(0, 2, "cpu", {})["OMP_NUM_THREADS"]
    assert threads == str(max(1, (os.cpu_count() or 1) // 2))
    assert worker_environment(1, 2, "cpu", {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"
