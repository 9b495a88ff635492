"""Supernet training (`selbench train`): a recipe and a seed in, a checkpoint and a JSON record out.

θ follows DARTS: SGD with momentum and weight decay, cosine-annealed learning rate,
gradient-norm clipping.  α follows the recipe's mode (see :mod:`selbench.train.loop`), with
Adam; the stochastic modes start α as SNAS does and anneal SNAS's temperature per epoch
(:mod:`selbench.train.sampling`).  After every epoch the full training state — θ, α, both optimisers, the schedule,
the random generators, the history — is written atomically, so a killed run started again
continues from its last finished epoch and ends exactly where an uninterrupted run ends
(bit for bit on the CPU).

Training observers registered by plugins (:mod:`selbench.train.observers`) watch every step and
add their per-epoch data to the record; they never change what is trained.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, cast

import torch
from torch import Tensor, nn
from tqdm import tqdm

from selbench.core.errors import CheckpointError, SelbenchError
from selbench.core.files import atomic_torch_save, atomic_write_json, file_sha256, read_json
from selbench.core.precision import check_precision
from selbench.core.space import Supernet
from selbench.core.tensors import to_host
from selbench.data.loading import SearchData, load_data
from selbench.plugin.lookup import training_observers
from selbench.recipes.recipe import Recipe
from selbench.train.checkpoint import read_checkpoint, save_supernet
from selbench.train.loop import UNUSED_ALPHA_MODES, arch_step_for, evaluate_supernet, search_epoch
from selbench.train.observers import ObserverSet, TrainingObserver
from selbench.train.record import (
    ALPHA_SPLIT,
    CHECKPOINT_FILE,
    RECORD_FILE,
    STATE_FILE,
    STATE_FORMAT,
    TRAIN_SECTIONS,
    run_record,
)
from selbench.train.sampling import SAMPLING_DEFAULTS, STOCHASTIC_MODES, init_stochastic_alphas, sampler_for

Progress = Callable[[str, int, int], None]


def train_supernet(recipe: Recipe, *, seed: int, device: str | torch.device = "cpu", out_dir: str | Path,
                   progress: bool | Progress = True, observers: Sequence[TrainingObserver] | None = None) -> Path:
    """Train the recipe's supernet with ``seed`` on ``device``; return the checkpoint path in ``out_dir``.

    ``out_dir`` receives ``supernet.pt`` (:func:`selbench.save_supernet`, with the recipe,
    seed, mode, epochs, α split and config hash as metadata) and ``supernet.json`` (the
    record: per-epoch loss, accuracy and softmax(α), wall time, device, versions).  A
    finished run in ``out_dir`` is returned as is; an interrupted one is resumed.
    ``progress``: ``True`` shows a bar per epoch, ``False`` nothing, and a callable is
    called as ``progress(label, step, steps)`` after every θ step.  ``observers`` watch the
    steps and add per-epoch data to the record (default: every registered training observer).
    The forward passes compute in the recipe's ``search.precision`` (:mod:`selbench.train.loop`); a
    device that cannot is one :class:`SelbenchError` before any work.
    """
    out_dir = Path(out_dir)
    checkpoint_path, record_path, state_path = out_dir / CHECKPOINT_FILE, out_dir / RECORD_FILE, out_dir / STATE_FILE
    config_hash = recipe.config_hash(*TRAIN_SECTIONS)
    if _finished(checkpoint_path, record_path, config_hash, seed):
        return checkpoint_path
    device = torch.device(device)
    search = recipe.search
    mode, epochs, precision = search["mode"], search["epochs"], recipe.precision("search")
    check_precision(precision, device, f"recipe {recipe.name!r}: search.precision")

    data = load_data(recipe.data, seed=seed, device=device)
    torch.manual_seed(seed)
    supernet = recipe.build_supernet(num_classes=data.num_classes, in_channels=data.in_channels)
    net = cast(Supernet, supernet)
    if mode in ("snas", "dsnas"):
        init_stochastic_alphas(net.alphas)
    # nn.Module.to takes memory_format, but torch's overloads of it leave it out
    supernet.to(device, memory_format=preferred_memory_format(device))  # type: ignore[call-overload]
    w_optimizer = torch.optim.SGD(net.weight_parameters(), lr=search["lr"], momentum=search["momentum"],
                                  weight_decay=search["weight_decay"])
    a_optimizer = None if mode in UNUSED_ALPHA_MODES else torch.optim.Adam(
        net.arch_parameters(), lr=search["arch_lr"], betas=(search["arch_beta1"], search["arch_beta2"]),
        weight_decay=search["arch_weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(w_optimizer, T_max=max(epochs, 1), eta_min=search["lr_min"])
    watching = ObserverSet(training_observers() if observers is None else observers, net.space)
    observer = watching if watching.observers else None
    arch_step = arch_step_for(mode, supernet, w_optimizer=w_optimizer, a_optimizer=a_optimizer,
                              hvp_epsilon=search["hvp_epsilon"], observer=observer, precision=precision)
    has_valid = data.split_size("valid") > 0
    if ALPHA_SPLIT[mode] == "valid" and not has_valid:
        raise SelbenchError(f"recipe {recipe.name!r}: search.mode {mode!r} learns α on the 'valid' split, which "
                            f"data.train_portion = {recipe.data['train_portion']} leaves empty; lower train_portion")

    parts: dict[str, Any] = dict(supernet=supernet, w_optimizer=w_optimizer, a_optimizer=a_optimizer,
                                 scheduler=scheduler, data=data)
    sampling = {**SAMPLING_DEFAULTS, **search}
    history: list[dict[str, Any]] = []
    seconds_before = 0.0
    if state_path.exists():
        history, seconds_before = _resume(state_path, config_hash, seed, device, **parts)
    session_start = time.perf_counter()
    for epoch in range(len(history), epochs):
        on_step, bar = _epoch_progress(progress, epoch, epochs, data.num_batches("train"))
        lr = w_optimizer.param_groups[0]["lr"]
        epoch_start = time.perf_counter()
        watching.start_epoch()
        train_metrics = search_epoch(
            supernet, data.batches("train"), (lambda: data.batches("valid")) if has_valid else None,
            w_optimizer=w_optimizer, a_optimizer=a_optimizer, mode=mode, arch_step=arch_step,
            grad_clip=search["grad_clip"], on_step=on_step, observer=observer,
            sampler=sampler_for(mode, sampling, epoch) if mode in STOCHASTIC_MODES else None,
            arch_grad_clip=sampling["arch_grad_clip"], precision=precision, graphs=search.get("graphs") == "on")
        valid_metrics = evaluate_supernet(supernet, data.batches("valid"), precision=precision) if has_valid else None
        scheduler.step()
        history.append(_epoch_record(epoch, lr, train_metrics, valid_metrics, supernet, watching.end_epoch(),
                                     time.perf_counter() - epoch_start))
        if bar is not None:
            bar.set_postfix(_summary(history[-1]))
            bar.close()
        _check_finite(history[-1])
        seconds = seconds_before + time.perf_counter() - session_start
        atomic_torch_save(_state(config_hash, seed, history, seconds, **parts), state_path)

    seconds = seconds_before + time.perf_counter() - session_start
    last = history[-1] if history else {}
    save_supernet(supernet, checkpoint_path, arch_optimizer=a_optimizer.state_dict() if a_optimizer else None,
                  recipe=recipe.to_dict(), recipe_name=recipe.name, seed=seed, mode=mode,
                  epochs=epochs, alpha_split=ALPHA_SPLIT[mode], config_hash=config_hash,
                  train_accuracy=last.get("train_accuracy"), valid_accuracy=last.get("valid_accuracy"))
    record = {**run_record(recipe, seed, mode, config_hash, net.space, history, seconds, device),
              "checkpoint_sha256": file_sha256(checkpoint_path)}
    atomic_write_json(record, record_path)
    state_path.unlink(missing_ok=True)
    return checkpoint_path


def preferred_memory_format(device: torch.device) -> torch.memory_format:
    """Channels-last on the CPU, where oneDNN runs DARTS's many small convolutions 1.2–1.6× faster."""
    return torch.channels_last if device.type == "cpu" else torch.preserve_format


def _finished(checkpoint_path: Path, record_path: Path, config_hash: str, seed: int) -> bool:
    if not (checkpoint_path.exists() and record_path.exists()):
        return False
    record = read_json(record_path, f"delete {record_path.parent} to train again")
    if record.get("config_hash") != config_hash or record.get("seed") != seed:
        raise SelbenchError(f"{record_path.parent} holds a finished run of another configuration or seed "
                            f"(recipe {record.get('recipe_name')!r}, seed {record.get('seed')}); choose another --out")
    digest = file_sha256(checkpoint_path)
    if record.get("checkpoint_sha256", digest) != digest:
        raise SelbenchError(f"{checkpoint_path} does not match its record {record_path.name} (truncated or "
                            f"modified); delete {checkpoint_path.parent} to train again")
    return True


def _epoch_progress(progress: bool | Progress, epoch: int, epochs: int, steps: int):
    """(on_step callback, tqdm bar or None) for one epoch."""
    label = f"epoch {epoch + 1}/{epochs}"
    if callable(progress):
        done = 0

        def on_step() -> None:
            nonlocal done
            done += 1
            progress(label, done, steps)

        return on_step, None
    if progress:
        bar = tqdm(total=steps, desc=label, unit="batch", dynamic_ncols=True)
        return (lambda: bar.update()), bar
    return None, None


def _epoch_record(epoch: int, lr: float, train: Mapping[str, Tensor], valid: Mapping[str, Tensor] | None,
                  supernet: nn.Module, observed: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """The epoch's numbers, brought to the host in one transfer."""
    return to_host({
        "epoch": epoch + 1, "lr": lr, "train_loss": train["loss"], "train_accuracy": train["accuracy"],
        "valid_loss": valid["loss"] if valid is not None else None,
        "valid_accuracy": valid["accuracy"] if valid is not None else None,
        "seconds": seconds,
        "alpha_softmax": {cell_type: alpha.detach().softmax(dim=-1)
                          for cell_type, alpha in cast(Supernet, supernet).alphas.items()},
        "observers": dict(observed),
    })


def _check_finite(entry: Mapping[str, Any]) -> None:
    """A diverged epoch (a NaN or infinite loss) stops training with one line; its state is not saved."""
    for name in ("train_loss", "valid_loss"):
        value = entry.get(name)
        if value is not None and not math.isfinite(value):
            raise SelbenchError(f"supernet training diverged: epoch {entry['epoch']} has {name.replace('_', ' ')} "
                                f"{value}; lower the learning rates (search.lr, search.arch_lr) or check the recipe")


def _summary(entry: Mapping[str, Any]) -> dict[str, str]:
    out = {"train_acc": f"{entry['train_accuracy']:.3f}"}
    if entry["valid_accuracy"] is not None:
        out["valid_acc"] = f"{entry['valid_accuracy']:.3f}"
    return out


def _state(config_hash: str, seed: int, history: list, seconds: float, *, supernet: nn.Module,
           w_optimizer: torch.optim.Optimizer, a_optimizer: torch.optim.Optimizer | None, scheduler: Any,
           data: SearchData) -> dict[str, Any]:
    device = next(supernet.parameters()).device
    return {
        "format": STATE_FORMAT, "config_hash": config_hash, "seed": seed, "history": history, "seconds": seconds,
        "supernet": supernet.state_dict(), "w_optimizer": w_optimizer.state_dict(),
        "a_optimizer": a_optimizer.state_dict() if a_optimizer is not None else None,
        "scheduler": scheduler.state_dict(), "data": data.state_dict(), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def _resume(path: Path, config_hash: str, seed: int, device: torch.device, *, supernet: nn.Module,
            w_optimizer: torch.optim.Optimizer, a_optimizer: torch.optim.Optimizer | None, scheduler: Any,
            data: SearchData) -> tuple[list, float]:
    """Restore everything :func:`_state` saved; return the history and the seconds spent so far."""
    try:
        state = read_checkpoint(path)
    except CheckpointError as exc:
        raise SelbenchError(f"{exc}; delete {path} to start this run over") from None
    if state.get("format") != STATE_FORMAT or state.get("config_hash") != config_hash or state.get("seed") != seed:
        raise SelbenchError(f"{path} is the resumable state of another configuration or seed; choose another --out "
                            "or delete it to start over")
    supernet.load_state_dict(state["supernet"])
    w_optimizer.load_state_dict(state["w_optimizer"])
    if a_optimizer is not None:
        a_optimizer.load_state_dict(state["a_optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    data.load_state_dict(state["data"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return list(state["history"]), float(state["seconds"])


