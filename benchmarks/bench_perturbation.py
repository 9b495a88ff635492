"""Wall time of a whole DARTS-PT selection under each of the selector's implementations.

Every run makes the same decisions on the same supernet (the script asserts the same
genotype): ``reference`` computes every op, one pass per candidate; ``fast`` tells the
supernet which ops have zero weight, so decided edges compute one op and removed edges none;
``batched`` measures the candidates of each decision together in one vectorised pass.
The schedule has the default shape (14 op events and 3 topology events, both cell types, the
whole validation split, α tuned, 5 fine-tuning epochs between events) on a small supernet and
small splits, so that it runs on a CPU.

    python benchmarks/bench_perturbation.py [--C 4] [--layers 3] [--proj-intv 5] [--repeats 1]

The implementations are read from the installed selector's ``implementation`` option.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Sequence

import torch

import selbench
from selbench import SelectionContext, TensorData


def planted_images(n: int, *, num_classes: int, size: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise plus a bright square whose position is the class: learnable in a few epochs."""
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    images = 0.5 * torch.randn(n, 1, size, size, generator=generator)
    half = size // 2
    for k in range(num_classes):
        r, c = divmod(k % 4, 2)
        images[labels == k, :, r * half:(r + 1) * half, c * half:(c + 1) * half] += 1.0
    return images, labels


def pretrained_supernet(args: argparse.Namespace, data: TensorData, device: torch.device) -> torch.nn.Module:
    """A supernet after a few epochs of the harness's search loop, so that ops differ."""
    torch.manual_seed(args.seed)
    supernet = selbench.get_space("darts").build_supernet(
        C=args.C, layers=args.layers, steps=4, num_classes=args.classes, in_channels=1,
        ops=selbench.get_space("darts").ops[1:]).to(device)
    trainer = SelectionContext(supernet, options={}, seed=args.seed, device=device, data=data, selector="pretrain")
    trainer.finetune(args.pretrain_epochs, lr=0.05, arch_lr=3e-3)
    return supernet


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--C", type=int, default=4)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--size", type=int, default=8, help="image side")
    parser.add_argument("--images", type=int, default=32, help="images per split")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--proj-intv", type=int, default=5)
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per implementation, alternating; the fastest counts")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 gives steadier timings)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def implementations() -> tuple[str, ...]:
    """The values of the selector's ``implementation`` option, as installed."""
    choices = selbench.get_selector("perturbation").options["implementation"].choices
    assert choices is not None
    return tuple(choices)


@dataclass
class Timing:
    """The fastest of the repeated selections of one implementation."""

    wall: float  # Selection.seconds: the selector's wall time, CUDA-synchronised by the harness
    cpu: float  # process CPU time
    genotype: selbench.Genotype
    counters: dict


def time_selections(args: argparse.Namespace, device: torch.device) -> dict[str, Timing]:
    """A pretrained supernet selected by each implementation in turn, ``args.repeats`` times; same genotype asserted."""
    generator = torch.Generator().manual_seed(args.seed)
    train = planted_images(args.images, num_classes=args.classes, size=args.size, generator=generator)
    valid = planted_images(args.images, num_classes=args.classes, size=args.size, generator=generator)
    data = TensorData(train=tuple(t.to(device) for t in train), valid=tuple(t.to(device) for t in valid),
                      batch_size=args.batch_size)
    supernet = pretrained_supernet(args, data, device)
    timings: dict[str, Timing] = {}
    for _ in range(args.repeats):
        for implementation in implementations():
            cpu_start = time.process_time()
            selection = selbench.select(supernet, "perturbation", data=data, seed=args.seed, device=device,
                                        proj_intv=args.proj_intv, implementation=implementation)
            timing = Timing(selection.seconds, time.process_time() - cpu_start, selection.genotype,
                            dict(selection.counters))
            best = timings.setdefault(implementation, timing)
            if best.genotype != timing.genotype:
                raise AssertionError(f"{implementation}: another genotype on a repeat")
            best.wall, best.cpu = min(best.wall, timing.wall), min(best.cpu, timing.cpu)
    genotypes = {name: timing.genotype for name, timing in timings.items()}
    assert len(set(map(str, genotypes.values()))) == 1, genotypes
    return timings


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    timings = time_selections(args, device)
    first = timings[implementations()[0]]
    print(f"device {device}, threads {torch.get_num_threads()}, C={args.C}, layers={args.layers}, "
          f"{args.images} images per split in batches of {args.batch_size}, proj_intv={args.proj_intv}")
    print(f"counters: {first.counters}")
    print(f"genotype (all): {first.genotype}")
    reference = timings["reference"]
    for name, timing in timings.items():
        print(f"{name}: wall {timing.wall:.2f} s, process CPU {timing.cpu:.2f} s; reference / {name}: "
              f"{reference.wall / timing.wall:.2f}x wall, {reference.cpu / timing.cpu:.2f}x CPU")


if __name__ == "__main__":
    main()
