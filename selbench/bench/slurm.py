"""The ``slurm`` executor: one Slurm job per unit, one job array per stage, through submitit.

The driver (``selbench run --executor slurm``, e.g. on a login node) saves the grid, then
submits, stage after stage, an array of the units that are neither finished nor queued nor
running — supernets, then selections (``afterany`` the supernet arrays), then retrains — and
waits.  Each array task is ``run_worker`` on one slot of the saved grid; it claims its unit in
the shared run store like any worker, so a unit is computed once.  The job ids go to
``RUNS/slurm/<grid>.jobs.json``: a driver that is killed and started again resubmits only
the units that are missing, never one that is queued or running.  Jobs are submitit
*checkpointable*: a preempted or timed-out job is requeued and its unit resumes from its
last saved epoch.  A job that dies without a record (killed for memory, say) is recorded as
a crashed unit with the tail of its log.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from selbench.bench.executors import run_worker, save_grid
from selbench.bench.grid import STAGES, Grid
from selbench.bench.store import KEY_PREFIX, RunStore
from selbench.core.errors import OptionError, SelbenchError
from selbench.core.files import atomic_write_json, config_key, read_json_or_none

SLURM_DIR = "slurm"
# --executor-opt / [executor] keys -> submitit's SlurmExecutor parameters, with their types
EXECUTOR_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "partition": ("partition", str),
    "time": ("time", int),  # minutes
    "gpus": ("gpus_per_node", int),
    "cpus": ("cpus_per_task", int),
    "mem_gb": ("mem", lambda text: f"{int(text)}G"),
    "array_parallelism": ("array_parallelism", int),
}
LOG_TAIL = 3000  # characters of a dead job's stderr kept in its unit's record


def slurm_parameters(options: Mapping[str, Any]) -> dict[str, Any]:
    """submitit's parameters from the keys of :data:`EXECUTOR_OPTIONS` (one clear error for others)."""
    parameters: dict[str, Any] = {}
    for key, value in options.items():
        if key not in EXECUTOR_OPTIONS:
            raise OptionError(f"--executor-opt {key}: unknown; Slurm options are {', '.join(EXECUTOR_OPTIONS)}")
        name, parse = EXECUTOR_OPTIONS[key]
        try:
            parameters[name] = parse(str(value))
        except ValueError:
            raise OptionError(f"--executor-opt {key}={value}: expected a whole number") from None
    return parameters


def check_slurm() -> Any:
    """The submitit module, or one line saying what is missing."""
    try:
        import submitit
    except ImportError:
        raise SelbenchError("--executor slurm needs submitit: pip install 'selbench[slurm]'") from None
    if shutil.which("sbatch") is None:
        raise SelbenchError("--executor slurm: no sbatch on PATH; run on a Slurm login node (or use processes:N)")
    return submitit


class _SlotJob:
    """One array task: the unit at one slot of a saved grid (made checkpointable by :func:`_job_class`)."""

    def __call__(self, grid_file: str, runs: str, stale_after: float, stage: str, slot: int) -> str:
        return str(run_worker(Path(grid_file), Path(runs), stale_after=stale_after, stage=stage, slot=slot))


def _job_class(submitit: Any) -> type:
    # submitit requeues a Checkpointable's job on preemption or time-out, with the same arguments
    return type("SlotJob", (_SlotJob, submitit.helpers.Checkpointable), {"__module__": __name__})


class SlurmRun:
    """Submit, track and wait for the jobs of one grid on one runs directory."""

    def __init__(self, grid: Grid, store: RunStore, options: Mapping[str, Any], *, poll: float = 10.0):
        self.submitit = check_slurm()
        self.grid, self.store, self.poll = grid, store, poll
        self.parameters = slurm_parameters(options)
        self.grid_file = save_grid(grid, store.root)
        self.folder = store.root / SLURM_DIR
        self.jobs_file = self.folder / f"{self.grid_file.stem}.jobs.json"
        saved = read_json_or_none(self.jobs_file)
        self.jobs: dict[str, dict[str, str]] = saved if isinstance(saved, dict) else {}

    def submit(self) -> int:
        """Submit every unit that is not finished, queued or running; returns how many were submitted."""
        active = active_jobs([entry["job"] for entry in self.jobs.values()])
        after: set[str] = set()
        submitted = 0
        for stage in STAGES:
            slots = [i for i, slot in enumerate(self.grid.slots(stage)) if self._needs_job(stage, i, slot, active)]
            arrays = {self.jobs[key]["job"].split("_")[0] for key in self._keys(stage)
                      if self.jobs[key]["job"] in active}
            if slots:
                arrays.add(self._submit_array(stage, slots, after))
                submitted += len(slots)
            after = arrays
        return submitted

    def _needs_job(self, stage: str, index: int, slot: tuple, active: set[str]) -> bool:
        config = self.grid.config(stage, slot)
        unit = self.store.read(stage, config)
        if unit is not None and not unit.crashed:
            return False
        entry = self.jobs.get(f"{stage}:{index}")
        return not (entry and entry["job"] in active) and self.store.claim_of(stage, config) is None

    def _keys(self, stage: str) -> list[str]:
        return [key for key in self.jobs if key.startswith(f"{stage}:")]

    def _submit_array(self, stage: str, slots: list[int], after: set[str]) -> str:
        executor = self.submitit.SlurmExecutor(folder=self.folder / "%j")
        executor.update_parameters(job_name=f"selbench-{stage}", **self.parameters)
        if after:
            executor.update_parameters(dependency="afterany:" + ":".join(sorted(after)))
        count = len(slots)
        jobs = executor.map_array(_job_class(self.submitit)(), [str(self.grid_file)] * count,
                                  [str(self.store.root)] * count, [self.store.claims.stale_after] * count,
                                  [stage] * count, slots)
        for index, job in zip(slots, jobs):
            unit = config_key(self.grid.config(stage, self.grid.slots(stage)[index]))[:KEY_PREFIX]
            self.jobs[f"{stage}:{index}"] = {"job": str(job.job_id), "log": str(job.paths.stderr), "unit": unit}
        atomic_write_json(self.jobs, self.jobs_file)
        array = str(jobs[0].job_id).split("_")[0]
        self.store.log(f"submitted {count} {stage} unit(s) as Slurm job array {array}"
                       + (f" (after {', '.join(sorted(after))})" if after else ""))
        return array

    def wait(self) -> None:
        """Until no job of this grid is queued or running; then record jobs that died without a record."""
        while active_jobs([entry["job"] for entry in self.jobs.values()]):
            time.sleep(self.poll)
        for key, entry in self.jobs.items():
            stage, index = key.split(":")
            slot = self.grid.slots(stage)[int(index)]
            config = self.grid.config(stage, slot)
            if self.store.read(stage, config) is None and self.grid.task(self.store, stage, slot) is not None:
                tail = _tail(Path(entry["log"]))
                self.store.record_crash(stage, config, {
                    "type": "SlurmJobFailed", "message": f"Slurm job {entry['job']} ended without a record",
                    "traceback": tail, "log": entry["log"]}, self.grid.about(stage, slot))
                self.store.log(f"crashed {stage} slot {index}: Slurm job {entry['job']} ended without a record; "
                               f"log {entry['log']}")


def active_jobs(job_ids: list[str]) -> set[str]:
    """The given job (array task) ids that Slurm still has queued or running."""
    if not job_ids:
        return set()
    arrays = sorted({job.split("_")[0] for job in job_ids})
    try:
        listed = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(arrays)], capture_output=True,
                                text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SelbenchError(f"squeue failed ({exc}); is this a Slurm login node?") from None
    if listed.returncode != 0 and "Invalid job id" not in listed.stderr:
        raise SelbenchError(f"squeue failed: {' '.join(listed.stderr.split())[:200]}")
    return {line.strip() for line in listed.stdout.splitlines()} & set(job_ids)


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL:]
    except OSError:
        return f"(no log at {path})"
