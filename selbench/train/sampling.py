"""Architecture samples Z of the stochastic search modes: SNAS, DSNAS and uniform sampling.

Every step draws one Z per cell type, shape [E, O], shared by all cells of that type (as the
reference does unless it resamples per layer), on the device from the global generator, so
`torch.manual_seed` and the checkpointed RNG state make a run repeatable and resumable:

* ``snas`` (Xie et al., ICLR 2019): Z = softmax((α + G) / τ), G Gumbel(0, 1) noise — a relaxed
  sample, differentiable in α; every op is computed;
* ``dsnas`` (Hu et al., CVPR 2020): Z one-hot, the op drawn from softmax(α) per edge; only the
  sampled op is computed; α gets a straight-through gradient (:class:`HardSample`);
* ``uniform-sampling``: Z one-hot, the op drawn uniformly; α is not used.

The reference is SNAS-Series, ``Analysis/snas/model_search.py`` (``_get_categ_mask``,
``_get_onehot_mask``, the DSNAS branch of ``forward``) and ``train_search.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from selbench.core.errors import SelbenchError

STOCHASTIC_MODES = ("snas", "dsnas", "uniform-sampling")
HARD_MODES = ("dsnas", "uniform-sampling")  # one-hot Z: only the sampled op runs
STRAIGHT_THROUGH = ("dsnas", "softmax")
TEMPERATURE_SCHEDULES = ("linear", "constant")

# [search] keys of the stochastic modes (a recipe holds one only when it differs from its default).
# Defaults: SNAS-Series, Analysis/snas/train_search.py and utils.py (the paper leaves them to the code).
SAMPLING_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0,  # snas: τ0 (--temp 1)
    "temperature_min": 0.03,  # snas: the floor of the schedule (--temp_min 0.03)
    # snas: linear: τ falls from τ0 to temperature_min over temperature_epochs (Temp_Scheduler.decay_whole_process,
    # whose horizon is hard-coded to 150 epochs; it is switched on by --temp_annealing); constant: τ0 throughout
    "temperature_schedule": "linear",
    "temperature_epochs": 150,
    "arch_grad_clip": 10.0,  # snas, dsnas: max gradient norm of α (clip_grad_norm_(arch_parameters(), 10.))
    "reward_clip": 5.0,  # dsnas: ∂L/∂Z of the sampled op is clamped to ±reward_clip (edge_reward.clamp_); 0 = off
    # dsnas: α's gradient; "dsnas": (∂L/∂Z_s)·∇_α log p_s (DSNAS's estimator);
    # "softmax": (∂L/∂Z)ᵀ·∂softmax(α)/∂α (the classic straight-through estimator)
    "straight_through": "dsnas",
}

ALPHA_INIT_MEAN, ALPHA_INIT_STD = 1.0, 0.01  # snas, dsnas: log α ~ N(1, 0.01) (--loc_mean 1, --loc_std 0.01)


def check_sampling(search: Mapping[str, Any], where: str) -> None:
    """One-line errors for bad sampling keys in a merged ``[search]`` section."""
    problems = [
        (search["temperature"] <= 0, f"temperature must be > 0, got {search['temperature']}"),
        (not 0 < search["temperature_min"] <= search["temperature"],
         f"temperature_min must be in (0, temperature], got {search['temperature_min']}"),
        (search["temperature_schedule"] not in TEMPERATURE_SCHEDULES,
         f"temperature_schedule must be one of {', '.join(TEMPERATURE_SCHEDULES)}, "
         f"got {search['temperature_schedule']!r}"),
        (search["temperature_epochs"] < 1, f"temperature_epochs must be >= 1, got {search['temperature_epochs']}"),
        (search["arch_grad_clip"] < 0, f"arch_grad_clip must be >= 0 (0 = off), got {search['arch_grad_clip']}"),
        (search["reward_clip"] < 0, f"reward_clip must be >= 0 (0 = off), got {search['reward_clip']}"),
        (search["straight_through"] not in STRAIGHT_THROUGH,
         f"straight_through must be one of {', '.join(STRAIGHT_THROUGH)}, got {search['straight_through']!r}"),
    ]
    for bad, message in problems:
        if bad:
            raise SelbenchError(f"{where}: search.{message}")


def temperature_at(epoch: int, search: Mapping[str, Any]) -> float:
    """τ for 0-based ``epoch``: the reference steps its scheduler once before each epoch, so epoch 0 trains at τ(1)."""
    start, floor = search["temperature"], search["temperature_min"]
    if search["temperature_schedule"] == "constant":
        return start
    return max(floor, (1 - (epoch + 1) / search["temperature_epochs"]) * (start - floor) + floor)


def gumbel_softmax(alpha: Tensor, temperature: float) -> Tensor:
    """softmax((α + G) / τ) per row, G = −log(−log U), U uniform on the device (SNAS's relaxed sample)."""
    uniform = torch.rand_like(alpha).clamp_min(torch.finfo(alpha.dtype).tiny)
    return F.softmax((alpha - torch.log(-torch.log(uniform))) / temperature, dim=-1)


class HardSample(torch.autograd.Function):
    """Forward: the one-hot ``hard``.  Backward: a straight-through gradient to the probabilities ``p``.

    ``dsnas``: p receives g_s·hard/p, so that α = log-softmax⁻¹(p) receives g_s·(e_s − p) = g_s·∇_α log p_s,
    g_s = ∂L/∂Z of the sampled op clamped to ±``clip`` (DSNAS's estimator and the reference's clamp).
    ``softmax``: p receives ∂L/∂Z unchanged, as if Z were p.
    """

    @staticmethod
    def forward(ctx: Any, probs: Tensor, hard: Tensor, estimator: str, clip: float) -> Tensor:
        ctx.save_for_backward(probs, hard)
        ctx.estimator, ctx.clip = estimator, clip
        return hard.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        probs, hard = ctx.saved_tensors
        if ctx.estimator == "softmax":
            return grad, None, None, None
        reward = (grad * hard).sum(dim=-1, keepdim=True)
        if ctx.clip > 0:
            reward = reward.clamp(-ctx.clip, ctx.clip)
        return reward * hard / probs.clamp_min(torch.finfo(probs.dtype).tiny), None, None, None


def one_hot_rows(index: Tensor, num_ops: int, like: Tensor) -> Tensor:
    """[E, O] one-hot rows of ``index`` [E], in ``like``'s dtype and device.

    A scatter rather than ``F.one_hot``, which reads the indices back to check their range (a host sync).
    """
    return torch.zeros(len(index), num_ops, dtype=like.dtype, device=like.device).scatter_(1, index.unsqueeze(1), 1.0)


@dataclass(frozen=True)
class ArchSampler:
    """Draws each step's Z for one stochastic ``mode``.

    ``sampled_only``: hard modes compute only the sampled op of each edge (``False``: every op,
    weighted by the one-hot Z — the same function, kept for measuring the speed-up).
    """

    mode: str
    temperature: float = SAMPLING_DEFAULTS["temperature"]
    reward_clip: float = SAMPLING_DEFAULTS["reward_clip"]
    straight_through: str = SAMPLING_DEFAULTS["straight_through"]
    sampled_only: bool = True

    def __post_init__(self) -> None:
        if self.mode not in STOCHASTIC_MODES:
            raise SelbenchError(f"{self.mode!r} is not a stochastic search mode ({', '.join(STOCHASTIC_MODES)})")

    @property
    def hard(self) -> bool:
        return self.mode in HARD_MODES

    def sample(self, alphas: Mapping[str, Tensor], track_z: bool = False
               ) -> tuple[dict[str, Tensor], dict[str, list[list[int]]] | None]:
        """(Z per cell type, the op each edge computes per cell type — ``None``: every op).

        ``track_z``: Z must carry a gradient ∂L/∂Z even where α gets none (uniform sampling).
        """
        if self.mode == "snas":
            return {cell_type: gumbel_softmax(alpha, self.temperature) for cell_type, alpha in alphas.items()}, None
        indices, samples = {}, {}
        for cell_type, alpha in alphas.items():
            num_edges, num_ops = alpha.shape
            if self.mode == "dsnas":
                probs = F.softmax(alpha, dim=-1)
                index = torch.multinomial(probs.detach(), 1).squeeze(1)
                z = HardSample.apply(probs, one_hot_rows(index, num_ops, alpha), self.straight_through,
                                     self.reward_clip)
            else:
                index = torch.randint(num_ops, (num_edges,), device=alpha.device)
                z = one_hot_rows(index, num_ops, alpha).requires_grad_(track_z)
            indices[cell_type], samples[cell_type] = index, z
        if not self.sampled_only:
            return samples, None
        # which modules run is decided in Python: one small device-to-host copy per step, for all cell types
        chosen = torch.cat(list(indices.values())).tolist()
        active, start = {}, 0
        for cell_type, index in indices.items():
            active[cell_type] = [[k] for k in chosen[start:start + len(index)]]
            start += len(index)
        return samples, active


def sampler_for(mode: str, search: Mapping[str, Any], epoch: int, sampled_only: bool = True) -> ArchSampler:
    """The sampler of 0-based ``epoch`` for a merged ``[search]`` section."""
    settings = {**SAMPLING_DEFAULTS, **search}
    return ArchSampler(mode, temperature=temperature_at(epoch, settings), reward_clip=settings["reward_clip"],
                       straight_through=settings["straight_through"], sampled_only=sampled_only)


@torch.no_grad()
def init_stochastic_alphas(alphas: Mapping[str, Tensor]) -> None:
    """log α ~ N(1, 0.01), SNAS's and DSNAS's start (softmax sees 0.01·randn: ten times DARTS's spread)."""
    for alpha in alphas.values():
        alpha.normal_(ALPHA_INIT_MEAN, ALPHA_INIT_STD)
