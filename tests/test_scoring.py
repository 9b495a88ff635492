"""The scorer contract: registration through the hook, validation of what a scorer returns."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import selbench
from darts_reference import DARTS_TEXT
from selbench import Genotype, PluginError, PluginHost, Scorer, hookimpl
from selbench.retrain.scoring import score_genotype, validate_score

GENOTYPE = Genotype.parse(DARTS_TEXT["DARTS_V2"])


def fake_retrain(ctx):
    (ctx.out_dir / "weights.pt").write_bytes(b"w")
    return {"test_accuracy": 0.75, "params_m": 1.5, "seconds": 2.0, "device": str(ctx.device), "seed": ctx.seed,
            "recipe": ctx.recipe, "cells": len(ctx.genotype.cell_types), "artifacts": ["weights.pt"]}


@pytest.fixture
def host():
    register_scorers = hookimpl(lambda register: register(Scorer("fake", fake_retrain)))
    plugin = SimpleNamespace(selbench_register_scorers=register_scorers)
    selbench.use_plugin_host(PluginHost([("fake-plugin", plugin)], entry_points=False))
    yield
    selbench.use_plugin_host(None)


def test_registered_scorer_is_found_and_called(host, tmp_path):
    assert selbench.list_scorers() == ["fake"]
    assert selbench.get_scorer("fake").score is fake_retrain
    result = score_genotype("fake", GENOTYPE, "demo", seed=3, device="cpu", out_dir=tmp_path / "unit")
    assert result == {"test_accuracy": 0.75, "params_m": 1.5, "seconds": 2.0, "device": "cpu", "seed": 3,
                      "recipe": "demo", "cells": 2, "artifacts": ["weights.pt"]}
    with pytest.raises(selbench.SelbenchError, match="unknown scorer 'retrain'; registered scorers: fake"):
        selbench.get_scorer("retrain")


@pytest.mark.parametrize("result, complaint", [
    ([0.5], "a list"),
    ({}, "test_accuracy=None"),
    ({"test_accuracy": 97.3}, "test_accuracy=97.3; expected a fraction in \\[0, 1\\]"),
    ({"test_accuracy": float("nan")}, "test_accuracy=nan"),
    ({"test_accuracy": True}, "test_accuracy=True"),
    ({"test_accuracy": 0.5, "params_m": -1}, "params_m=-1"),
    ({"test_accuracy": 0.5, "seconds": "long"}, "seconds='long'"),
    ({"test_accuracy": 0.5, "artifacts": "weights.pt"}, "artifacts='weights.pt'"),
])
def test_contract_violations_name_the_scorer(result, complaint):
    with pytest.raises(PluginError, match=f"^scorer 'bad' returned {complaint}"):
        validate_score("bad", result)


def test_listed_artifact_must_exist(tmp_path):
    liar = Scorer("liar", lambda ctx: {"test_accuracy": 0.5, "artifacts": ["model.pt"]})
    with pytest.raises(PluginError, match="listed artifacts \\['model.pt'\\]"):
        score_genotype(liar, GENOTYPE, None, seed=0, device=torch.device("cpu"), out_dir=tmp_path)
