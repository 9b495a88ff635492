"""Shared set-up of the pytest-benchmark suite (``tox -e bench``).

* ``bench_device``: ``SELBENCH_BENCH_DEVICE`` (default ``cpu``; ``cuda`` on a GPU machine).
* ``trained``: a small DARTS supernet trained by selbench's own :func:`selbench.train_supernet`
  on digits (the ``demo`` recipe, shortened), seeded, plus its data.  It is trained once and
  kept in pytest's cache directory, keyed by the selbench and torch versions, the device and
  the recipe's hash, so later runs load it in a second.
* ``timed``: wraps a function so that it ends with a CUDA synchronisation on a GPU (queued
  kernels count toward the round that launched them); :func:`synchronize` is that step alone,
  for the scripts' own timing loops (``from conftest import synchronize``).
* The machine-info hook adds torch, CUDA/GPU, CPU model and thread count to the saved JSON.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import selbench

DEVICE_VARIABLE = "SELBENCH_BENCH_DEVICE"
SEED = 0
# the demo recipe, cut to a few seconds of training: what is timed is selection, not training
BENCH_RECIPE_OVERRIDES = ("search.epochs=2", "data.subset=512")


@dataclass
class Trained:
    """A trained supernet, the data it was trained on and the recipe that made both."""

    supernet: torch.nn.Module
    data: selbench.SearchData
    recipe: selbench.Recipe


def cpu_model() -> str:
    """The CPU's marketing name where the OS tells it, else ``platform.processor()``."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    cuda = torch.cuda.is_available()
    machine_info["selbench"] = selbench.__version__
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    machine_info["cpu_model"] = cpu_model()
    machine_info["bench_device"] = os.environ.get(DEVICE_VARIABLE, "cpu")
    machine_info["cuda"] = torch.version.cuda if cuda else None
    machine_info["gpu"] = torch.cuda.get_device_name() if cuda else None


def synchronize(device: torch.device) -> None:
    """Wait for the kernels queued on ``device`` (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@pytest.fixture(scope="session")
def bench_device() -> torch.device:
    device = torch.device(os.environ.get(DEVICE_VARIABLE, "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.exit(f"{DEVICE_VARIABLE}={device} but torch sees no CUDA device", returncode=2)
    return device


@pytest.fixture(scope="session")
def timed(bench_device: torch.device) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``timed(fn)``: ``fn`` followed by a CUDA synchronisation when the benchmarks run on a GPU."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def synchronised(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            synchronize(bench_device)
            return result

        return synchronised

    return wrap


@pytest.fixture(scope="session")
def trained(request: pytest.FixtureRequest, bench_device: torch.device) -> Trained:
    recipe = selbench.load_recipe("demo", BENCH_RECIPE_OVERRIDES)
    key = "-".join([selbench.__version__, torch.__version__, bench_device.type,
                    recipe.config_hash("supernet", "data", "search")[:16]])
    out_dir = request.config.cache.mkdir("selbench-bench") / key
    checkpoint = selbench.train_supernet(recipe, seed=SEED, device=bench_device, out_dir=out_dir, progress=False)
    supernet = selbench.load_supernet(checkpoint).to(bench_device)
    data = selbench.load_data(recipe.data, seed=SEED, device=bench_device)
    return Trained(supernet=supernet, data=data, recipe=recipe)
