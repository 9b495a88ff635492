"""Recipes and retraining beyond DARTS: [retrain] network keys per space, Nesterov SGD, no clipping, NB201 recipes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_nb201 import REFERENCE_EXAMPLE, hand_parameter_count
from torch import nn

from selbench import Genotype, SelbenchError
from selbench.recipes.recipe import RETRAIN_TRAINING_DEFAULTS, load_recipe
from selbench.retrain.scoring import score_genotype
from selbench.retrain.training import (
    build_retrain_network,
    make_optimizer,
    train_epoch,
)


# -- the shipped NB201 recipes ------------------------------------------------------------------------
def test_nb201_cifar10_searches_as_darts_pt_and_retrains_with_the_benchmark_protocol():
    recipe = load_recipe("nb201-cifar10")
    assert recipe.supernet == {"space": "nb201", "C": 16, "N": 5}
    assert recipe.data["dataset"] == "cifar10" and recipe.data["train_portion"] == 0.5
    assert (recipe.data["crop_padding"], recipe.data["flip"], recipe.data["cutout"]) == (4, True, 0)
    search = recipe.search
    assert (search["mode"], search["epochs"], search["lr"], search["lr_min"], search["weight_decay"]) == \
        ("bilevel-1st", 100, 0.025, 0.001, 3e-4)
    assert (search["arch_lr"], search["arch_weight_decay"], search["grad_clip"]) == (3e-4, 1e-3, 5.0)
    assert recipe.retrain_network() == {"C": 16, "N": 5}
    training = recipe.retrain_training()
    assert (training["epochs"], training["batch_size"], training["lr"], training["lr_min"]) == (200, 256, 0.1, 0.0)
    assert (training["momentum"], training["nesterov"], training["weight_decay"]) == (0.9, True, 5e-4)
    assert (training["grad_clip"], training["cutout"], training["drop_path_prob"]) == (0.0, 0, 0.0)
    assert recipe.retrain_data()["batch_size"] == 256


def test_nb201_demo_builds_its_supernet_and_networks_for_digits():
    recipe = load_recipe("nb201-demo")
    supernet = recipe.build_supernet(num_classes=10, in_channels=1)
    assert tuple(supernet.alphas["cell"].shape) == (6, 5)
    network = build_retrain_network(Genotype.parse(REFERENCE_EXAMPLE), recipe, num_classes=10, in_channels=1)
    logits, auxiliary = network(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 10) and auxiliary is None
    assert set(recipe.selectors) == {"perturbation", "influential-magnitude", "cost-sign"}


# -- [retrain] network keys follow the space's build_network ---------------------------------------
def test_network_keys_are_those_of_the_spaces_build_network(tmp_path):
    partial = tmp_path / "mine.toml"
    partial.write_text('[supernet]\nspace = "nb201"\n[data]\n[search]\n[retrain]\nN = 2\n')
    recipe = load_recipe(partial)
    assert recipe.retrain_network() == {"C": 16, "N": 2}  # C: the space's own default, not DARTS's 36
    assert recipe.retrain_training() == {**RETRAIN_TRAINING_DEFAULTS, "nesterov": False, "graphs": "off",
                                         "precision": "fp32"}
    assert load_recipe("nb201-demo", ["retrain.N=3"]).retrain["N"] == 3
    assert load_recipe("demo").retrain_network() == {"C": 16, "layers": 5, "auxiliary": False}


@pytest.mark.parametrize("recipe, override, message", [
    ("nb201-demo", "retrain.layers=3",
     "unknown key retrain.layers for the nb201 space; valid keys in [retrain]: C, N, "),
    ("demo", "retrain.N=3", "unknown key retrain.N for the darts space; valid keys in [retrain]: C, layers, auxiliary"),
    ("nb201-demo", "retrain.N=0", "retrain.N is a network size and must be >= 1, got 0"),
    ("nb201-demo", "retrain.N=two", "retrain.N"),
    ("nb201-demo", "retrain.grad_clip=-1", "retrain.grad_clip must be >= 0"),
    ("nb201-demo", "retrain.nesterov=maybe", "retrain.nesterov"),
])
def test_bad_retrain_keys_are_one_clear_line(recipe, override, message):
    with pytest.raises(SelbenchError) as exc:
        load_recipe(recipe, [override])
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_nesterov_left_at_its_default_keeps_the_config_hash():
    plain = load_recipe("demo")
    assert "nesterov" not in plain.retrain
    assert load_recipe("demo", ["retrain.nesterov=false"]).config_hash() == plain.config_hash()
    assert load_recipe("demo", ["retrain.nesterov=true"]).config_hash() != plain.config_hash()
    assert load_recipe("demo", ["retrain.nesterov=true"]).retrain_training()["nesterov"] is True


# -- training: Nesterov momentum, clipping off ----------------------------------------------------
class TinyClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        return self.linear(x), None


def one_step(settings, images, labels):
    network = TinyClassifier()
    before = [p.detach().clone() for p in network.parameters()]
    train_epoch(network, [(images, labels)], make_optimizer(network, settings), auxiliary_weight=0.0,
                grad_clip=settings["grad_clip"])
    return network, before


def loss_gradients(images, labels):
    network = TinyClassifier()
    loss = F.cross_entropy(network(images)[0], labels)
    return torch.autograd.grad(loss, list(network.parameters()))


@pytest.mark.parametrize("nesterov", [False, True])
def test_first_sgd_step_matches_the_hand_update(nesterov):
    torch.manual_seed(1)
    images, labels = 30 * torch.randn(8, 4), torch.randint(0, 3, (8,))  # large inputs: a gradient norm well over 1
    settings = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": nesterov, "grad_clip": 0.0}
    network, before = one_step(settings, images, labels)
    gradients = loss_gradients(images, labels)
    assert torch.sqrt(sum(g.square().sum() for g in gradients)) > 1.0
    for p, p0, g in zip(network.parameters(), before, gradients):
        d = g + settings["weight_decay"] * p0
        # first step: the momentum buffer is d itself; Nesterov steps along d + μ·buffer, plain SGD along the buffer
        step = d + settings["momentum"] * d if nesterov else d
        torch.testing.assert_close(p.detach(), p0 - settings["lr"] * step)


def test_grad_clip_zero_means_no_clipping_and_positive_clips():
    torch.manual_seed(1)
    images, labels = 30 * torch.randn(8, 4), torch.randint(0, 3, (8,))
    gradients = loss_gradients(images, labels)
    norm = torch.sqrt(sum(g.square().sum() for g in gradients))
    settings = {"lr": 1.0, "momentum": 0.0, "weight_decay": 0.0, "nesterov": False}
    for clip, scale in ((0.0, 1.0), (0.5, 0.5 / norm)):
        network, before = one_step({**settings, "grad_clip": clip}, images, labels)
        for p, p0, g in zip(network.parameters(), before, gradients):
            torch.testing.assert_close(p.detach(), p0 - g * scale, rtol=1e-4, atol=1e-6)


# -- retraining an NB201 cell end to end ------------------------------------------------------------
def test_retrain_scorer_trains_an_nb201_cell_on_digits(tmp_path):
    recipe = load_recipe("nb201-demo", ["retrain.C=4", "retrain.epochs=1", "data.subset=128"])
    genotype = Genotype.parse(REFERENCE_EXAMPLE)
    result = score_genotype("retrain", genotype, recipe, seed=0, device="cpu", out_dir=tmp_path)
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["epochs"] == 1
    assert result["params_m"] == pytest.approx(hand_parameter_count(genotype, 4, 1, 1, 10) / 1e6)


def test_drop_path_on_a_network_without_it_is_a_clear_error(tmp_path):
    recipe = load_recipe("nb201-demo", ["retrain.C=4", "retrain.drop_path_prob=0.2"])
    with pytest.raises(SelbenchError, match="the nb201 network has no drop path; set retrain.drop_path_prob = 0"):
        score_genotype("retrain", Genotype.parse(REFERENCE_EXAMPLE), recipe, seed=0, device="cpu", out_dir=tmp_path)
