"""Training observers: what a step hands them (against autograd), that watching changes nothing
(bit for bit), the one-transfer record helper, and the cost observer's record in supernet.json."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import selbench
from conftest import tiny_data, tiny_supernet
from selbench.core.tensors import to_host
from selbench.plugin.lookup import training_observers
from selbench.plugins.cost_sign import COST_OBSERVER
from selbench.recipes.recipe import Recipe
from selbench.train.driver import train_supernet
from selbench.train.loop import arch_step_for, search_epoch
from selbench.train.observers import ObserverSet

pytestmark = pytest.mark.usefixtures("one_thread")

MODES = ("single-level", "bilevel-1st", "bilevel-2nd", "frozen-alpha")


class Spy:
    """A step observer that keeps copies of everything it is handed."""

    def __init__(self, needs_gradients: bool = True):
        self.needs_gradients = needs_gradients
        self.steps = []

    def step(self, split, weights, grads):
        self.steps.append((split, {c: w.clone() for c, w in weights.items()},
                           None if grads is None else {c: g.clone() for c, g in grads.items()}))


def optimizers(supernet, mode):
    w_optimizer = torch.optim.SGD(supernet.weight_parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    a_optimizer = None if mode == "frozen-alpha" else torch.optim.Adam(supernet.arch_parameters(), lr=0.05,
                                                                       betas=(0.5, 0.999), weight_decay=1e-3)
    return w_optimizer, a_optimizer


def run_steps(supernet, mode, train, valid, observer=None):
    w_optimizer, a_optimizer = optimizers(supernet, mode)
    arch_step = arch_step_for(mode, supernet, w_optimizer=w_optimizer, a_optimizer=a_optimizer, observer=observer)
    return search_epoch(supernet, train, lambda: valid, w_optimizer=w_optimizer, a_optimizer=a_optimizer, mode=mode,
                        arch_step=arch_step, observer=observer)


def split_batches(data, split):
    return list(data.batches(split))


def mixing_gradient(supernet, weights, images, labels, theta=None):
    """∂L/∂m at mixing weights ``weights`` by autograd on explicit leaves (θ replaced by ``theta`` when given)."""
    leaves = {c: w.detach().clone().requires_grad_() for c, w in weights.items()}
    if theta is None:
        logits = supernet(images, leaves)
    else:
        buffers = {name: b.clone() for name, b in supernet.named_buffers()}
        logits = functional_call(supernet, {**theta, **buffers}, (images, leaves))
    grads = torch.autograd.grad(F.cross_entropy(logits, labels), list(leaves.values()))
    return dict(zip(leaves, grads))


def softmax_alphas(supernet):
    return {c: F.softmax(a.detach(), dim=-1) for c, a in supernet.alphas.items()}


def double_supernet_and_batches():
    """A float64 tiny supernet with one training and one validation batch (float64 for tight gradient checks)."""
    supernet = tiny_supernet(C=2, layers=3, steps=2).double()
    data = tiny_data(n=8, batch_size=8)
    (x, y), = [(a.double(), b) for a, b in split_batches(data, "train")]
    (xv, yv), = [(a.double(), b) for a, b in split_batches(data, "valid")]
    return supernet, (x, y), (xv, yv)


@pytest.mark.parametrize("mode", ["single-level", "bilevel-1st", "frozen-alpha"])
def test_a_step_hands_over_its_weights_and_the_autograd_gradient(mode):
    supernet, (x, y), (xv, yv) = double_supernet_and_batches()
    before = copy.deepcopy(supernet)
    spy = Spy()
    run_steps(supernet, mode, [(x, y)], [(xv, yv)], spy)

    # a bi-level step: α steps on the valid batch at (θ0, α0), then θ on the train batch at (θ0, α1)
    expected = ([("valid", softmax_alphas(before), (xv, yv))] if mode == "bilevel-1st" else []) + [
        ("train", softmax_alphas(supernet if mode == "bilevel-1st" else before), (x, y))]
    assert [split for split, _, _ in spy.steps] == [split for split, _, _ in expected]
    for (split, weights, grads), (_, exp_weights, batch) in zip(spy.steps, expected):
        exp_grads = mixing_gradient(copy.deepcopy(before), exp_weights, *batch)
        for c in weights:
            assert torch.equal(weights[c], exp_weights[c]), f"{mode} {split} {c}: weights"
            assert grads[c].abs().max() > 1e-6, "the check needs gradients that are not all zero"
            torch.testing.assert_close(grads[c], exp_grads[c], rtol=1e-10, atol=1e-12)


def test_the_second_order_step_hands_over_the_validation_gradient_at_the_unrolled_weights():
    supernet, (x, y), (xv, yv) = double_supernet_and_batches()
    before = copy.deepcopy(supernet)
    spy = Spy()
    run_steps(supernet, "bilevel-2nd", [(x, y)], [(xv, yv)], spy)
    assert [split for split, _, _ in spy.steps] == ["valid", "train"]

    # w' = w − ξ(∇_w L_train + λw): SGD's first step (no momentum buffer yet), ξ = 0.05, λ = 3e-4
    named = [(n, p) for n, p in before.named_parameters() if not n.startswith("alphas.")]
    grads = torch.autograd.grad(F.cross_entropy(before(x), y), [p for _, p in named], allow_unused=True)
    w_prime = {n: (p - 0.05 * ((g if g is not None else 0) + 3e-4 * p)).detach() for (n, p), g in zip(named, grads)}
    _, weights, observed = spy.steps[0]
    exp_weights = softmax_alphas(before)
    exp_grads = mixing_gradient(before, exp_weights, xv, yv, theta=w_prime)
    for c in weights:
        assert torch.equal(weights[c], exp_weights[c])
        assert observed[c].abs().max() > 1e-6
        torch.testing.assert_close(observed[c], exp_grads[c], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("mode, needs_gradients", [(mode, True) for mode in MODES] + [("bilevel-1st", False)])
def test_watching_changes_nothing_bit_for_bit(mode, needs_gradients):
    data = tiny_data(n=8, batch_size=4)
    train, valid = split_batches(data, "train"), split_batches(data, "valid")
    plain, watched = tiny_supernet(C=2, layers=3, steps=2), tiny_supernet(C=2, layers=3, steps=2)
    plain_metrics = run_steps(plain, mode, train, valid)
    spy = Spy(needs_gradients)
    watched_metrics = run_steps(watched, mode, train, valid, spy)

    assert len(spy.steps) == len(train) * (2 if mode.startswith("bilevel") else 1)
    assert all((grads is not None) == needs_gradients for _, _, grads in spy.steps)
    expected, got = plain.state_dict(), watched.state_dict()
    assert expected.keys() == got.keys()
    changed = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not changed, f"{mode}: watching changed {changed[:5]}"
    assert all(torch.equal(plain_metrics[k], watched_metrics[k]) for k in plain_metrics)
    if mode != "frozen-alpha":  # the comparison can fail: α did move
        assert not torch.equal(plain.alphas["normal"], tiny_supernet(C=2, layers=3, steps=2).alphas["normal"])


def test_an_observer_cannot_be_combined_with_custom_mixing_weights():
    supernet = tiny_supernet(C=2, layers=3, steps=2)
    w_optimizer, _ = optimizers(supernet, "frozen-alpha")
    with pytest.raises(ValueError, match="custom mixing weights"):
        search_epoch(supernet, [], None, w_optimizer=w_optimizer, mode="frozen-alpha",
                     weights_fn=lambda: softmax_alphas(supernet), observer=Spy())


def test_to_host_converts_every_tensor_and_keeps_the_rest():
    tree = {"a": torch.tensor(0.25), "b": [torch.arange(6, dtype=torch.float32).view(2, 3), "text", 3],
            "c": {"d": torch.tensor([1.5, -2.0], dtype=torch.float64), "e": None, "f": torch.tensor(7)},
            "g": (torch.zeros(0),)}
    assert to_host(tree) == {"a": 0.25, "b": [[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], "text", 3],
                             "c": {"d": [1.5, -2.0], "e": None, "f": 7.0}, "g": [[]]}
    assert to_host({"x": 1, "y": ["z"]}) == {"x": 1, "y": ["z"]}


def test_observer_sets_reject_duplicate_names_and_restart_every_epoch():
    space = selbench.get_space("darts")
    with pytest.raises(ValueError, match="cost-sign"):
        ObserverSet([COST_OBSERVER, COST_OBSERVER], space)
    watching = ObserverSet([COST_OBSERVER], space)
    weights = {c: torch.full((space.num_edges, len(space.ops)), 0.5) for c in space.cell_types}
    for epoch in range(2):
        watching.start_epoch()
        for _ in range(epoch + 1):
            watching.step("train", weights, weights)
        assert watching.end_epoch()["cost-sign"]["steps"] == {"train": epoch + 1}


def test_the_cost_observer_is_registered_by_the_cost_sign_plugin():
    assert COST_OBSERVER in training_observers()


MICRO = {
    "name": "micro",
    "supernet": {"space": "darts", "C": 2, "layers": 3, "steps": 2},
    "data": {"dataset": "digits", "subset": 32, "batch_size": 8},
    "search": {"epochs": 2, "lr": 0.05, "arch_lr": 0.01},
}


def spy_observer(log):
    """A registered-style observer whose epochs log every step, and report their step count as a tensor."""

    class EpochSpy(Spy):
        def __init__(self, space):
            super().__init__()
            log.append(self.steps)

        def result(self):
            return {"steps": torch.tensor(len(self.steps))}

    return selbench.TrainingObserver(name="spy", new_epoch=EpochSpy, needs_gradients=True)


@pytest.mark.parametrize("mode, splits", [("bilevel-1st", ["train", "valid"]), ("single-level", ["train"])])
def test_the_record_holds_the_mean_per_step_cost_of_every_split(tmp_path, mode, splits):
    recipe = Recipe.from_dict({**MICRO, "search": {**MICRO["search"], "mode": mode}})
    log = []
    train_supernet(recipe, seed=0, out_dir=tmp_path, progress=False, observers=[COST_OBSERVER, spy_observer(log)])
    record = json.loads((tmp_path / "supernet.json").read_text())
    ops = record["space"]["ops"]
    assert ops[0] == "none" and len(record["space"]["edges"]) == 5 and record["space"]["num_input_nodes"] == 2
    assert len(log) == len(record["epochs"]) == 2
    for entry, steps in zip(record["epochs"], log):
        costs = entry["observers"]["cost-sign"]
        assert entry["observers"]["spy"] == {"steps": len(steps)}
        assert sorted(costs["mean_cost"]) == splits
        for split in splits:
            split_steps = [(w, g) for s, w, g in steps if s == split]
            assert costs["steps"][split] == len(split_steps) == 2  # 16 training / validation images, batches of 8
            for cell_type in ("normal", "reduce"):
                per_step = torch.stack([g[cell_type] * w[cell_type] for w, g in split_steps]).double()
                per_step[:, :, 0] = 0.0  # `none`
                recorded = torch.tensor(costs["mean_cost"][split][cell_type], dtype=torch.float64)
                assert recorded.shape == (5, len(ops)) and recorded[:, 1:].abs().max() > 0
                torch.testing.assert_close(recorded, per_step.mean(0), rtol=1e-5, atol=1e-9)
