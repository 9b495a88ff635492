"""The tests' one-node Slurm cluster runs jobs: a shell job through sbatch, a Python function through submitit."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest


def _wait_for_job(job_id: str, env: dict[str, str], timeout: float = 60) -> None:
    """Wait until ``squeue`` no longer lists the job (it ran, failed or was cancelled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], env=env, capture_output=True, text=True)
        if queued.returncode == 0 and not queued.stdout.strip():
            return
        time.sleep(0.2)
    pytest.fail(f"Slurm job {job_id} still queued or running after {timeout:.0f} s")


def test_sbatch_runs_a_job(slurm_cluster, tmp_path):
    out = tmp_path / "hi.txt"
    submitted = subprocess.run(["sbatch", "--parsable", "--chdir", str(tmp_path), "--output", str(tmp_path / "job.log"),
                                "--wrap", f"echo hi > {out}"],
                               env=slurm_cluster, capture_output=True, text=True, check=True)
    _wait_for_job(submitted.stdout.strip().split(";")[0], slurm_cluster)
    assert out.read_text() == "hi\n"


def _double(x: int) -> tuple[int, str]:
    return 2 * x, sys.executable


def test_submitit_runs_a_python_function(slurm_cluster, tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    # submitit calls sbatch from this process: it needs the cluster's conf and PATH here
    for name in ("SLURM_CONF", "PATH"):
        monkeypatch.setenv(name, slurm_cluster[name])
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit")
    assert executor.cluster == "slurm"
    executor.update_parameters(slurm_partition="debug", timeout_min=5, cpus_per_task=1)
    # the job unpickles _double; by reference it would import this test module, which is not on the job's path
    cloudpickle = pytest.importorskip("cloudpickle")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        job = executor.submit(_double, 21)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    deadline = time.monotonic() + 120
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel()
            pytest.fail(f"submitit job {job.job_id} not done after 120 s")
        time.sleep(0.5)
    # the job runs this interpreter (submitit writes sys.executable into the batch script)
    assert job.result() == (42, sys.executable)
