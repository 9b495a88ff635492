"""Supernet checkpoints: selbench's own format and the DARTS / DARTS-PT ``state_dict`` + ``alpha`` form."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, cast

import torch
from torch import Tensor, nn

from selbench.core.errors import CheckpointError, SelbenchError
from selbench.core.files import atomic_torch_save
from selbench.core.space import Supernet
from selbench.data.loading import SearchData, load_data
from selbench.plugin.lookup import get_space
from selbench.recipes.recipe import Recipe

FORMAT = "selbench-supernet"
FORMAT_VERSION = 1


def weights_state_dict(supernet: nn.Module) -> dict[str, Tensor]:
    """θ and the BN statistics, without α: the state dict the original DARTS code writes."""
    arch = {id(p) for p in cast(Supernet, supernet).arch_parameters()}
    return {k: v.detach() for k, v in supernet.state_dict(keep_vars=True).items() if id(v) not in arch}


def save_supernet(supernet: nn.Module, path: str | os.PathLike, **metadata: Any) -> None:
    """Save a supernet (space, its arguments, θ, α) plus JSON-like ``metadata``, atomically."""
    net = cast(Supernet, supernet)
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "space": net.space.name,
        "space_args": dict(net.space_args),
        "state_dict": {k: v.cpu() for k, v in weights_state_dict(supernet).items()},
        "alphas": {cell_type: a.detach().cpu() for cell_type, a in net.alphas.items()},
        "metadata": metadata,
    }
    atomic_torch_save(payload, path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """``torch.load`` with the failures a user can cause turned into one clear :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} cannot be read (truncated or not a torch checkpoint: {reason[:160]}); "
            "write it again or point to another file") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, not a checkpoint dict")
    return data


def load_supernet(path: str | os.PathLike, *, space: str | None = None, **space_args: Any) -> nn.Module:
    """Load a supernet saved by :func:`save_supernet` or by the DARTS / DARTS-PT code.

    A foreign checkpoint (``state_dict`` + ``alpha`` = [normal, reduce]) is built in the
    ``space`` given (default ``darts``) with arguments inferred from its tensor shapes — the
    op count of α picks DARTS (8 ops) or DARTS-PT (7 ops, no ``none``); ``space_args``
    override what is inferred.  The returned module has ``metadata`` (a dict) attached.
    """
    data = read_checkpoint(path)
    if data.get("format") == FORMAT:
        if data.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"checkpoint {path} has format version {data.get('version')}, "
                                  f"this selbench reads version {FORMAT_VERSION}; upgrade selbench")
        chosen = get_space(space or data["space"])
        state_dict, alphas = data["state_dict"], data["alphas"]
        args = {**data["space_args"], **space_args}
        meta = dict(data.get("metadata") or {})
    elif "state_dict" in data and "alpha" in data:
        chosen = get_space(space or "darts")
        state_dict = data["state_dict"]
        if not isinstance(data["alpha"], (list, tuple)) or len(data["alpha"]) != len(chosen.cell_types):
            raise CheckpointError(f"checkpoint {path}: 'alpha' must be a list of {len(chosen.cell_types)} "
                                  f"tensors ({', '.join(chosen.cell_types)})")
        alphas = dict(zip(chosen.cell_types, data["alpha"]))
        try:
            args = {**chosen.infer_supernet_args(state_dict, alphas), **space_args}
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint {path}: {exc}") from None
        meta = {"source": "darts", "epoch": data.get("epoch")}
    else:
        raise CheckpointError(f"checkpoint {path} is neither a selbench supernet nor a DARTS/DARTS-PT checkpoint "
                              "(expected keys 'state_dict' and 'alpha')")
    supernet = chosen.build_supernet(**args)
    _check_compatible(supernet, state_dict, alphas, path, args)
    supernet.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        for cell_type, alpha in cast(Supernet, supernet).alphas.items():
            alpha.copy_(alphas[cell_type])
    supernet.metadata = meta  # type: ignore[assignment]  # nn.Module.__setattr__ is typed for tensors and modules only
    return supernet


def _check_compatible(supernet: nn.Module, state_dict: Mapping[str, Tensor], alphas: Mapping[str, Tensor],
                      path: Any, args: Mapping[str, Any]) -> None:
    expected = weights_state_dict(supernet)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    resized = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    net = cast(Supernet, supernet)
    for cell_type, alpha in net.alphas.items():
        if cell_type not in alphas or tuple(getattr(alphas[cell_type], "shape", ())) != tuple(alpha.shape):
            resized.append(f"alpha[{cell_type}]")
    if missing or unexpected or resized:
        details = "; ".join(f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                            for label, keys in (("missing", missing), ("unexpected", unexpected),
                                                ("wrong shape", resized)) if keys)
        described = ", ".join(f"{k}={v}" for k, v in args.items() if k != "ops")
        raise CheckpointError(f"checkpoint {path} does not match a {net.space.name} supernet with {described} "
                              f"({details}); pass the matching space arguments")


def checkpoint_data(metadata: Mapping[str, Any], *, recipe: Recipe | None = None, seed: int = 0,
                    device: str | torch.device = "cpu") -> SearchData:
    """The train/valid splits a supernet was trained on, rebuilt for selectors that need data.

    From ``recipe`` when given (e.g. for DARTS / DARTS-PT checkpoints), else from the recipe
    `selbench train` stored in the checkpoint's metadata; the split follows the stored seed
    (``seed`` when the metadata has none).
    """
    if recipe is None:
        if not isinstance(metadata.get("recipe"), Mapping):
            raise SelbenchError("the checkpoint carries no recipe (it was not written by `selbench train`), so its "
                                "data cannot be rebuilt; pass --recipe NAME_OR_TOML naming its dataset and split")
        recipe = Recipe.from_dict(metadata["recipe"], where="the checkpoint's recipe")
    stored_seed = metadata.get("seed")
    return load_data(recipe.data, seed=int(stored_seed) if stored_seed is not None else seed, device=device)
