"""SelectionContext as DARTS-PT's fine-tuning sees it: optimiser state, recipe settings, augmented passes."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import selbench
from conftest import tiny_data, tiny_supernet
from selbench import SelectionContext, TensorData
from selbench.data.loading import load_data
from selbench.select.context import finetune_settings

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


def context(supernet, data, seed: int = 0, **kwargs) -> SelectionContext:
    return SelectionContext(supernet, options={}, seed=seed, device=CPU, data=data, selector="test", **kwargs)


def test_theta_momentum_carries_over_from_one_finetune_call_to_the_next():
    supernet = tiny_supernet(layers=1, steps=2, C=2)
    data = tiny_data(n=16, batch_size=16)  # one batch per pass
    expected = copy.deepcopy(supernet)
    ctx = context(supernet, data)
    ctx.finetune(1, train_alphas=False)
    ctx.finetune(1, train_alphas=False)

    # the same two steps by hand, with one SGD kept across them (DARTS-PT's lr = 0.025 / 10)
    theta = list(expected.weight_parameters())
    sgd = torch.optim.SGD(theta, lr=0.0025, momentum=0.9, weight_decay=3e-4)
    images, labels = next(iter(data.batches("train")))
    for _ in range(2):
        sgd.zero_grad()
        F.cross_entropy(expected(images), labels).backward()
        torch.nn.utils.clip_grad_norm_(theta, 5.0)
        sgd.step()
    for (name, got), want in zip(supernet.named_parameters(), expected.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=name)

    # an SGD made afresh for the second call (momentum lost) ends elsewhere
    restarted = copy.deepcopy(expected)
    fresh = context(restarted, data)
    fresh.finetune(1, train_alphas=False)
    context(restarted, data).finetune(1, train_alphas=False)
    assert not torch.equal(next(restarted.weight_parameters()), next(supernet.weight_parameters()))


def test_alpha_adam_continues_from_the_checkpoints_arch_optimizer_state():
    supernet = tiny_supernet(layers=3, steps=2, C=2)  # a normal cell, then two reduction cells
    data = tiny_data(n=16, batch_size=16)
    search_adam = torch.optim.Adam(supernet.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    for alpha in supernet.arch_parameters():
        alpha.grad = torch.ones_like(alpha)
    for _ in range(3):
        search_adam.step()
    supernet.arch_optimizer_state = search_adam.state_dict()
    ctx = context(supernet, data)
    ctx.finetune(1)
    ctx.finetune(1)
    state = ctx._alpha_optimizer(ctx.finetuning).state_dict()["state"]
    assert [float(state[k]["step"]) for k in (0, 1)] == [5.0, 5.0]  # 3 search steps + 2 fine-tuning steps


def test_finetune_settings_come_from_the_recipe_search_section():
    assert finetune_settings({}) == {"lr": 0.0025, "momentum": 0.9, "weight_decay": 3e-4, "grad_clip": 5.0,
                                     "arch_lr": 3e-4, "arch_beta1": 0.5, "arch_beta2": 0.999,
                                     "arch_weight_decay": 1e-3}
    demo = selbench.load_recipe("demo")
    ctx = context(tiny_supernet(), tiny_data(), search=demo.search)
    assert ctx.finetuning["lr"] == pytest.approx(demo.search["lr"] / 10)
    with pytest.raises(selbench.SelbenchError, match="no setting 'learning_rate'"):
        ctx.finetune(1, learning_rate=0.1)


def labels_and_images(batches) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = list(batches)
    return torch.cat([y for _, y in pairs]), torch.cat([x for x, _ in pairs])


@pytest.mark.parametrize("kind", ["search-data", "tensor-data"])
def test_augmented_passes_differ_pass_to_pass_and_repeat_per_seed(kind):
    if kind == "search-data":
        data = load_data({"dataset": "digits", "subset": 64, "batch_size": 16, "crop_padding": 2, "flip": False},
                         seed=0)
    else:
        plain = tiny_data(n=32, batch_size=16)
        data = TensorData(train=plain.splits["train"], valid=plain.splits["valid"], batch_size=16, crop_padding=2)

    def passes(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        ctx = context(tiny_supernet(), data, seed=seed)
        return [labels_and_images(ctx.batches("valid", augmented=True)) for _ in range(2)]

    (labels_1, images_1), (labels_2, images_2) = passes(seed=3)
    assert not torch.equal(labels_1, labels_2)  # reshuffled
    assert sorted(labels_1.tolist()) == sorted(labels_2.tolist())  # the same images
    assert not torch.equal(images_1, images_2)
    again = passes(seed=3)
    assert all(torch.equal(a, b) for pair, same in zip(passes(seed=3), again) for a, b in zip(pair, same))
    other = passes(seed=4)
    assert not torch.equal(other[0][1], images_1)
    fixed = labels_and_images(context(tiny_supernet(), data).batches("valid"))
    assert torch.equal(fixed[0], labels_and_images(data.batches("valid"))[0])  # the plain pass is untouched


def test_augmented_measurements_need_data_that_can_augment():
    class Plain:
        def batches(self, split):
            return iter(tiny_data().batches(split))

    ctx = context(tiny_supernet(), Plain())
    with pytest.raises(selbench.SelbenchError, match="cannot serve .* no augmented_batches"):
        ctx.evaluate(augmented=True)


@pytest.mark.parametrize("augmented", [True, False])
@pytest.mark.parametrize("bn", ["train", "eval"])
def test_evaluate_each_equals_evaluate_in_turn(augmented, bn):
    """One vectorised pass per batch gives each candidate its own numbers (own batches, own BatchNorm statistics)
    and leaves the random stream where one evaluation per candidate leaves it."""
    plain = tiny_data(n=40, batch_size=16)
    data = TensorData(**plain.splits, batch_size=16, crop_padding=1, flip=True)
    supernet = tiny_supernet(C=2, layers=3, steps=2)
    generator = torch.Generator().manual_seed(0)
    candidates = [{cell_type: F.softmax(3 * torch.randn(alpha.shape, generator=generator), dim=-1)
                   for cell_type, alpha in supernet.alphas.items()} for _ in range(3)]
    one_by_one, together = (context(supernet, data, seed=5) for _ in range(2))
    expected = [one_by_one.evaluate(weights, bn=bn, augmented=augmented, limit=2) for weights in candidates]
    measured = together.evaluate_each(candidates, bn=bn, augmented=augmented, limit=2)
    torch.testing.assert_close(torch.tensor(measured), torch.tensor(expected), rtol=0, atol=1e-5)
    assert len({round(loss, 4) for _, loss in expected}) == len(candidates)  # the candidates differ
    assert together.counters == one_by_one.counters
    after = [labels_and_images(ctx.batches("valid", augmented=True)) for ctx in (one_by_one, together)]
    assert all(torch.equal(a, b) for a, b in zip(*after))
    assert together.evaluate_each([]) == []
