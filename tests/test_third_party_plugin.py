"""examples/selbench-random, installed with pip like any third-party plugin, is found with no change to selbench."""
from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from itertools import combinations
from pathlib import Path

import pytest
from scipy.stats import chisquare

import selbench

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "selbench-random"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example distribution pip-installed into a fresh target folder (built from a copy of its sources)."""
    root = tmp_path_factory.mktemp("third-party")
    source = root / "source"
    shutil.copytree(EXAMPLE, source)
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", "--target", str(target), str(source)], check=True, cwd=root, timeout=300)
    return target


def run_with(target: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "SELBENCH_DISABLE_PLUGINS"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), environment.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, *args], cwd=target.parent, env=environment, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def load_module(target: Path):
    """The installed plugin module, imported from its file without touching sys.path."""
    spec = importlib.util.spec_from_file_location("selbench_random_under_test", target / "selbench_random.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_not_there_without_the_install():
    assert "random" not in selbench.list_selectors()


def test_selbench_plugins_lists_the_installed_distribution(installed):
    listing = run_with(installed, "-m", "selbench.cli", "plugins").stdout
    rows = {line.split()[0]: line.split()[1:] for line in listing.splitlines()[2:] if line.strip()}
    assert rows["random"] == ["selbench-random", "0.1.0", "selector", "random"]


SCRIPT = """
import json, selbench
supernet = selbench.get_space("darts").build_supernet(C=2, layers=2, num_classes=3, in_channels=1)
cells = [str(selbench.select(supernet, "random", seed=seed).genotype) for seed in (0, 0, 1, 2, 3)]
record = selbench.select(supernet, "random", seed=0)
print(json.dumps({"selectors": selbench.list_selectors(), "cells": cells,
                  "distribution": record.distribution, "version": record.version}))
"""


def test_random_selector_is_registered_and_seeded(installed):
    report = json.loads(run_with(installed, "-c", SCRIPT).stdout)
    assert "random" in report["selectors"] and "alpha-magnitude" in report["selectors"]
    assert (report["distribution"], report["version"]) == ("selbench-random", "0.1.0")
    cells = [selbench.Genotype.parse(text) for text in report["cells"]]
    assert cells[0] == cells[1]  # the same seed gives the same cell
    assert len(set(cells[1:])) > 1  # other seeds give other cells
    space = selbench.get_space("darts")
    for cell in cells:
        cell.validate(space)
    # what the subprocess drew is exactly the documented sampler fed with random.Random(seed)
    module = load_module(installed)
    assert cells[2] == module.sample_genotype(space, random.Random(1))


def test_the_example_passes_its_own_tests(installed):
    """The example's tests (selbench.testing's fixtures and checks) pass against the installed distribution."""
    tests = installed.parent / "source" / "tests"
    summary = run_with(installed, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)).stdout.splitlines()[-1]
    assert re.match(r"\d+ passed", summary) and "skipped" not in summary, summary


def test_sampler_is_uniform_over_inputs_and_ops(installed):
    module = load_module(installed)
    space = selbench.get_space("darts")
    draws = [module.sample_genotype(space, random.Random(seed)) for seed in range(3000)]
    last_node = [tuple(sorted(src for _, src in g["reduce"].nodes[3])) for g in draws]
    pairs = Counter(last_node)
    assert set(pairs) == set(combinations(range(5), 2))  # node 5: 10 possible input pairs
    assert chisquare([pairs[p] for p in sorted(pairs)]).pvalue > 1e-3
    ops = Counter(op for g in draws for op, _ in g["normal"].pairs)
    assert set(ops) == set(space.ops) - {"none"}
    assert chisquare(list(ops.values())).pvalue > 1e-3
