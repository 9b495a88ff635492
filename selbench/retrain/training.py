"""Training a discrete cell's network from scratch and testing it: what the ``retrain`` scorer and tables run.

The recipe's ``[retrain]`` section sets the network (the keyword arguments of the space's
``build_network``: DARTS's C, layers, auxiliary head; NAS-Bench-201's C, N) and its training
(by default DARTS's evaluation recipe at paper scale: SGD with cosine schedule, auxiliary
loss weight 0.4, drop path ramped linearly, cutout, gradient clipping; optionally Nesterov
momentum and no clipping, as NAS-Bench-201 trains).  The network trains on every training
image the ``[data]`` section keeps and is scored once on the test split; with ``holdout`` it
trains on the θ split only and is also scored on the α split (``valid_accuracy``), as the
cells of a ground-truth table are.
With ``precision = "bf16"`` the forward passes of training and testing run under bf16
autocast; the weights, their gradients and the optimiser's state stay fp32
(:mod:`selbench.core.precision`).
After every epoch the full training state is saved atomically, so an interrupted retrain
resumes from its last finished epoch.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selbench.core.errors import SelbenchError
from selbench.core.files import atomic_torch_save
from selbench.core.genotype import Genotype
from selbench.core.precision import DEFAULT_PRECISION, autocast, check_precision, for_loss
from selbench.data.loading import SearchData, load_data
from selbench.plugin.lookup import get_space
from selbench.recipes.recipe import Recipe
from selbench.retrain.identity import retrain_identity
from selbench.retrain.macs import count_macs, count_parameters
from selbench.train.checkpoint import read_checkpoint
from selbench.train.graphs import GraphedStep

STATE_FILE = "retrain_state.pt"
STATE_FORMAT = "selbench-retrain-state"
WEIGHTS_FILE = "network.pt"

Progress = Callable[[str, int, int], None]


def build_retrain_network(genotype: Genotype, recipe: Recipe, *, num_classes: int, in_channels: int) -> nn.Module:
    """The recipe's discrete network for ``genotype`` (variable in-degree cells allowed when the genotype has them)."""
    space = get_space(recipe.supernet["space"])
    kwargs: dict[str, Any] = dict(recipe.retrain_network(), num_classes=num_classes, in_channels=in_channels)
    if space.in_degree is not None and any(
            len(node) != space.in_degree for _, cell in genotype.items() for node in cell.nodes):
        kwargs["variable_in_degree"] = True
    return space.build_network(genotype, **kwargs)


def make_optimizer(network: nn.Module, settings: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD over every parameter with the ``[retrain]`` training settings (``Recipe.retrain_training()``)."""
    return torch.optim.SGD(network.parameters(), lr=settings["lr"], momentum=settings["momentum"],
                           weight_decay=settings["weight_decay"], nesterov=settings["nesterov"])


def train_epoch(network: nn.Module, batches, optimizer: torch.optim.Optimizer, *, auxiliary_weight: float,
                grad_clip: float, precision: str = DEFAULT_PRECISION, graphs: bool = False) -> None:
    """One pass of DARTS's evaluation training: L = CE(logits) + w_aux · CE(aux logits).

    The gradient norm is clipped to ``grad_clip``; 0 means no clipping.  The forward passes
    compute in ``precision``, the losses in fp32.  ``graphs``: replay each full batch's step
    from a CUDA graph (:mod:`selbench.train.graphs`; eager off CUDA).
    """
    network.train()

    def step(images: Tensor, labels: Tensor) -> tuple[Tensor]:
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, images.device):
            logits, logits_aux = network(images)
        loss = F.cross_entropy(for_loss(logits), labels)
        if logits_aux is not None:
            loss = loss + auxiliary_weight * F.cross_entropy(for_loss(logits_aux), labels)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
        optimizer.step()
        return (loss.detach(),)

    run = GraphedStep(step, optimizers=[optimizer], enabled=graphs, where="retrain.graphs")
    for images, labels in batches:
        run(images, labels)


@torch.no_grad()
def split_accuracy(network: nn.Module, data: SearchData, split: str = "test",
                   precision: str = DEFAULT_PRECISION) -> float:
    """Top-1 accuracy of ``network`` (in eval mode) over one unaugmented split, ``"test"`` or ``"valid"``,
    the forward passes in ``precision``."""
    network.eval()
    correct = torch.zeros((), dtype=torch.int64, device=data.device)
    seen = 0
    for images, labels in data.batches(split):
        with autocast(precision, images.device):
            logits = network(images)[0]
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
    return correct.item() / seen


def retrain(genotype: Genotype, recipe: Recipe, *, seed: int, device: str | torch.device, out_dir: str | Path,
            progress: Progress | None = None, holdout: bool = False) -> dict[str, Any]:
    """Train ``genotype`` from scratch with ``recipe.retrain``; return the score dict (see :class:`selbench.Scorer`).

    ``holdout``: train on the θ split only and add ``valid_accuracy``, measured on the α split.
    The score dict says the ``precision`` the network trained and was tested in (``retrain.precision``).
    """
    device = torch.device(device)
    precision = recipe.precision("retrain")
    check_precision(precision, device, f"recipe {recipe.name!r}: retrain.precision")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = recipe.retrain_training()
    data = load_data(recipe.retrain_data(), seed=seed, device=device)
    torch.manual_seed(seed)
    network = build_retrain_network(genotype, recipe, num_classes=data.num_classes,
                                    in_channels=data.in_channels).to(device)
    if settings["drop_path_prob"] > 0 and not hasattr(network, "drop_path_prob"):
        raise SelbenchError(f"recipe {recipe.name!r}: the {recipe.supernet['space']} network has no drop path; "
                            "set retrain.drop_path_prob = 0")
    params = count_parameters(network)
    macs = count_macs(network, (data.in_channels, *data.image_size))
    optimizer = make_optimizer(network, settings)
    epochs = settings["epochs"]
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1), eta_min=settings["lr_min"])
    state_path = out_dir / STATE_FILE
    identity = retrain_identity(genotype, recipe, seed, holdout=holdout)
    first_epoch, seconds_before = 0, 0.0
    if state_path.exists():
        first_epoch, seconds_before = _resume(state_path, identity, network, optimizer, scheduler, data)
    start = time.perf_counter()
    for epoch in range(first_epoch, epochs):
        if hasattr(network, "drop_path_prob"):
            network.drop_path_prob = settings["drop_path_prob"] * epoch / epochs
        train_epoch(network, data.batches("train" if holdout else "train_full"), optimizer,
                    auxiliary_weight=settings["auxiliary_weight"], grad_clip=settings["grad_clip"], precision=precision,
                    graphs=settings["graphs"] == "on")
        scheduler.step()
        atomic_torch_save({"format": STATE_FORMAT, "identity": identity, "epoch": epoch + 1,
                           "seconds": seconds_before + time.perf_counter() - start,
                           "network": network.state_dict(), "optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict(), "data": data.state_dict(),
                           "torch_rng": torch.get_rng_state()}, state_path)
        if progress is not None:
            progress("retrain", epoch + 1, epochs)
    accuracies = {"test_accuracy": split_accuracy(network, data, "test", precision)}
    if holdout:
        accuracies["valid_accuracy"] = split_accuracy(network, data, "valid", precision)
    atomic_torch_save(network.state_dict(), out_dir / WEIGHTS_FILE)
    state_path.unlink(missing_ok=True)
    return {**accuracies, "params_m": params / 1e6, "macs_m": macs / 1e6,
            "seconds": seconds_before + time.perf_counter() - start, "device": str(device),
            "artifacts": [WEIGHTS_FILE], "epochs": epochs, "precision": precision}


def _resume(path: Path, identity: dict[str, Any], network: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, data: SearchData) -> tuple[int, float]:
    state = read_checkpoint(path)
    if state.get("format") != STATE_FORMAT:
        path.unlink()
        return 0, 0.0
    if state.get("identity") != identity:  # another genotype, recipe or seed (or a state from before identities)
        raise SelbenchError(f"{path.parent} holds the interrupted retrain of another configuration "
                            "(genotype, recipe or seed); choose another --out or delete it")
    network.load_state_dict(state["network"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    data.load_state_dict(state["data"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["epoch"]), float(state["seconds"])

