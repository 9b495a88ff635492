"""CUDA graphs of the training steps (``graphs = "on"``): the recipe key, and the eager fallback off CUDA."""
from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

import selbench
from selbench.core.errors import SelbenchError
from selbench.retrain.training import train_epoch
from selbench.testing import tiny_data, tiny_supernet
from selbench.train import graphs
from selbench.train.graphs import GraphedStep
from selbench.train.loop import UNUSED_ALPHA_MODES, search_epoch

GRAPHED_MODES = ("single-level", "bilevel-1st", "frozen-alpha")


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each test sees the once-per-process warnings afresh."""
    monkeypatch.setattr(graphs, "_warned", set())


def _search(mode: str, device: str, use_graphs: bool, epochs: int = 2) -> torch.nn.Module:
    supernet = tiny_supernet("darts").to(device)
    data = tiny_data(n=40, batch_size=8)  # 5 batches: 3 warm-up steps, a capture, a replay
    w_optimizer = torch.optim.SGD(supernet.weight_parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    a_optimizer = None if mode in UNUSED_ALPHA_MODES else torch.optim.Adam(supernet.arch_parameters(), lr=3e-3)
    for _ in range(epochs):
        search_epoch(supernet, _on(data.batches("train"), device), lambda: _on(data.batches("valid"), device),
                     w_optimizer=w_optimizer, a_optimizer=a_optimizer, mode=mode, graphs=use_graphs)
    return supernet


def _on(batches, device):
    return ((images.to(device), labels.to(device)) for images, labels in batches)


def nb201_network(device: str = "cpu", **sgd: Any) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A small NAS-Bench-201 cell network for 8×8 single-channel images, seeded, and its SGD."""
    torch.manual_seed(0)
    network = selbench.get_space("nb201").build_network(
        selbench.Genotype.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|"
                                "avg_pool_3x3~2|"), C=4, N=1, num_classes=10, in_channels=1).to(device)
    return network, torch.optim.SGD(network.parameters(), **{"lr": 0.05, "momentum": 0.9, "weight_decay": 3e-4, **sgd})


def _retrain(device: str, use_graphs: bool) -> torch.nn.Module:
    network, optimizer = nb201_network(device)
    data = tiny_data(n=44, batch_size=8)  # 5 full batches and a smaller last one
    for _ in range(2):
        train_epoch(network, _on(data.batches("train"), device), optimizer, auxiliary_weight=0.4, grad_clip=5.0,
                    graphs=use_graphs)
    return network


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module, **tolerance) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        if tolerance:
            torch.testing.assert_close(x, y, **tolerance, msg=name)
        else:
            assert torch.equal(x, y), name


@pytest.mark.parametrize("mode", GRAPHED_MODES)
def test_search_graphs_fall_back_to_the_eager_step_bit_for_bit_on_the_cpu(mode, caplog):
    with caplog.at_level(logging.WARNING, logger=graphs.__name__):
        graphed = _search(mode, "cpu", use_graphs=True)
    _assert_same_state(graphed, _search(mode, "cpu", use_graphs=False))
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["search.graphs = on: CUDA graphs need a CUDA device, not cpu; these steps run eagerly"]


def test_retrain_graphs_fall_back_to_the_eager_step_bit_for_bit_on_the_cpu(caplog):
    with caplog.at_level(logging.WARNING, logger=graphs.__name__):
        graphed = _retrain("cpu", use_graphs=True)
    _assert_same_state(graphed, _retrain("cpu", use_graphs=False))
    assert [r.getMessage() for r in caplog.records] == [
        "retrain.graphs = on: CUDA graphs need a CUDA device, not cpu; these steps run eagerly"]


def test_uncapturable_modes_say_once_that_they_run_eagerly(caplog):
    with caplog.at_level(logging.WARNING, logger=graphs.__name__):
        _search("bilevel-2nd", "cpu", use_graphs=True)
    assert [r.getMessage() for r in caplog.records] == [
        "search.graphs = on: search mode bilevel-2nd is not captured; these steps run eagerly"]


def test_graphs_off_runs_the_step_as_is_and_says_nothing(caplog):
    calls = []
    run = GraphedStep(lambda x: calls.append(x) or (x,), optimizers=[], enabled=False, where="search.graphs")
    with caplog.at_level(logging.WARNING, logger=graphs.__name__):
        outputs = run(torch.ones(2))
    assert len(calls) == 1 and torch.equal(outputs[0], torch.ones(2)) and not caplog.records


def test_graphs_is_an_optional_recipe_key_that_keeps_config_hashes():
    recipe = selbench.load_recipe("demo")
    assert "graphs" not in recipe.search and "graphs" not in recipe.retrain
    assert recipe.retrain_training()["graphs"] == "off"
    on = selbench.load_recipe("demo", ["search.graphs=on", "retrain.graphs=on"])
    assert on.search["graphs"] == "on" and on.retrain_training()["graphs"] == "on"
    assert on.config_hash("search") != recipe.config_hash("search")
    off = selbench.load_recipe("demo", ["search.graphs=off", "retrain.graphs=off"])
    assert off.config_hash() == recipe.config_hash()
    for key in ("search.graphs", "retrain.graphs"):
        with pytest.raises(SelbenchError, match=f"{key} = 'yes' is not one of off, on"):
            selbench.load_recipe("demo", [f"{key}=yes"])


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("mode", GRAPHED_MODES)
def test_search_graphs_on_cuda_capture_and_match_the_eager_steps(mode, caplog):
    with caplog.at_level(logging.WARNING, logger=graphs.__name__):
        graphed = _search(mode, "cuda", use_graphs=True)
    assert not caplog.records, [r.getMessage() for r in caplog.records]  # captured, no fallback
    _assert_same_state(graphed, _search(mode, "cuda", use_graphs=False), rtol=1e-4, atol=1e-5)


@cuda
def test_retrain_graphs_on_cuda_capture_and_match_the_eager_steps(caplog):
    with caplog.at_level(logging.WARNING, logger=graphs.__name__):
        graphed = _retrain("cuda", use_graphs=True)
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    _assert_same_state(graphed, _retrain("cuda", use_graphs=False), rtol=1e-4, atol=1e-5)
