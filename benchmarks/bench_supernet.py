"""Training steps of the DARTS supernet (fast and reference side by side) and of the discrete network.

Sizes: ``demo`` (the demo recipe: digits 8×8, supernet C=8 / 3 cells, retrain network C=16 /
5 cells, batch 64) and ``paper`` (DARTS: supernet C=16 / 8 cells, evaluation network DARTS_V2
at C=36 / 20 cells, batch 64 of 32×32 RGB).  A supernet step is forward, cross-entropy and
backward (θ and α); a discrete step adds the SGD update.  Networks and inputs use the memory
format ``selbench train`` uses on the device (channels-last on the CPU), recorded in
``extra_info``; the supernet step is also timed for the reference in PyTorch's default layout
(``reference-default-layout``), the formulation as the original DARTS code runs it, since
channels-last is one of the fast path's means.  Paper sizes get fewer rounds.

As a script it times the supernet variants alternately (A, B, C, A, B, C, ...) in one process,
so that other load on the machine hits all alike, and prints the medians and ratios::

    python benchmarks/bench_supernet.py [--size paper] [--rounds 5] [--device cuda]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import selbench
from conftest import synchronize
from selbench.train.driver import preferred_memory_format

DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
SIZES = {
    "demo": dict(supernet=dict(C=8, layers=3), network=dict(C=16, layers=5), batch=64, image=8, channels=1),
    "paper": dict(supernet=dict(C=16, layers=8), network=dict(C=36, layers=20), batch=64, image=32, channels=3),
}
ROUNDS = {"demo": 10, "paper": 2}
CLASSES = 10
# supernet variants: name -> (implementation, memory format on the device, or None for selbench train's)
VARIANTS: dict[str, tuple[str, torch.memory_format | None]] = {
    "fast": ("fast", None),
    "reference": ("reference", None),
    "reference-default-layout": ("reference", torch.contiguous_format),
}


def variant_format(variant: str, device: torch.device) -> torch.memory_format:
    return VARIANTS[variant][1] or preferred_memory_format(device)


def batch(size: dict, device: torch.device, memory_format: torch.memory_format) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(size["batch"], size["channels"], size["image"], size["image"], generator=generator)
    labels = torch.randint(0, CLASSES, (size["batch"],), generator=generator)
    return images.to(device, memory_format=memory_format), labels.to(device)


def build_supernet(size: dict, implementation: str, device: torch.device,
                   memory_format: torch.memory_format) -> nn.Module:
    torch.manual_seed(0)
    supernet = selbench.get_space("darts").build_supernet(
        **size["supernet"], num_classes=CLASSES, in_channels=size["channels"], implementation=implementation)
    return supernet.to(device, memory_format=memory_format).train()


def supernet_step(supernet: nn.Module, images: Tensor, labels: Tensor) -> None:
    """One search step's gradient work: forward, loss, backward into θ and α."""
    supernet.zero_grad(set_to_none=True)
    F.cross_entropy(supernet(images), labels).backward()


def discrete_step(network: nn.Module, optimizer: torch.optim.Optimizer, images: Tensor, labels: Tensor) -> None:
    """One retraining step of the discrete network."""
    optimizer.zero_grad(set_to_none=True)
    logits, _ = network(images)
    F.cross_entropy(logits, labels).backward()
    optimizer.step()


# -- pytest-benchmark ------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("size_name", list(SIZES))
def test_supernet_training_step(benchmark, bench_device, timed, size_name, variant):
    benchmark.group = f"supernet step, {size_name}"
    size, memory_format = SIZES[size_name], variant_format(variant, bench_device)
    supernet = build_supernet(size, VARIANTS[variant][0], bench_device, memory_format)
    images, labels = batch(size, bench_device, memory_format)
    benchmark.extra_info.update(implementation=VARIANTS[variant][0], memory_format=str(memory_format),
                                **size["supernet"], batch=size["batch"], image=size["image"])
    benchmark.pedantic(timed(supernet_step), (supernet, images, labels), rounds=ROUNDS[size_name], iterations=1,
                       warmup_rounds=1)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in supernet.arch_parameters())


@pytest.mark.parametrize("size_name", list(SIZES))
def test_discrete_training_step(benchmark, bench_device, timed, size_name):
    benchmark.group = f"discrete network step, {size_name}"
    size, memory_format = SIZES[size_name], preferred_memory_format(bench_device)
    torch.manual_seed(0)
    network = selbench.get_space("darts").build_network(
        selbench.Genotype.parse(DARTS_V2), **size["network"], num_classes=CLASSES, in_channels=size["channels"])
    network.to(bench_device, memory_format=memory_format).train()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    images, labels = batch(size, bench_device, memory_format)
    benchmark.extra_info.update(memory_format=str(memory_format), genotype="DARTS_V2", **size["network"],
                                batch=size["batch"], image=size["image"])
    benchmark.pedantic(timed(discrete_step), (network, optimizer, images, labels), rounds=ROUNDS[size_name],
                       iterations=1, warmup_rounds=1)
    assert all(torch.isfinite(p).all() for p in network.parameters())


# -- the interleaved ratio -------------------------------------------------------------------------
def alternate(steps: dict[str, Callable[[], None]], rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each step, calling them in turn ``rounds`` times after one warm-up each."""
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()
    for _ in range(rounds):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description="fast vs reference DARTS supernet training step, interleaved")
    parser.add_argument("--size", choices=list(SIZES), default="paper")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    size = SIZES[args.size]
    steps = {}
    for variant, (implementation, _) in VARIANTS.items():
        memory_format = variant_format(variant, device)
        images, labels = batch(size, device, memory_format)
        supernet = build_supernet(size, implementation, device, memory_format)
        steps[variant] = lambda net=supernet, x=images, y=labels: supernet_step(net, x, y)
    seconds = alternate(steps, args.rounds, device)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else f", {torch.cuda.get_device_name()}"
    print(f"{args.size}: {size['supernet']}, batch {size['batch']} of {size['image']}x{size['image']}; "
          f"device {device}{threads}; torch {torch.__version__}")
    for name, values in seconds.items():
        print(f"{name:>24} ({variant_format(name, device)}): median {medians[name]:.3f} s  min {min(values):.3f} s  "
              f"({', '.join(f'{v:.3f}' for v in values)})")
    for reference in ("reference", "reference-default-layout"):
        print(f"{reference} / fast: {medians[reference] / medians['fast']:.2f}x (medians), "
              f"{min(seconds[reference]) / min(seconds['fast']):.2f}x (minima)")

if __name__ == "__main__":
    main()
