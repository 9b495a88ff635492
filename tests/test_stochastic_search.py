"""Stochastic search modes (snas, dsnas, uniform-sampling): sample distributions, straight-through gradients,
only the sampled ops computed, seeded and resumable training, selectors on the supernets, bad settings."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare

import selbench
from conftest import tiny_data, tiny_supernet
from selbench.cli import main
from selbench.data.loading import load_data
from selbench.recipes.recipe import Recipe
from selbench.train.driver import STATE_FILE, train_supernet
from selbench.train.loop import search_epoch
from selbench.train.sampling import (
    STOCHASTIC_MODES,
    ArchSampler,
    HardSample,
    gumbel_softmax,
    init_stochastic_alphas,
    temperature_at,
)

pytestmark = pytest.mark.usefixtures("one_thread")

MICRO = {
    "name": "micro",
    "supernet": {"space": "darts", "C": 2, "layers": 3, "steps": 2},
    "data": {"dataset": "digits", "subset": 32, "batch_size": 8, "crop_padding": 1, "flip": True, "cutout": 3},
    "search": {"epochs": 2, "lr": 0.05, "arch_lr": 0.01},
}


def micro(mode: str, **search) -> Recipe:
    return Recipe.from_dict({**MICRO, "search": {**MICRO["search"], "mode": mode, **search}})


def checkpoint_tensors(path):
    data = selbench.read_checkpoint(path)
    return {**{f"theta.{k}": v for k, v in data["state_dict"].items()},
            **{f"alpha.{k}": v for k, v in data["alphas"].items()}}


# -- samples ---------------------------------------------------------------------------------------
ALPHA = torch.tensor([[0.5, -1.0, 1.5, 0.0], [2.0, 0.0, 0.0, -2.0]])
DRAWS = 4000


def frequencies(index: torch.Tensor, num_ops: int) -> torch.Tensor:
    return torch.stack([torch.bincount(row, minlength=num_ops) for row in index.T]).double()


def assert_distributed_as(counts: torch.Tensor, probs: torch.Tensor) -> None:
    for observed, p in zip(counts, probs.double()):
        expected = p / p.sum() * observed.sum()
        assert chisquare(observed.numpy(), expected.numpy()).pvalue > 1e-3


def test_gumbel_softmax_samples_follow_softmax_alpha_and_sharpen_as_the_temperature_falls():
    torch.manual_seed(0)
    warm = torch.stack([gumbel_softmax(ALPHA, 1.0) for _ in range(DRAWS)])
    assert torch.allclose(warm.sum(-1), torch.ones(DRAWS, 2))
    assert_distributed_as(frequencies(warm.argmax(-1), 4), F.softmax(ALPHA, dim=-1))  # the Gumbel-max property
    cold = torch.stack([gumbel_softmax(ALPHA, 0.05) for _ in range(200)])
    assert cold.max(-1).values.mean() > 0.95 > warm.max(-1).values.mean()


@pytest.mark.parametrize("mode", ["dsnas", "uniform-sampling"])
def test_hard_samples_are_one_hot_and_follow_their_distribution(mode):
    torch.manual_seed(0)
    alphas = {"normal": ALPHA.clone().requires_grad_()}
    draws = [ArchSampler(mode).sample(alphas) for _ in range(DRAWS)]
    z = torch.stack([d[0]["normal"].detach() for d in draws])
    assert ((z == 0) | (z == 1)).all() and (z.sum(-1) == 1).all()
    index = z.argmax(-1)
    assert all(d[1]["normal"] == [[k] for k in i.tolist()] for d, i in zip(draws, index))  # active = the sample
    probs = F.softmax(ALPHA, dim=-1) if mode == "dsnas" else torch.full_like(ALPHA, 0.25)
    assert_distributed_as(frequencies(index, 4), probs)


def test_softmax_straight_through_gradient_equals_the_softmax_gradient():
    alpha = ALPHA.clone().requires_grad_()
    hard = F.one_hot(torch.tensor([2, 0]), 4).float()
    g = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    z = HardSample.apply(F.softmax(alpha, dim=-1), hard, "softmax", 0.0)
    assert torch.equal(z, hard)
    (z * g).sum().backward()
    alpha2 = ALPHA.clone().requires_grad_()
    expected = torch.autograd.grad((F.softmax(alpha2, dim=-1) * g).sum(), alpha2)[0]
    assert torch.allclose(alpha.grad, expected, atol=1e-7)


@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_dsnas_gradient_is_the_sampled_ops_reward_times_the_score_function(clip):
    alpha = ALPHA.clone().requires_grad_()
    hard = F.one_hot(torch.tensor([2, 0]), 4).float()
    g = torch.tensor([[9.0, 9.0, -0.8, 9.0], [0.3, 9.0, 9.0, 9.0]])  # only the sampled entries may matter
    (HardSample.apply(F.softmax(alpha, dim=-1), hard, "dsnas", clip) * g).sum().backward()
    reward = (g * hard).sum(-1)
    if clip:
        reward = reward.clamp(-clip, clip)
    alpha2 = ALPHA.clone().requires_grad_()
    log_p = (F.log_softmax(alpha2, dim=-1) * hard).sum(-1)
    expected = torch.autograd.grad((reward * log_p).sum(), alpha2)[0]
    assert torch.allclose(alpha.grad, expected, atol=1e-6)


def test_the_linear_temperature_schedule_follows_the_reference_and_stops_at_its_floor():
    search = {"temperature": 1.0, "temperature_min": 0.03, "temperature_schedule": "linear",
              "temperature_epochs": 150}
    assert temperature_at(0, search) == pytest.approx((1 - 1 / 150) * 0.97 + 0.03)
    assert temperature_at(149, search) == pytest.approx(0.03) == temperature_at(400, search)
    assert temperature_at(7, {**search, "temperature_schedule": "constant"}) == 1.0


# -- only the sampled op runs ----------------------------------------------------------------------
class RecordingSampler(ArchSampler):
    """An ArchSampler that keeps every ``active`` it hands out."""

    def sample(self, alphas, track_z=False):
        z, active = super().sample(alphas, track_z)
        self.__dict__.setdefault("seen", []).append(active)
        return z, active


def op_calls(supernet, leaves: bool) -> tuple[set, list]:
    """Hooks marking (cell type, edge, op) each time that op (``leaves``: one of its layers) runs."""
    called: set = set()
    handles = []
    for cell in supernet.cells:
        cell_type = "reduce" if cell.reduction else "normal"
        for e, mixed in enumerate(cell._ops):
            for k, op in enumerate(mixed._ops):
                for module in (op.modules() if leaves else [op]):
                    handles.append(module.register_forward_pre_hook(
                        lambda *_, key=(cell_type, e, k): called.add(key)))
    return called, handles


@pytest.mark.parametrize("implementation", ["reference", "fast"])
def test_dsnas_computes_only_the_sampled_ops(implementation):
    supernet = tiny_supernet(C=2, layers=3, steps=2)
    supernet.implementation = implementation
    called, handles = op_calls(supernet, leaves=implementation == "fast")
    sampler = RecordingSampler("dsnas")
    torch.manual_seed(3)
    batch = next(iter(tiny_data(n=8, batch_size=8).batches("train")))
    search_epoch(supernet, [batch], None, mode="dsnas", sampler=sampler,
                 w_optimizer=torch.optim.SGD(supernet.weight_parameters(), lr=0.01),
                 a_optimizer=torch.optim.Adam(supernet.arch_parameters(), lr=0.01))
    for h in handles:
        h.remove()
    (active,) = sampler.seen
    sampled = {(c, e, ops[0]) for c, rows in active.items() for e, ops in enumerate(rows)}
    ops = supernet.space.ops
    if implementation == "reference":
        assert called == sampled
    else:  # the fast cell reads the layers of conv and pool ops; the identity and `none` run no module
        assert called == {key for key in sampled if ops[key[2]] not in ("none", "skip_connect")}
    assert len(called) < sum(len(rows) for rows in active.values()) * len(ops)


def test_dsnas_gives_alpha_a_gradient_and_the_unsampled_ops_none():
    supernet = tiny_supernet(C=2, layers=3, steps=2)
    torch.manual_seed(0)
    z, active = ArchSampler("dsnas", reward_clip=0.0).sample(supernet.alphas)
    images, labels = next(iter(tiny_data(n=8, batch_size=8).batches("train")))
    F.cross_entropy(supernet(images, z, active=active), labels).backward()
    assert all(alpha.grad is not None and alpha.grad.abs().sum() > 0 for alpha in supernet.alphas.values())
    ops = supernet.space.ops
    sep_convs = [ops.index("sep_conv_3x3"), ops.index("sep_conv_5x5")]
    unsampled = next(k for k in sep_convs if k != active["normal"][0][0])  # an op with parameters, not sampled
    assert all(p.grad is None for p in supernet.cells[0]._ops[0]._ops[unsampled].parameters())


# -- training --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", STOCHASTIC_MODES)
def test_same_seed_same_run_and_another_seed_another(tmp_path, mode):
    runs = [train_supernet(micro(mode, epochs=1), seed=seed, device="cpu", out_dir=tmp_path / f"{i}", progress=False)
            for i, seed in enumerate((5, 5, 6))]
    first, again, other = (checkpoint_tensors(p) for p in runs)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    meta = selbench.load_supernet(runs[0]).metadata
    assert meta["mode"] == mode and meta["alpha_split"] == (None if mode == "uniform-sampling" else "train")


def test_uniform_sampling_leaves_alpha_untouched_and_snas_dsnas_move_it(tmp_path):
    for mode in STOCHASTIC_MODES:
        recipe = micro(mode, epochs=1)
        path = train_supernet(recipe, seed=2, device="cpu", out_dir=tmp_path / mode, progress=False)
        data = load_data(recipe.data, seed=2, device="cpu")
        torch.manual_seed(2)  # the driver's start: seed, build, (snas, dsnas) draw α ~ N(1, 0.01)
        initial = recipe.build_supernet(num_classes=data.num_classes, in_channels=data.in_channels).alphas
        if mode != "uniform-sampling":
            init_stochastic_alphas(initial)
            assert all(abs(a.mean() - 1) < 0.01 and 0.005 < a.std() < 0.02 for a in initial.values())
        trained = selbench.read_checkpoint(path)["alphas"]
        unchanged = [torch.equal(initial[c].detach(), trained[c]) for c in trained]
        assert all(unchanged) if mode == "uniform-sampling" else not any(unchanged)


@pytest.mark.parametrize("mode", ["dsnas", "snas"])
def test_an_interrupted_stochastic_run_resumes_to_the_uninterrupted_result(tmp_path, mode):
    recipe = micro(mode, epochs=3)
    reference = train_supernet(recipe, seed=1, device="cpu", out_dir=tmp_path / "whole", progress=False)

    def kill_in_epoch_two(label, step, steps):
        if label == "epoch 2/3" and step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_supernet(recipe, seed=1, device="cpu", out_dir=tmp_path / "resumed", progress=kill_in_epoch_two)
    assert (tmp_path / "resumed" / STATE_FILE).exists()
    resumed = train_supernet(recipe, seed=1, device="cpu", out_dir=tmp_path / "resumed", progress=False)
    expected, got = checkpoint_tensors(reference), checkpoint_tensors(resumed)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)

    def epochs(path):
        return [{k: v for k, v in e.items() if k != "seconds"}
                for e in json.loads((path.parent / "supernet.json").read_text())["epochs"]]

    assert epochs(reference) == epochs(resumed)


def test_the_cost_observer_records_conditional_costs_and_sample_counts_with_none_at_zero(tmp_path):
    path = train_supernet(micro("uniform-sampling", epochs=1), seed=0, device="cpu", out_dir=tmp_path,
                          progress=False)
    record = json.loads((path.parent / "supernet.json").read_text())
    costs = record["epochs"][0]["observers"]["cost-sign"]
    assert costs["one_hot"] == {"train": True} and costs["steps"] == {"train": 2}
    for cell_type in ("normal", "reduce"):
        samples = torch.tensor(costs["samples"]["train"][cell_type])
        assert torch.equal(samples.sum(-1), torch.full((samples.shape[0],), 2.0))  # one op per edge per step
        conditional = torch.tensor(costs["conditional_cost"]["train"][cell_type])
        mean = torch.tensor(costs["mean_cost"]["train"][cell_type])
        assert torch.equal(conditional[:, 0], torch.zeros(len(conditional)))  # `none`: exactly 0
        sampled = samples > 0
        assert torch.allclose(conditional[sampled] * samples[sampled] / 2, mean[sampled], atol=1e-6)
        assert torch.equal(conditional[~sampled], torch.zeros(int((~sampled).sum())))


# -- selectors and bad settings ---------------------------------------------------------------------
CHEAP = {"perturbation": {"proj_intv": 0, "valid_batches": 1},
         "influential-magnitude": {"hessian": "hutchinson", "probes": 2, "valid_batches": 1},
         "cost-sign": {"batches": 2}}


ALL_SELECTORS = ("alpha-magnitude", "cost-sign", "perturbation", "influential-magnitude")


@pytest.mark.parametrize("mode, selectors", [("dsnas", ALL_SELECTORS), ("snas", ALL_SELECTORS[:2]),
                                             ("uniform-sampling", ALL_SELECTORS[:2])])
def test_selectors_run_on_stochastic_supernets(tmp_path, mode, selectors):
    recipe = micro(mode, epochs=1)
    path = train_supernet(recipe, seed=0, device="cpu", out_dir=tmp_path, progress=False)
    supernet = selbench.load_supernet(path)
    data = load_data(recipe.data, seed=0, device="cpu")
    for name in selectors:
        run = selbench.select(supernet, name, data=data, search=recipe.search, **CHEAP.get(name, {}))
        assert run.selection.genotype is not None or run.selection.failure, name


@pytest.mark.parametrize("setting, message", [
    ("search.temperature=0", "search.temperature must be > 0"),
    ("search.temperature_min=2", "search.temperature_min must be in (0, temperature]"),
    ("search.straight_through=gumbel", "search.straight_through must be one of dsnas, softmax"),
    ("search.temperature_schedule=cosine", "search.temperature_schedule must be one of linear, constant"),
    ("search.reward_clip=-1", "search.reward_clip must be >= 0"),
])
def test_bad_sampling_settings_are_one_line_and_exit_code_2(tmp_path, capsys, setting, message):
    argv = ["train", "demo", "--set", "search.mode=snas", "--set", setting, "--out", str(tmp_path / "t")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_sampling_keys_at_their_defaults_leave_the_config_hash_alone():
    assert micro("dsnas").config_hash() == micro("dsnas", temperature=1.0, reward_clip=5.0).config_hash()
    assert micro("dsnas").config_hash() != micro("dsnas", reward_clip=1.0).config_hash()
    assert "reward_clip" not in micro("dsnas").search
