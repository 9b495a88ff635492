"""Where the hours go, in one table: every timing is measured in this run, next to the row it is compared with.

    python benchmarks/report.py [--device cuda] [--quick]

Rows (each group's first row is its base: ``÷ base`` is the row's time over the base's):

* **supernet step** — forward, cross-entropy and backward of the DARTS supernet
  (``bench_supernet.supernet_step``), ``fast`` and ``reference`` implementations, each in
  channels-last and PyTorch's default (contiguous) layout, fp32 and bf16 autocast, and on CUDA
  the fast ones also replayed from a CUDA graph (:mod:`selbench.train.graphs`); all timed alternately
  (``bench_supernet.alternate``).  The layout rows are what ``selbench train``'s choice of
  memory format per device (``preferred_memory_format``) should follow.
* **paper search epoch** — DARTS's CIFAR-10 search epoch (bilevel-1st, C=16, 8 cells, batch
  64) extrapolated: steps per epoch (25,000 θ images / 64 = 391) × the measured time of one
  step (α step + θ step through ``search_epoch``, ``bench_search_throughput.SearchRun``).  With
  CUDA graphs: the time of the epoch's first steps (warm-up and capture) + the remaining steps
  × the measured replay time.
* **DARTS-PT selection** — one ``perturbation`` selection at the demo size of
  ``bench_perturbation.py`` per value of the selector's ``implementation`` option (read at run
  time), genotypes checked equal.
* **Hessian diagonal** — influential magnitude's exact diagonal, vectorised against the
  double-backward loop (``bench_hessian_diagonal.py``), results checked equal.
* **retrain step** — one SGD step of the DARTS_V2 network (``bench_supernet.discrete_step``), fp32 and
  bf16 (and CUDA graphs on CUDA).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over one more call of the row's work
(over all its selections for DARTS-PT); on the CPU the process's maximum resident set size so
far (``getrusage``), which only grows — a coarse upper bound, labelled ``maxRSS``.

``--quick`` times the supernet and retrain steps at the demo size and shortens the rest (for a
CPU: one thread unless ``--threads``, since a shared machine's other load makes more threads
wait on each other); without it they are at paper size (meant for a GPU).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable

import bench_hessian_diagonal
import bench_perturbation
import bench_search_throughput
import bench_supernet
import torch
from tabulate import tabulate
from torch import Tensor

import selbench
from conftest import cpu_model, synchronize
from selbench import batchnorm_mode
from selbench.core.errors import SelbenchError
from selbench.core.precision import autocast, check_precision
from selbench.plugins.influential_magnitude import exact_hessian_diagonal
from selbench.train.driver import preferred_memory_format
from selbench.train.graphs import WARMUP_STEPS, GraphedStep

ROUNDS = 5  # timed calls of each step, after one warm-up; the median counts
LAYOUTS = {"channels-last": torch.channels_last, "contiguous": torch.contiguous_format}
CIFAR10_TRAIN_IMAGES = 50_000
Row = list
NA_CPU = "n/a (CPU)"


def memory(fn: Callable[[], object], device: torch.device) -> str:
    """CUDA: the peak memory allocated during one more call of ``fn``.  CPU: the process's maxRSS so far (no call)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
    return f"maxRSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB"


def precisions(device: torch.device) -> list[str]:
    """fp32, and bf16 where the device computes in it."""
    try:
        check_precision("bf16", device)
    except SelbenchError:
        return ["fp32"]
    return ["fp32", "bf16"]


def in_precision(fn: Callable[[], object], precision: str, device: torch.device) -> Callable[[], None]:
    """``fn`` with its forward passes in ``precision`` (autocast entered inside, as a CUDA graph capture needs)."""
    def run() -> None:
        with autocast(precision, device):
            fn()
    return run


def graphed(step: Callable[[], None], inputs: tuple[Tensor, ...], optimizers: list[torch.optim.Optimizer]
            ) -> Callable[[], None]:
    """``step`` replayed from a CUDA graph, warmed up and captured before it is timed.

    ``inputs`` (the step's batch, which it reads in place) are copied into the graph's static
    inputs on every call, as in training.
    """
    def capturable(*_: Tensor) -> tuple[()]:
        step()
        return ()

    run = GraphedStep(capturable, optimizers=optimizers, enabled=True, where="report")
    for _ in range(WARMUP_STEPS + 1):
        run(*inputs)
    if run.graph is None:
        raise RuntimeError("the step was not captured in a CUDA graph (see the warning above)")

    def replay() -> None:
        run(*inputs)
    return replay


def timed_rows(group: str, steps: dict[str, Callable[[], None] | None], rounds: int, device: torch.device,
               notes: dict[str, str]) -> list[Row]:
    """Rows of ``steps`` timed alternately (median seconds), the first as the base; ``None`` steps print n/a."""
    runnable = {name: step for name, step in steps.items() if step is not None}
    seconds = bench_supernet.alternate(runnable, rounds, device)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    base = medians[next(iter(runnable))]
    rows = []
    for name, step in steps.items():
        if step is None:
            rows.append([group, name, NA_CPU, "", "", notes.get(name, "")])
        else:
            rows.append([group, name, f"{medians[name]:.4f}", f"{medians[name] / base:.2f}",
                         memory(step, device), notes.get(name, "")])
    return rows


def supernet_rows(size_name: str, rounds: int, device: torch.device) -> list[Row]:
    size = bench_supernet.SIZES[size_name]
    preferred = preferred_memory_format(device)
    steps: dict[str, Callable[[], None] | None] = {}
    notes = {}
    for implementation in ("fast", "reference"):
        for layout, memory_format in LAYOUTS.items():
            supernet = bench_supernet.build_supernet(size, implementation, device, memory_format)
            images, labels = bench_supernet.batch(size, device, memory_format)
            for precision in precisions(device):
                name = f"{implementation}, {layout}, {precision}"
                step = in_precision(lambda n=supernet, x=images, y=labels: bench_supernet.supernet_step(n, x, y),
                                    precision, device)
                steps[name] = step
                if implementation == "fast":  # each graph keeps its own memory pool: the default implementation only
                    steps[f"{name}, CUDA graph"] = graphed(step, (images, labels), []) \
                        if device.type == "cuda" else None
                if memory_format == preferred or (preferred == torch.preserve_format and layout == "contiguous"):
                    notes[name] = "selbench train's layout here"
    group = (f"supernet step, {size_name} (C={size['supernet']['C']}, {size['supernet']['layers']} cells, "
             f"batch {size['batch']} of {size['image']}x{size['image']})")
    return timed_rows(group, steps, rounds, device, notes)


def search_epoch_rows(steps: int, device: torch.device) -> list[Row]:
    """DARTS's CIFAR-10 search epoch = steps per epoch × measured seconds per bilevel-1st step."""
    recipe = selbench.load_recipe("darts-cifar10")
    per_epoch = math.ceil(CIFAR10_TRAIN_IMAGES * recipe.data["train_portion"] / recipe.data["batch_size"])
    size = {**bench_search_throughput.PAPER, "batch_size": recipe.data["batch_size"]}
    run = bench_search_throughput.SearchRun(size, "bilevel-1st", device, preferred_memory_format(device),
                                            batches=steps)
    step_seconds = size["batch_size"] / run.images_per_second(steps)
    group = "paper search epoch (DARTS CIFAR-10, bilevel-1st, fp32)"
    eager = per_epoch * step_seconds
    rows = [[group, "eager, extrapolated", f"{eager:.1f}", "1.00", memory(lambda: run.steps(1), device),
             f"{per_epoch} steps x {step_seconds:.3f} s/step (mean of {steps} steps after 1 warm-up)"]]
    if device.type != "cuda":
        return rows + [[group, "CUDA graphs, extrapolated", NA_CPU, "", "", ""]]
    # an epoch with graphs: warm-up steps and the capture, then replays; the replay time is the difference
    # between an epoch cut after the capture and one cut `steps` replays later
    first = WARMUP_STEPS + 1
    graphed_run = bench_search_throughput.SearchRun(size, "bilevel-1st", device, preferred_memory_format(device),
                                                    batches=first + steps, graphs=True)
    graphed_run.steps(first + steps)  # warm-up: allocator, cuDNN's choices
    seconds = {}
    for count in (first, first + steps):
        start = time.perf_counter()
        graphed_run.steps(count)
        seconds[count] = time.perf_counter() - start
    replay = (seconds[first + steps] - seconds[first]) / steps
    graphs_epoch = seconds[first] + (per_epoch - first) * replay
    return rows + [[group, "CUDA graphs, extrapolated", f"{graphs_epoch:.1f}", f"{graphs_epoch / eager:.2f}",
                    memory(lambda: graphed_run.steps(first + 1), device),
                    f"{seconds[first]:.3f} s for {first} steps (capture included) + {per_epoch - first} steps x "
                    f"{replay:.3f} s/replay"]]


def perturbation_rows(device: torch.device) -> list[Row]:
    """``bench_perturbation.py`` with 1 fine-tuning epoch between decisions (its default: 5), to fit the time."""
    args = bench_perturbation.parse_args(["--device", str(device), "--threads", str(torch.get_num_threads()),
                                          "--pretrain-epochs", "2", "--proj-intv", "1"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timings = bench_perturbation.time_selections(args, device)
    base = next(iter(timings.values()))
    group = (f"DARTS-PT selection, demo (C={args.C}, {args.layers} cells, {args.images} images/split, "
             f"proj_intv={args.proj_intv})")
    used = memory(lambda: None, device) if device.type != "cuda" else \
        f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (all implementations)"
    return [[group, f"implementation={name}", f"{timing.wall:.2f}", f"{timing.wall / base.wall:.2f}", used,
             "same genotype as every other implementation"] for name, timing in timings.items()]


def hessian_rows(quick: bool, device: torch.device) -> list[Row]:
    C, layers, steps = (2, 3, 4) if quick else (4, 3, 4)
    supernet, loss, point = bench_hessian_diagonal.hessian_problem(C=C, layers=layers, steps=steps, batch=16, size=8,
                                                                   classes=10, device=device)
    chunk = 64
    with batchnorm_mode(supernet, "train"):
        exact_hessian_diagonal(loss, point, chunk)  # warm-up
        results = {"vectorised (chunk 64)": bench_hessian_diagonal.best_time(
                       lambda: exact_hessian_diagonal(loss, point, chunk), device, 2),
                   "loop (double backward)": bench_hessian_diagonal.best_time(
                       lambda: bench_hessian_diagonal.double_backward_loop(loss, point), device, 1)}
        used = {"vectorised (chunk 64)": memory(lambda: exact_hessian_diagonal(loss, point, chunk), device),
                "loop (double backward)": memory(lambda: bench_hessian_diagonal.double_backward_loop(loss, point),
                                                 device)}
    (fast, diagonal), (_, reference) = results.values()
    torch.testing.assert_close(diagonal, reference, rtol=1e-4, atol=1e-5)
    group = f"exact Hessian diagonal (C={C}, {layers} cells, {steps} nodes: {point.numel()} HVPs)"
    return [[group, name, f"{seconds:.3f}", f"{seconds / fast:.2f}", used[name],
             "best of 2" if name.startswith("vectorised") else "one run"]
            for name, (seconds, _) in results.items()]


def retrain_rows(size_name: str, rounds: int, device: torch.device) -> list[Row]:
    size = bench_supernet.SIZES[size_name]
    memory_format = preferred_memory_format(device)
    steps: dict[str, Callable[[], None] | None] = {}
    for precision in precisions(device):
        torch.manual_seed(0)
        network = selbench.get_space("darts").build_network(
            selbench.Genotype.parse(bench_supernet.DARTS_V2), **size["network"], num_classes=bench_supernet.CLASSES,
            in_channels=size["channels"]).to(device, memory_format=memory_format).train()
        optimizer = torch.optim.SGD(network.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
        images, labels = bench_supernet.batch(size, device, memory_format)
        step = in_precision(lambda n=network, o=optimizer, x=images, y=labels: bench_supernet.discrete_step(n, o, x, y),
                            precision, device)
        steps[precision] = step
        steps[f"{precision}, CUDA graph"] = graphed(step, (images, labels), [optimizer]) \
            if device.type == "cuda" else None
    group = (f"retrain step, DARTS_V2 {size_name} (C={size['network']['C']}, {size['network']['layers']} cells, "
             f"batch {size['batch']})")
    return timed_rows(group, steps, rounds, device, {})


def load_average() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def machine(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return (f"device {device} ({name}); CPU {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch "
            f"threads, load average {load_average()}; torch {torch.__version__}, selbench {selbench.__version__}, "
            f"Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="demo-size steps and shorter runs (for a CPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: 1 with --quick, steady on a shared machine; else PyTorch's)")
    args = parser.parse_args()
    if args.threads is not None or args.quick:
        torch.set_num_threads(args.threads or 1)
    device = torch.device(args.device)
    size = "demo" if args.quick else "paper"
    start = time.perf_counter()
    print(machine(device))
    groups: dict[str, Callable[[], list[Row]]] = {
        "supernet steps": lambda: supernet_rows(size, ROUNDS, device),
        "paper search epoch": lambda: search_epoch_rows(2 if args.quick else 5, device),
        "DARTS-PT selections": lambda: perturbation_rows(device),
        "Hessian diagonals": lambda: hessian_rows(args.quick, device),
        "retrain steps": lambda: retrain_rows(size, ROUNDS, device),
    }
    rows = []
    for done, (label, measure) in enumerate(groups.items()):
        print(f"[{done + 1}/{len(groups)}] timing {label} ({time.perf_counter() - start:.0f} s so far)",
              file=sys.stderr, flush=True)
        rows += measure()
    print(tabulate(rows, headers=["what", "variant", "seconds", "÷ base", "peak memory", "note"]))
    print(f"total {time.perf_counter() - start:.0f} s; load average at the end {load_average()}")


if __name__ == "__main__":
    main()
