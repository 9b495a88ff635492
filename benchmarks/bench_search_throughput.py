"""Supernet training throughput — images per second through θ — for every search mode.

Two sizes: DARTS's search network at paper size (C=16, 8 cells, batch 64, 32×32 RGB) and the
``demo`` recipe's supernet (digits, 8×8).  Batches come from :class:`selbench.SearchData`
(device-resident uint8 images, batched augmentation), so the numbers include the data path.

As a script it prints a table::

    python benchmarks/bench_search_throughput.py [--device cuda] [--steps 3] [--sizes demo paper]

Under pytest (``tox -e bench``) the demo size runs as pytest-benchmark tests, one per mode.
"""
from __future__ import annotations

import argparse
import itertools
import time

import pytest
import torch
from tabulate import tabulate

import selbench
from conftest import synchronize
from selbench.data.loading import SearchData, split_indices
from selbench.train.driver import preferred_memory_format
from selbench.train.loop import SEARCH_MODES, arch_step_for, search_epoch

PAPER = dict(C=16, layers=8, batch_size=64, image_size=32, channels=3, classes=10)


def demo_size() -> dict:
    recipe = selbench.load_recipe("demo")
    return dict(C=recipe.supernet["C"], layers=recipe.supernet["layers"], batch_size=recipe.data["batch_size"],
                image_size=8, channels=1, classes=10)


def synthetic_data(size: dict, batches: int, device: torch.device) -> SearchData:
    """Random uint8 images served through the real split, shuffle and augmentation code."""
    count = 2 * batches * size["batch_size"]
    generator = torch.Generator().manual_seed(0)
    shape = (count, size["channels"], size["image_size"], size["image_size"])
    images = selbench.ImageSet(
        train_images=torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator),
        train_labels=torch.randint(0, size["classes"], (count,), generator=generator),
        test_images=torch.zeros((1, *shape[1:]), dtype=torch.uint8), test_labels=torch.zeros(1, dtype=torch.int64),
        num_classes=size["classes"])
    theta, alpha = split_indices(count, subset=0, train_portion=0.5, seed=0)
    return SearchData(images, theta=theta, alpha=alpha, seed=0, device=device, batch_size=size["batch_size"],
                      crop_padding=4 if size["image_size"] >= 32 else 1, flip=True, cutout=0, name="synthetic")


class SearchRun:
    """A supernet, its two optimisers and data, ready to take θ steps in one search mode (``graphs``: CUDA graphs)."""

    def __init__(self, size: dict, mode: str, device: torch.device, memory_format: torch.memory_format,
                 batches: int = 3, graphs: bool = False):
        torch.manual_seed(0)
        self.size, self.mode, self.device, self.graphs = size, mode, device, graphs
        self.supernet = selbench.get_space("darts").build_supernet(
            C=size["C"], layers=size["layers"], num_classes=size["classes"], in_channels=size["channels"])
        self.supernet.to(device, memory_format=memory_format)
        self.w_optimizer = torch.optim.SGD(self.supernet.weight_parameters(), lr=0.025, momentum=0.9,
                                           weight_decay=3e-4)
        self.a_optimizer = None if mode == "frozen-alpha" else torch.optim.Adam(
            self.supernet.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
        self.arch_step = arch_step_for(mode, self.supernet, w_optimizer=self.w_optimizer,
                                       a_optimizer=self.a_optimizer)
        self.data = synthetic_data(size, batches=batches, device=device)

    def steps(self, count: int) -> None:
        """``count`` θ steps (at most ``batches``), with the mode's α steps, synchronised at the end."""
        search_epoch(self.supernet, itertools.islice(self.data.batches("train"), count),
                     lambda: self.data.batches("valid"), w_optimizer=self.w_optimizer, a_optimizer=self.a_optimizer,
                     mode=self.mode, arch_step=self.arch_step, graphs=self.graphs)
        synchronize(self.device)

    def images_per_second(self, count: int) -> float:
        self.steps(1)  # warm-up: allocator, oneDNN / cuDNN kernel choice
        start = time.perf_counter()
        self.steps(count)
        return count * self.size["batch_size"] / (time.perf_counter() - start)


@pytest.mark.parametrize("mode", SEARCH_MODES)
def test_demo_search_throughput(benchmark, bench_device, mode):
    run = SearchRun(demo_size(), mode, bench_device, preferred_memory_format(bench_device))
    run.steps(1)
    benchmark.pedantic(run.steps, args=(2,), rounds=3, iterations=1)
    assert all(torch.isfinite(p).all() for p in run.supernet.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=3, help="timed θ steps per row (after one warm-up step)")
    parser.add_argument("--sizes", nargs="+", choices=["demo", "paper"], default=["demo", "paper"])
    parser.add_argument("--layout", choices=["preferred", "contiguous"], default="preferred",
                        help="memory format: what `selbench train` uses on this device, or plain NCHW")
    args = parser.parse_args()
    device = torch.device(args.device)
    memory_format = preferred_memory_format(device) if args.layout == "preferred" else torch.contiguous_format
    sizes = {"demo": demo_size(), "paper": PAPER}
    rows = []
    for name in args.sizes:
        size = sizes[name]
        rates = {mode: SearchRun(size, mode, device, memory_format, batches=args.steps).images_per_second(args.steps)
                 for mode in SEARCH_MODES}
        for mode, rate in rates.items():
            rows.append((name, f"C={size['C']} cells={size['layers']} batch={size['batch_size']} "
                               f"{size['image_size']}x{size['image_size']}x{size['channels']}",
                         mode, f"{rate:.1f}", f"{rate / rates['bilevel-1st']:.2f}"))
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"device {device}{threads}, memory format {memory_format}, torch {torch.__version__}")
    print(tabulate(rows, headers=["size", "network", "mode", "images/s", "vs bilevel-1st"]))


if __name__ == "__main__":
    main()
