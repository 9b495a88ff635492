"""Where a grid's units run: this process (``local``), N worker processes (``processes:N``), or Slurm (``slurm``).

Every executor leaves the scheduling of units to the run store: workers that share a runs
directory claim units before computing them (:mod:`selbench.bench.claims`), so a unit is
computed once whoever runs it, and a driver that is killed and started again finds every
finished unit in the store.  The grid itself travels to the workers as a JSON file under
``RUNS/grids/`` (:func:`save_grid`).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import torch

from selbench.bench.grid import STAGES, Grid, GridResult, describe, run_stages
from selbench.bench.store import RunStore
from selbench.core.errors import OptionError, SelbenchError
from selbench.core.files import atomic_write_json, config_key, read_json

GRIDS = "grids"


def parse_executor(text: str) -> tuple[str, int]:
    """``local`` → ("local", 1); ``processes:N`` → ("processes", N); ``slurm`` → ("slurm", 0)."""
    name, _, count = text.partition(":")
    if name in ("local", "slurm") and not count:
        return name, 1 if name == "local" else 0
    if name == "processes":
        try:
            workers = int(count)
        except ValueError:
            workers = 0
        if workers >= 1:
            return name, workers
    raise OptionError(f"--executor {text}: expected local, processes:N (N >= 1 worker processes) or slurm")


def save_grid(grid: Grid, runs: Path) -> Path:
    """Write the grid where workers can read it: ``RUNS/grids/<key>.json`` (the same grid, the same file).

    Workers show no progress bars (several of them would overwrite one another's lines, and a
    Slurm job's log is a file); they log each unit instead, so ``progress`` is saved off.
    """
    data = {**grid.to_json(), "progress": False}
    path = runs / GRIDS / f"{config_key(data)[:16]}.json"
    atomic_write_json(data, path)
    return path


def load_grid(path: Path) -> Grid:
    return Grid.from_json(read_json(path, "run `selbench run` again to write it"))


def summarize(grid: Grid, store: RunStore) -> GridResult:
    """What the store holds for ``grid`` now: finished units per stage and the crashed ones, in words."""
    counts: dict[str, list[Any]] = {stage: [] for stage in STAGES}
    crashed = []
    for stage in STAGES:
        for slot in grid.slots(stage):
            unit = store.read(stage, grid.config(stage, slot))
            if unit is None:
                continue
            if unit.crashed:
                crashed.append(f"{stage} {describe(stage, unit.record.get('about') or grid.about(stage, slot))}")
            else:
                counts[stage].append(unit)
    return GridResult(supernets=len(counts["supernet"]), selections=len(counts["selection"]),
                      failed_selections=sum(unit.failed for unit in counts["selection"]),
                      retrains=len(counts["retrain"]), crashed=tuple(crashed))


def worker_environment(index: int, workers: int, device: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Worker ``index``'s environment: one GPU each on CUDA (round robin), else an equal share of the CPU threads."""
    env = dict(os.environ if base is None else base)
    if device.startswith("cuda"):
        visible = env.get("CUDA_VISIBLE_DEVICES")
        gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    elif "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    return env


def run_processes(grid: Grid, runs: Path, workers: int, *, stale_after: float) -> list[int]:
    """Run ``grid`` with ``workers`` worker processes on this machine; returns their exit codes.

    Each worker is ``selbench worker`` on the saved grid: it walks every stage and computes
    whatever unit no other worker has claimed.  Ctrl-C reaches the workers (same process
    group), which stop with their own one-line message; the driver waits for them.
    """
    grid_file = save_grid(grid, runs)
    command = [sys.executable, "-m", "selbench.cli", "worker", str(grid_file), "--runs", str(runs),
               "--stale-after", str(stale_after)]
    processes = [subprocess.Popen(command, env=worker_environment(i, workers, grid.device)) for i in range(workers)]
    try:
        return [process.wait() for process in processes]
    except KeyboardInterrupt:
        for process in processes:
            process.wait()
        raise


def run_worker(grid_file: Path, runs: Path, *, stale_after: float, stage: str | None = None,
               slot: int | None = None) -> GridResult | str:
    """One worker: every unit of the saved grid (``stage``/``slot`` unset), or the one unit at ``slot`` of ``stage``."""
    grid = load_grid(grid_file)
    store = RunStore(runs, stale_after=stale_after)
    if stage is None:
        return run_stages(grid, store)
    slots = grid.slots(stage)
    if slot is None or not 0 <= slot < len(slots):
        raise SelbenchError(f"{grid_file}: stage {stage} has slots 0..{len(slots) - 1}, not {slot}")
    task = grid.task(store, stage, slots[slot])
    if task is None:
        store.log(f"skipped {stage} slot {slot}: a unit it needs is not finished (or its selection failed)")
        return "skipped"
    return store.run_unit(task.kind, task.config, task.compute, label=task.label, about=task.about).status
