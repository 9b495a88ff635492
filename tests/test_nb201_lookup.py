"""The nb201-lookup scorer: the query it makes, the score it returns, its errors, and the real API when present.

Most tests use :class:`StandInBenchmark`, a small object with the query interface of the
benchmark APIs and a handful of made-up entries.  It is a stand-in, not NAS-Bench-201: its
numbers are invented for the tests.  The last tests use the real API package and benchmark
file when both are installed, and are skipped otherwise.
"""
from __future__ import annotations

import importlib.util
import inspect
import statistics
import sys

import pytest
from test_nb201 import BEST_CIFAR10, REFERENCE_EXAMPLE, hand_parameter_count

import selbench
from selbench import Genotype, SelbenchError
from selbench.plugins import nb201_lookup
from selbench.plugins.nb201_lookup import BENCHMARK_ENV, make_lookup_scorer
from selbench.retrain.scoring import score_genotype

ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


class StandInBenchmark:
    """A STAND-IN for the NAS-Bench-201 / NATS-Bench topology API (same two query methods), with invented numbers.

    ``entries`` maps a cell string to ``{dataset: {hp: per-seed test accuracies in percent}}``;
    every call to ``get_more_info`` is recorded in ``calls``.
    """

    def __init__(self, entries):
        self.cells = list(entries)
        self.entries = entries
        self.calls = []

    def query_index_by_arch(self, arch):
        return self.cells.index(arch) if arch in self.cells else -1

    def get_more_info(self, index, dataset, iepoch=None, hp="12", is_random=True):
        self.calls.append(dict(index=index, dataset=dataset, iepoch=iepoch, hp=hp, is_random=is_random))
        per_seed = self.entries[self.cells[index]][dataset][hp]
        accuracy = per_seed[0] if is_random is True else statistics.mean(per_seed)
        return {"test-accuracy": accuracy, "test-loss": 0.3, "train-accuracy": 99.9}


STAND_IN_ENTRIES = {
    ALL_SKIP: {"cifar10": {"200": [10.0, 12.0, 11.0], "12": [10.0]}},
    REFERENCE_EXAMPLE: {"cifar10": {"200": [93.5, 94.25, 93.75], "12": [80.0]},
                        "cifar100": {"200": [70.0, 71.5], "12": [40.0]},
                        "ImageNet16-120": {"200": [44.0, 45.0, 46.5], "12": [20.0]}},
}


@pytest.fixture
def stand_in():
    return StandInBenchmark(STAND_IN_ENTRIES)


def score(scorer, genotype_text, recipe, tmp_path):
    return score_genotype(scorer, Genotype.parse(genotype_text), recipe, seed=0, device="cpu", out_dir=tmp_path)


@pytest.mark.parametrize("dataset, benchmark_name, classes, side", [
    ("cifar10", "cifar10", 10, 32), ("cifar100", "cifar100", 100, 32),
    ("imagenet16-120", "ImageNet16-120", 120, 16)])
def test_lookup_reports_the_200_epoch_test_accuracy_averaged_over_seeds(stand_in, tmp_path, dataset,
                                                                       benchmark_name, classes, side):
    recipe = selbench.load_recipe("nb201-cifar10", [f"data.dataset={dataset}"])
    result = score(make_lookup_scorer(lambda: stand_in), REFERENCE_EXAMPLE, recipe, tmp_path)

    seeds = STAND_IN_ENTRIES[REFERENCE_EXAMPLE][benchmark_name]["200"]
    assert result["test_accuracy"] == pytest.approx(sum(seeds) / len(seeds) / 100)
    assert stand_in.calls == [dict(index=1, dataset=benchmark_name, iepoch=None, hp="200", is_random=False)]
    # the benchmark's network: C = 16, N = 5, counted by hand in test_nb201
    assert result["params_m"] == pytest.approx(hand_parameter_count(Genotype.parse(REFERENCE_EXAMPLE), 16, 5, 3,
                                                                    classes) / 1e6)
    if dataset == "cifar10":
        assert result["params_m"] == pytest.approx(1.073466)
    assert result["macs_m"] > 0 and result["artifacts"] == [] and result["device"] == "lookup"
    assert (result["epochs"], result["benchmark_dataset"], result["benchmark_index"]) == (200, benchmark_name, 1)
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written


def test_macs_scale_with_the_image_side_of_the_benchmark_dataset(stand_in, tmp_path):
    """Every op of the network is convolutional up to the classifier, so 16×16 images cost about a quarter."""
    scorer = make_lookup_scorer(lambda: stand_in)
    cifar = score(scorer, REFERENCE_EXAMPLE, selbench.load_recipe("nb201-cifar10"), tmp_path / "a")
    imagenet16 = score(scorer, REFERENCE_EXAMPLE,
                       selbench.load_recipe("nb201-cifar10", ["data.dataset=imagenet16-120"]), tmp_path / "b")
    classifier_macs_m = (64 * 10, 64 * 120)
    assert (imagenet16["macs_m"] - classifier_macs_m[1] / 1e6) * 4 == pytest.approx(
        cifar["macs_m"] - classifier_macs_m[0] / 1e6)


def test_datasets_and_spaces_outside_the_benchmark_are_clear_errors(stand_in, tmp_path):
    scorer = make_lookup_scorer(lambda: stand_in)
    with pytest.raises(SelbenchError, match=r"uses the digits dataset, which NAS-Bench-201 does not cover; "
                                            r"it has cifar10, cifar100, imagenet16-120"):
        score(scorer, REFERENCE_EXAMPLE, selbench.load_recipe("nb201-demo"), tmp_path)
    with pytest.raises(SelbenchError, match="searches the darts space; this scorer only knows nb201 cells"):
        score(scorer, REFERENCE_EXAMPLE, selbench.load_recipe("darts-cifar10"), tmp_path)
    with pytest.raises(SelbenchError, match=r"the benchmark has no entry for \|nor_conv_3x3~0\|"):
        score(scorer, BEST_CIFAR10, selbench.load_recipe("nb201-cifar10"), tmp_path)
    assert stand_in.calls == []


def test_the_lookup_is_the_nb201_source_of_the_table_scorer(stand_in, tmp_path):
    source = nb201_lookup.make_table_source(lambda: stand_in)
    recipe = selbench.load_recipe("nb201-cifar10")
    source.check(recipe)
    scored = score(make_lookup_scorer(lambda: stand_in), REFERENCE_EXAMPLE, recipe, tmp_path)
    assert source.score(Genotype.parse(REFERENCE_EXAMPLE), recipe) == {**scored, "seconds": pytest.approx(0, abs=1)}
    with pytest.raises(SelbenchError, match="searches cells with 2 nodes; NAS-Bench-201's have 3"):
        source.check(selbench.load_recipe("nb201-cifar10", ["supernet.steps=2"]))
    assert [s.name for s in selbench.plugin_host().registrations("table source").values()
            if s.plugin == "nb201-lookup"] == ["nb201"]


def test_registered_scorer_without_a_benchmark_says_what_to_install_and_where(monkeypatch, tmp_path):
    assert "nb201-lookup" in selbench.list_scorers()
    registered = selbench.get_scorer("nb201-lookup")
    recipe = selbench.load_recipe("nb201-cifar10")
    monkeypatch.delenv(BENCHMARK_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    with pytest.raises(SelbenchError) as exc:
        score(registered, REFERENCE_EXAMPLE, recipe, tmp_path / "out")
    message = str(exc.value)
    assert "\n" not in message and "pip install nats_bench" in message and BENCHMARK_ENV in message
    assert f"no NAS-Bench-201 benchmark in {tmp_path / 'empty-torch-home'}" in message

    monkeypatch.setenv(BENCHMARK_ENV, str(tmp_path / "moved.pth"))
    with pytest.raises(SelbenchError, match=f"{BENCHMARK_ENV} points to .*moved.pth, which does not exist; "
                                            "pip install nats_bench"):
        score(registered, REFERENCE_EXAMPLE, recipe, tmp_path / "out")


@pytest.mark.parametrize("name, package, pip_name", [
    ("NATS-tss-v1_0-3ffb9-simple", "nats_bench", "nats_bench"),
    ("NAS-Bench-201-v1_1-096897.pth", "nas_201_api", "nas-bench-201")])
def test_a_benchmark_without_its_api_package_says_what_to_pip_install(monkeypatch, tmp_path, name, package,
                                                                     pip_name):
    (tmp_path / name).mkdir()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # found as a default file
    monkeypatch.delenv(BENCHMARK_ENV, raising=False)
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` fail, installed or not
    with pytest.raises(SelbenchError, match=f"reading {name} needs the {package} package: pip install {pip_name}$"):
        score(selbench.get_scorer("nb201-lookup"), REFERENCE_EXAMPLE, selbench.load_recipe("nb201-cifar10"),
              tmp_path / "out")


def test_the_cli_takes_a_scorer_and_refuses_unknown_ones(tmp_path, capsys):
    from selbench.cli import main

    code = main(["run", "nb201-demo", "--runs", str(tmp_path), "--scorer", "nope", "--quiet"])
    assert code == 2 and "unknown scorer 'nope'; registered scorers: nb201-lookup, retrain" in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.pt"))  # refused before any training


@pytest.mark.parametrize("recipe_name, problem", [
    ("nb201-demo", "uses the digits dataset, which NAS-Bench-201 does not cover"),
    ("demo", "searches the darts space; this scorer only knows nb201 cells")])
def test_the_grid_refuses_a_recipe_the_lookup_cannot_score_before_any_training(tmp_path, capsys, recipe_name,
                                                                              problem):
    from selbench.cli import main

    code = main(["run", recipe_name, "--runs", str(tmp_path), "--scorer", "nb201-lookup", "--quiet"])
    assert code == 2 and problem in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.pt"))


def test_the_grid_opens_the_benchmark_before_any_training(monkeypatch, tmp_path, capsys):
    from selbench.cli import main

    monkeypatch.delenv(BENCHMARK_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    recipe = tmp_path / "nb201-digits-as-cifar10.toml"  # a recipe the scorer accepts, without its benchmark
    recipe.write_text('[supernet]\nspace = "nb201"\n[data]\ndataset = "cifar10"\n[search]\n[retrain]\n')
    code = main(["run", str(recipe), "--runs", str(tmp_path / "runs"), "--scorer", "nb201-lookup", "--quiet"])
    assert code == 2 and "no NAS-Bench-201 benchmark in" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))


# -- the real benchmark API --------------------------------------------------------------------------
REAL_APIS = [package for package in ("nats_bench", "nas_201_api") if importlib.util.find_spec(package)]


@pytest.mark.skipif(not REAL_APIS, reason="neither nats_bench nor nas_201_api is installed (pip install nats_bench)")
def test_the_stand_in_has_the_query_interface_of_the_real_apis():
    for package in REAL_APIS:
        module = importlib.import_module(package)
        api_class = module.NATStopology if package == "nats_bench" else module.NASBench201API
        for method in ("query_index_by_arch", "get_more_info"):
            real = list(inspect.signature(getattr(api_class, method)).parameters)
            assert real == list(inspect.signature(getattr(StandInBenchmark, method)).parameters), (package, method)


def real_benchmark_or_skip():
    if not REAL_APIS:
        pytest.skip("neither nats_bench nor nas_201_api is installed (pip install nats_bench)")
    try:
        path = nb201_lookup.locate_benchmark()
    except SelbenchError as exc:
        pytest.skip(f"no benchmark file: {exc}")
    if nb201_lookup.api_package(path) not in REAL_APIS:
        pytest.skip(f"{path.name} needs {nb201_lookup.api_package(path)}, which is not installed")
    return nb201_lookup.open_benchmark(path)


def test_the_real_benchmark_scores_the_best_cifar10_cell(tmp_path):
    api = real_benchmark_or_skip()
    result = score(selbench.get_scorer("nb201-lookup"), BEST_CIFAR10, selbench.load_recipe("nb201-cifar10"), tmp_path)
    assert 0.93 < result["test_accuracy"] < 0.95  # the paper's best CIFAR-10 cell: 94.37 %
    cost = api.get_cost_info(result["benchmark_index"], "cifar10", hp="200")
    assert result["params_m"] == pytest.approx(cost["params"], abs=1e-3)  # our network is the benchmark's
