"""One supernet training epoch of the ``demo`` recipe: ``dsnas`` (only the sampled op of each edge runs) against
``dsnas`` computing every op under the same one-hot samples, and against ``bilevel-1st`` (DARTS first order).

As a script it prints seconds per epoch and the ratios::

    python benchmarks/bench_dsnas.py [--device cuda] [--repeats 3]

Under pytest (``tox -e bench``) each variant is a pytest-benchmark test.
"""
from __future__ import annotations

import argparse
import time

import pytest
import torch
from tabulate import tabulate

import selbench
from conftest import synchronize
from selbench.train.driver import preferred_memory_format
from selbench.train.loop import arch_step_for, search_epoch
from selbench.train.sampling import ArchSampler

VARIANTS = {  # name: (search mode, compute only the sampled op)
    "dsnas": ("dsnas", True),
    "dsnas, every op computed": ("dsnas", False),
    "bilevel-1st": ("bilevel-1st", True),
}


class DemoEpoch:
    """The demo recipe's supernet, optimisers and data, ready to train one epoch in one variant."""

    def __init__(self, variant: str, device: torch.device):
        self.mode, sampled_only = VARIANTS[variant]
        recipe = selbench.load_recipe("demo")
        self.data = selbench.load_data(recipe.data, seed=0, device=device)
        torch.manual_seed(0)
        self.supernet = recipe.build_supernet(num_classes=self.data.num_classes, in_channels=self.data.in_channels)
        self.supernet.to(device, memory_format=preferred_memory_format(device))
        search = recipe.search
        self.w_optimizer = torch.optim.SGD(self.supernet.weight_parameters(), lr=search["lr"],
                                           momentum=search["momentum"], weight_decay=search["weight_decay"])
        self.a_optimizer = torch.optim.Adam(self.supernet.arch_parameters(), lr=search["arch_lr"],
                                            betas=(search["arch_beta1"], search["arch_beta2"]))
        self.arch_step = arch_step_for(self.mode, self.supernet, w_optimizer=self.w_optimizer,
                                       a_optimizer=self.a_optimizer)
        self.sampler = ArchSampler("dsnas", sampled_only=sampled_only) if self.mode == "dsnas" else None
        self.device = device

    def epoch(self) -> None:
        search_epoch(self.supernet, self.data.batches("train"), lambda: self.data.batches("valid"),
                     w_optimizer=self.w_optimizer, a_optimizer=self.a_optimizer, mode=self.mode,
                     arch_step=self.arch_step, sampler=self.sampler)
        synchronize(self.device)

    def seconds(self, repeats: int) -> float:
        """The fastest of ``repeats`` epochs, after one warm-up epoch."""
        self.epoch()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.epoch()
            times.append(time.perf_counter() - start)
        return min(times)


@pytest.mark.parametrize("variant", VARIANTS)
def test_demo_epoch(benchmark, bench_device, variant):
    run = DemoEpoch(variant, bench_device)
    run.epoch()
    benchmark.pedantic(run.epoch, rounds=2, iterations=1)
    assert all(torch.isfinite(p).all() for p in run.supernet.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per variant (the fastest counts)")
    args = parser.parse_args()
    device = torch.device(args.device)
    seconds = {variant: DemoEpoch(variant, device).seconds(args.repeats) for variant in VARIANTS}
    rows = [(variant, f"{s:.3f}", f"{seconds['dsnas, every op computed'] / seconds['dsnas']:.2f}"
             if variant == "dsnas" else "", f"{seconds['bilevel-1st'] / s:.2f}") for variant, s in seconds.items()]
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"demo recipe, one training epoch; device {device}{threads}, torch {torch.__version__}")
    print(tabulate(rows, headers=["variant", "seconds", "speed-up vs every op", "speed-up vs bilevel-1st"]))


if __name__ == "__main__":
    main()
