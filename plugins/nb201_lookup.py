"""The ``nb201-lookup`` scorer: a NAS-Bench-201 cell's accuracy read from the benchmark, not retrained.

NAS-Bench-201 (Dong & Yang, ICLR 2020; its successor NATS-Bench's topology space holds the same
15,625 cells and numbers) trained every cell of the space with one protocol: the C = 16, N = 5
network, 200 epochs, several seeds.  This scorer looks the selected cell up there and reports
its **test accuracy after 200 epochs, averaged over the benchmark's seeds**
(``get_more_info(index, dataset, hp="200", is_random=False)["test-accuracy"]``, in percent in
the benchmark, a fraction here as every scorer returns).  The recipe's ``[retrain]`` section
and the retrain seed play no part; ``params_m`` and ``macs_m`` are those of the benchmark's
network (C = 16, N = 5), counted with selbench's own counters.

Which benchmark file: the path in ``$SELBENCH_NB201_BENCHMARK`` if set, otherwise the first
of the benchmark APIs' default files found in ``$TORCH_HOME`` (default ``~/.torch``):
``NATS-tss-v1_0-3ffb9-simple`` (a directory; read with ``pip install nats_bench``), then
``NAS-Bench-201-v1_1-096897.pth`` and ``NAS-Bench-201-v1_0-e61699.pth`` (read with
``pip install nas-bench-201``).  A file whose name starts with ``NAS-Bench-201`` is read with
``nas_201_api``, anything else with ``nats_bench`` (a directory in fast mode, a full
``.pickle.pbz2`` file loaded whole).  An opened benchmark is kept for the rest of the process.

The recipe's dataset names the benchmark's: ``cifar10`` → ``cifar10`` (trained on all 50k
training images, tested on the 10k test images), ``cifar100`` → ``cifar100`` and
``imagenet16-120`` → ``ImageNet16-120`` (tested on the benchmark's half of the test set).

The same lookup is also a source of the ``table`` scorer (``--scorer table``), under the name
``nb201``: the scorer that reads every tabulated space, NAS-Bench-201's and selbench's own.

The seam for tests and other benchmark copies: :func:`make_lookup_scorer` and
:func:`make_table_source` take the function that opens the benchmark; anything with the two
query methods of :class:`BenchmarkAPI` works.
"""
from __future__ import annotations

import functools
import importlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from selbench import (
    Genotype,
    GenotypeError,
    Scorer,
    ScoringContext,
    SelbenchError,
    TableSource,
    count_macs,
    count_parameters,
    get_space,
    hookimpl,
)

NAME = "nb201-lookup"
BENCHMARK_ENV = "SELBENCH_NB201_BENCHMARK"
SPACE = "nb201"
EPOCHS = 200  # the benchmark's full training schedule (its "hp")
BENCHMARK_NETWORK = {"C": 16, "N": 5}
BENCHMARK_STEPS = 3  # intermediate nodes of the benchmark's cell

# recipe dataset name -> (benchmark dataset name, classes, image side)
DATASETS = {
    "cifar10": ("cifar10", 10, 32),
    "cifar100": ("cifar100", 100, 32),
    "imagenet16-120": ("ImageNet16-120", 120, 16),
}

# The benchmark APIs' default files under $TORCH_HOME, in the order they are looked for.
DEFAULT_FILES = ("NATS-tss-v1_0-3ffb9-simple", "NAS-Bench-201-v1_1-096897.pth", "NAS-Bench-201-v1_0-e61699.pth")
# import name -> what to pip install
PACKAGES = {"nats_bench": "nats_bench", "nas_201_api": "nas-bench-201"}

INSTALL_HINT = (f"pip install nats_bench and put the NAS-Bench-201 / NATS-Bench topology benchmark "
                f"({DEFAULT_FILES[0]}) in $TORCH_HOME (default ~/.torch), or point {BENCHMARK_ENV} at the "
                "benchmark file or directory")


class BenchmarkAPI(Protocol):
    """The two queries of ``nats_bench``'s topology API and ``nas_201_api.NASBench201API`` this scorer uses."""

    def query_index_by_arch(self, arch: str) -> int:
        """The cell's index in the benchmark; -1 if it is not there."""

    def get_more_info(self, index: int, dataset: str, iepoch: int | None = None, hp: str = "12",
                      is_random: bool = True) -> Mapping[str, Any]:
        """Metrics of cell ``index`` after ``hp`` epochs; ``is_random=False`` averages over the seeds."""


# -- finding and opening the benchmark -------------------------------------------------------------
def torch_home() -> Path:
    """Where the benchmark APIs look by default: ``$TORCH_HOME``, else ``~/.torch``."""
    return Path(os.environ.get("TORCH_HOME") or Path.home() / ".torch").expanduser()


def locate_benchmark() -> Path:
    """The benchmark file or directory to read: ``$SELBENCH_NB201_BENCHMARK``, else a default one that exists."""
    configured = os.environ.get(BENCHMARK_ENV)
    if configured:
        path = Path(configured).expanduser()
        if not path.exists():
            raise SelbenchError(f"{NAME}: {BENCHMARK_ENV} points to {path}, which does not exist; {INSTALL_HINT}")
        return path
    for name in DEFAULT_FILES:
        if (torch_home() / name).exists():
            return torch_home() / name
    raise SelbenchError(f"{NAME}: no NAS-Bench-201 benchmark in {torch_home()} and {BENCHMARK_ENV} is not set; "
                        f"{INSTALL_HINT}")


def api_package(path: Path) -> str:
    """The import name of the API that reads ``path``."""
    return "nas_201_api" if path.name.startswith("NAS-Bench-201") else "nats_bench"


@functools.lru_cache(maxsize=2)  # loading a benchmark takes seconds (fast mode) to minutes (a whole .pth)
def open_benchmark(path: Path) -> BenchmarkAPI:
    """The benchmark API object for ``path``; a missing API package is one clear error."""
    package = api_package(path)
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise SelbenchError(f"{NAME}: reading {path.name} needs the {package} package: "
                            f"pip install {PACKAGES[package]}") from None
    if package == "nats_bench":
        return module.create(str(path), "tss", fast_mode=path.is_dir(), verbose=False)
    return module.NASBench201API(str(path), verbose=False)


def default_benchmark() -> BenchmarkAPI:
    return open_benchmark(locate_benchmark())


# -- the lookup ------------------------------------------------------------------------------------
def benchmark_dataset(recipe: Any) -> tuple[str, int, int]:
    """(benchmark dataset name, classes, image side) for the recipe's dataset; other datasets are an error."""
    dataset = str(recipe.data["dataset"])
    if dataset.lower() not in DATASETS:
        raise SelbenchError(f"{NAME}: recipe {recipe.name!r} uses the {dataset} dataset, which NAS-Bench-201 does "
                            f"not cover; it has {', '.join(DATASETS)} (use the retrain scorer for other data)")
    return DATASETS[dataset.lower()]


def check_space(recipe: Any) -> None:
    """Recipes that search another space than NAS-Bench-201's (or a variant with another node count) are an error."""
    if recipe.supernet["space"] != SPACE:
        raise SelbenchError(f"{NAME}: recipe {recipe.name!r} searches the {recipe.supernet['space']} space; "
                            f"this scorer only knows {SPACE} cells")
    steps = recipe.supernet.get("steps", BENCHMARK_STEPS)
    if steps != BENCHMARK_STEPS:
        raise SelbenchError(f"{NAME}: recipe {recipe.name!r} searches cells with {steps} nodes; NAS-Bench-201's "
                            f"have {BENCHMARK_STEPS}")


def benchmark_cell(genotype: Genotype, recipe: Any) -> str:
    """The cell's benchmark string; cells outside NAS-Bench-201's space are an error."""
    check_space(recipe)
    try:
        get_space(SPACE).validate(genotype)
    except GenotypeError as exc:
        raise SelbenchError(f"{NAME}: the cell is not in NAS-Bench-201's space: {exc}") from None
    return genotype.to_nb201()


def lookup_score(genotype: Genotype, recipe: Any, benchmark: Callable[[], BenchmarkAPI]) -> dict[str, Any]:
    """The score dict (see :class:`selbench.Scorer`) of ``genotype`` read from the benchmark ``benchmark()`` opens."""
    start = time.perf_counter()
    dataset, num_classes, side = benchmark_dataset(recipe)
    arch = benchmark_cell(genotype, recipe)
    api = benchmark()
    index = int(api.query_index_by_arch(arch))
    if index < 0:
        raise SelbenchError(f"{NAME}: the benchmark has no entry for {arch}; is it the topology benchmark?")
    info = api.get_more_info(index, dataset, hp=str(EPOCHS), is_random=False)
    accuracy_percent = float(info["test-accuracy"])
    network = get_space(SPACE).build_network(genotype, **BENCHMARK_NETWORK, num_classes=num_classes, in_channels=3)
    macs = count_macs(network, (3, side, side))
    return {"test_accuracy": accuracy_percent / 100, "params_m": count_parameters(network) / 1e6,
            "macs_m": macs / 1e6, "seconds": time.perf_counter() - start, "device": "lookup", "artifacts": [],
            "epochs": EPOCHS, "benchmark_dataset": dataset, "benchmark_index": index}


def check_recipe(recipe: Any, benchmark: Callable[[], BenchmarkAPI]) -> None:
    """Space, dataset and the benchmark itself (opened now, kept for the scoring) before any training."""
    check_space(recipe)
    benchmark_dataset(recipe)
    benchmark()


def make_lookup_scorer(benchmark: Callable[[], BenchmarkAPI] = default_benchmark) -> Scorer:
    """The ``nb201-lookup`` scorer reading the benchmark that ``benchmark()`` returns (default: the user's file)."""

    def score(ctx: ScoringContext) -> dict[str, Any]:
        return lookup_score(ctx.genotype, ctx.recipe, benchmark)

    return Scorer(name=NAME, score=score, check=functools.partial(check_recipe, benchmark=benchmark),
                  description="NAS-Bench-201 cells: test accuracy at 200 epochs (mean over seeds) looked up in the "
                              "benchmark instead of retraining (needs nats_bench and the benchmark file)")


def make_table_source(benchmark: Callable[[], BenchmarkAPI] = default_benchmark) -> TableSource:
    """NAS-Bench-201 as a source of the ``table`` scorer (name ``nb201``), reading what ``benchmark()`` opens."""
    return TableSource(name="nb201", check=functools.partial(check_recipe, benchmark=benchmark),
                       score=functools.partial(lookup_score, benchmark=benchmark),
                       description="NAS-Bench-201 / NATS-Bench topology benchmark: CIFAR-10, CIFAR-100, "
                                   "ImageNet16-120 at 200 epochs")


@hookimpl
def selbench_register_scorers(register) -> None:
    register(make_lookup_scorer())


@hookimpl
def selbench_register_table_sources(register) -> None:
    register(make_table_source())
