"""The exact Hessian diagonal of influential magnitude: vectorised HVPs against per-coordinate loops.

All three give diag(H) of the validation loss w.r.t. every mixing weight of a DARTS supernet
(both cell types), one Hessian-vector product per coordinate, and the script checks that they
agree:

* ``vectorised``: the plugin's ``exact_hessian_diagonal`` — ``vmap`` over ``chunk`` basis
  vectors of a forward-over-reverse HVP;
* ``loop (double backward)``: one ``autograd.grad`` of ∇L (graph kept) per coordinate, the
  usual hand-written loop;
* ``loop (torch.func)``: the same HVP as the plugin, one basis vector per call
  (``--func-loop``; slow on the CPU).

    python benchmarks/bench_hessian_diagonal.py [--C 4] [--layers 3] [--steps 4] [--chunk 32] [--device cuda]

``pytest benchmarks/bench_hessian_diagonal.py --benchmark-only`` times the first two on a
smaller supernet for run-to-run comparison.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import selbench
from conftest import synchronize
from selbench import batchnorm_mode
from selbench.plugins.influence import BatchLoss as Loss
from selbench.plugins.influential_magnitude import batch_loss, exact_hessian_diagonal, flatten_tables


def hessian_problem(*, C: int, layers: int, steps: int, batch: int, size: int, classes: int,
                    device: torch.device, seed: int = 0) -> tuple[torch.nn.Module, Loss, Tensor]:
    """A DARTS supernet (BatchNorm on batch statistics), its batch loss over the flat mixing weights, the point."""
    torch.manual_seed(seed)
    supernet = selbench.get_space("darts").build_supernet(
        C=C, layers=layers, steps=steps, num_classes=classes, in_channels=3).to(device)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, classes, (batch,), generator=generator).to(device)
    weights = {c: F.softmax(alpha.detach(), dim=-1) for c, alpha in supernet.alphas.items()}
    loss = batch_loss(supernet, images, labels, weights, "weights")
    point = flatten_tables(weights, list(weights))
    return supernet, loss, point


def double_backward_loop(loss: Loss, point: Tensor) -> Tensor:
    """diag(H) with one double-backward HVP per coordinate, reusing the graph of ∇L."""
    at = point.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(loss(at), at, create_graph=True)
    diagonal = torch.empty_like(point)
    basis = torch.zeros_like(point)
    for i in range(point.numel()):
        basis[i] = 1.0
        diagonal[i] = torch.autograd.grad(gradient, at, basis, retain_graph=True)[0][i]
        basis[i] = 0.0
    return diagonal


def best_time(fn: Callable[[], Tensor], device: torch.device, repeats: int) -> tuple[float, Tensor]:
    """Best wall time over ``repeats`` runs (CUDA-synchronised) and the last result."""
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, result


# -- pytest-benchmark ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def problem(bench_device):
    """A small supernet on the bench device, one CPU thread (a second only adds contention for tensors this small)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    supernet, loss, point = hessian_problem(C=2, layers=3, steps=2, batch=16, size=8, classes=4,
                                            device=bench_device)
    with batchnorm_mode(supernet, "train"):
        yield loss, point
    torch.set_num_threads(threads)


@pytest.mark.benchmark(group="hessian-diagonal")
def test_exact_diagonal_vectorised(benchmark, timed, problem):
    loss, point = problem
    diagonal = benchmark.pedantic(timed(exact_hessian_diagonal), (loss, point, point.numel()), rounds=3)
    torch.testing.assert_close(diagonal, double_backward_loop(loss, point), rtol=1e-4, atol=1e-5)


@pytest.mark.benchmark(group="hessian-diagonal")
def test_exact_diagonal_double_backward_loop(benchmark, timed, problem):
    benchmark.pedantic(timed(double_backward_loop), problem, rounds=3)


# -- the ratio table -------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--C", type=int, default=4)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="intermediate nodes (4: DARTS's 14 edges)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=8, help="image side")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--chunk", type=int, nargs="+", default=[16, 64], help="HVPs per vectorised call")
    parser.add_argument("--func-loop", action="store_true", help="also time torch.func's HVP one coordinate at a time")
    parser.add_argument("--repeats", type=int, default=2, help="runs per method; the best counts")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 gives steadier timings)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    supernet, loss, point = hessian_problem(C=args.C, layers=args.layers, steps=args.steps, batch=args.batch,
                                            size=args.size, classes=args.classes, device=device)
    methods = {f"vectorised, chunk {chunk}": (lambda chunk=chunk: exact_hessian_diagonal(loss, point, chunk))
               for chunk in args.chunk}
    methods["loop (double backward)"] = lambda: double_backward_loop(loss, point)
    if args.func_loop:
        methods["loop (torch.func, chunk 1)"] = lambda: exact_hessian_diagonal(loss, point, 1)

    with batchnorm_mode(supernet, "train"):
        exact_hessian_diagonal(loss, point, min(args.chunk))  # warm-up
        results = {name: best_time(fn, device, args.repeats) for name, fn in methods.items()}
    reference = results["loop (double backward)"]
    print(f"device {device}, threads {torch.get_num_threads()}, C={args.C}, layers={args.layers}, "
          f"steps={args.steps}, batch {args.batch} of {args.size}×{args.size}: {point.numel()} coordinates = HVPs")
    print(f"{'method':<28}{'seconds':>10}{'loop / method':>15}{'max |Δ diag|':>15}")
    for name, (seconds, diagonal) in results.items():
        difference = (diagonal - reference[1]).abs().max().item()
        print(f"{name:<28}{seconds:>10.3f}{reference[0] / seconds:>14.2f}x{difference:>15.2e}")
        assert torch.allclose(diagonal, reference[1], rtol=1e-4, atol=1e-5), name


if __name__ == "__main__":
    main()
