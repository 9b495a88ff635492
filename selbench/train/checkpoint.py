"""Supernet checkpoints: selbench's own format and the DARTS / DARTS-PT ``state_dict`` + ``alpha`` form."""
from __future__ import annotations

import os
import warnings
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
from selbench.train.darts_output import read_printed_alphas

FORMAT = "selbench-supernet"
FORMAT_VERSION = 1


def weights_state_dict(supernet: nn.Module) -> dict[str, Tensor]:
    """θ and the BN statistics, without α: the state dict the original DARTS code writes."""
    arch = {id(p) for p in cast(Supernet, supernet).arch_parameters()}
    return {k: v.detach() for k, v in supernet.state_dict(keep_vars=True).items() if id(v) not in arch}


def save_supernet(supernet: nn.Module, path: str | os.PathLike, *, arch_optimizer: Mapping[str, Any] | None = None,
                  **metadata: Any) -> None:
    """Save a supernet (space, its arguments, θ, α) plus JSON-like ``metadata``, atomically.

    ``arch_optimizer``: the state dict of α's optimiser, which selection fine-tuning continues.
    """
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
    if arch_optimizer is not None:
        payload["arch_optimizer"] = arch_optimizer
    atomic_torch_save(payload, path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """``torch.load`` with the failures a user can cause turned into one clear :class:`CheckpointError`."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    with open(path, "rb") as handle:
        start = handle.read(4)
    if start[:2] != b"PK" and start[:1] != b"\x80":  # neither torch's zip format nor a legacy pickle
        raise CheckpointError(f"checkpoint {path} is not a torch checkpoint (it starts with {start!r}); "
                              "point to a supernet.pt or weights.pt written by torch.save")
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


def load_supernet(path: str | os.PathLike, *, space: str | None = None, alphas: str | os.PathLike | None = None,
                  **space_args: Any) -> nn.Module:
    """Load a supernet saved by :func:`save_supernet` or by the DARTS / DARTS-PT code.

    A foreign checkpoint is built in the ``space`` given (default ``darts``) with arguments
    inferred from its tensor shapes — the op count of α picks DARTS (8 ops) or DARTS-PT (7
    ops, no ``none``); ``space_args`` override what is inferred (``ops=[...]`` when the op
    order cannot be told from the shapes, e.g. max vs avg pool).  Foreign forms:

    * DARTS-PT's search checkpoint: ``state_dict`` + ``alpha`` = [normal, reduce] (+ its
      ``arch_optimizer``, which fine-tuning continues);
    * DARTS's ``weights.pt``, a bare state dict: α comes from ``alphas``, the captured stdout
      of its ``train_search.py`` (see :mod:`selbench.train.darts_output`; a
      :class:`DartsOutputWarning` says that those α are one epoch older than the weights).

    DARTS-PT's mid-projection files are refused: selbench does not resume a selection.
    BatchNorm state from PyTorch < 0.4.1 (no ``num_batches_tracked``) loads with the counts at 0.
    The returned module has ``metadata`` (a dict) and ``arch_optimizer_state`` (or ``None``) attached.
    """
    data = read_checkpoint(path)
    if alphas is not None and not _is_bare_state_dict(data):
        raise CheckpointError(f"--alphas {alphas}: checkpoint {path} is not a bare DARTS state dict (weights.pt); "
                              "only those lack α")
    if data.get("format") == FORMAT:
        if data.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"checkpoint {path} has format version {data.get('version')}, "
                                  f"this selbench reads version {FORMAT_VERSION}; upgrade selbench")
        if space is not None and space != data["space"]:
            raise CheckpointError(f"checkpoint {path} is a checkpoint of another shape: a selbench {data['space']} "
                                  f"supernet, not a {space} one; drop --space or pass --space {data['space']}")
        chosen = get_space(space or data["space"])
        state_dict, cell_alphas = data["state_dict"], data["alphas"]
        args = {**data["space_args"], **space_args}
        meta = dict(data.get("metadata") or {})
    elif PROJECTION_KEYS & set(data):
        raise CheckpointError(
            f"checkpoint {path} is a DARTS-PT projection checkpoint (written during its selection, at tuning epoch "
            f"{data.get('epoch')}: it holds {', '.join(sorted(PROJECTION_KEYS & set(data)))} of the decisions made "
            "so far); selbench does not resume a DARTS-PT selection: select from the search checkpoint it started from")
    elif "state_dict" in data and "alpha" in data:
        chosen = get_space(space or "darts")
        state_dict = data["state_dict"]
        if not isinstance(data["alpha"], (list, tuple)) or len(data["alpha"]) != len(chosen.cell_types):
            raise CheckpointError(f"checkpoint {path}: 'alpha' must be a list of {len(chosen.cell_types)} "
                                  f"tensors ({', '.join(chosen.cell_types)})")
        cell_alphas = dict(zip(chosen.cell_types, data["alpha"]))
        args = _inferred_args(chosen, state_dict, cell_alphas, path, space_args)
        meta = {"source": "darts", "epoch": data.get("epoch")}
    elif _is_bare_state_dict(data):
        if alphas is None:
            raise CheckpointError(
                f"checkpoint {path} is a bare DARTS state dict (weights.pt): it has the weights but no α, which DARTS "
                "only prints to standard output; pass --alphas FILE (in Python: alphas=FILE), FILE being the captured "
                "stdout of the train_search.py run that wrote it")
        chosen = get_space(space or "darts")
        state_dict = data
        cell_alphas = dict(zip(chosen.cell_types, read_printed_alphas(alphas)))
        args = _inferred_args(chosen, state_dict, cell_alphas, path, space_args)
        meta = {"source": "darts", "epoch": None, "alphas_from": str(alphas)}
        warnings.warn(f"α of {path} read from the last softmax(α) tables printed in {alphas}: DARTS prints them at the "
                      "start of an epoch, so they are one epoch older than the weights", DartsOutputWarning,
                      stacklevel=2)
    else:
        raise CheckpointError(f"checkpoint {path} is neither a selbench supernet nor a DARTS/DARTS-PT checkpoint "
                              "(expected keys 'state_dict' and 'alpha', or a bare DARTS state dict)")
    try:
        supernet = chosen.build_supernet(**args)
    except TypeError as exc:  # arguments of another space's supernet
        raise CheckpointError(f"checkpoint {path} is a checkpoint of another shape: the {chosen.name} space cannot "
                              f"build its supernet ({exc}); check --space") from None
    state_dict = _with_batch_counts(supernet, state_dict)
    _check_compatible(supernet, state_dict, cell_alphas, path, args)
    supernet.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        for cell_type, alpha in cast(Supernet, supernet).alphas.items():
            alpha.copy_(cell_alphas[cell_type])
    supernet.metadata = meta  # type: ignore[assignment]  # nn.Module.__setattr__ is typed for tensors and modules only
    supernet.arch_optimizer_state = data.get("arch_optimizer")  # type: ignore[assignment]  # as above
    return supernet


class DartsOutputWarning(UserWarning):
    """A supernet rebuilt from DARTS's output differs from the one DARTS held (α one epoch older)."""


# keys that only DARTS-PT's per-decision projection files hold
PROJECTION_KEYS = frozenset({"proj_weights", "candidate_flags", "candidate_flags_edge", "nid2eids",
                             "nid2selected_eids"})


def _is_bare_state_dict(data: Mapping[str, Any]) -> bool:
    """A state dict saved as is (DARTS's weights.pt): tensors under dotted module names."""
    return bool(data) and all(isinstance(v, Tensor) for v in data.values()) and "stem.0.weight" in data


def _inferred_args(chosen: Any, state_dict: Mapping[str, Tensor], cell_alphas: Mapping[str, Tensor], path: Any,
                   space_args: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return {**chosen.infer_supernet_args(state_dict, cell_alphas), **space_args}
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None


def _with_batch_counts(supernet: nn.Module, state_dict: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """``state_dict`` with BatchNorm's ``num_batches_tracked`` (0) added when it has none at all (PyTorch < 0.4.1)."""
    counts = [k for k in weights_state_dict(supernet) if k.endswith(".num_batches_tracked")]
    if not counts or any(k.endswith(".num_batches_tracked") for k in state_dict):
        return state_dict
    return {**state_dict, **{k: torch.zeros((), dtype=torch.long) for k in counts}}


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


def checkpoint_recipe(metadata: Mapping[str, Any]) -> Recipe | None:
    """The recipe `selbench train` stored in a checkpoint's metadata; ``None`` for other checkpoints."""
    stored = metadata.get("recipe")
    return Recipe.from_dict(stored, where="the checkpoint's recipe") if isinstance(stored, Mapping) else None


def checkpoint_data(metadata: Mapping[str, Any], *, recipe: Recipe | None = None, seed: int = 0,
                    device: str | torch.device = "cpu") -> SearchData:
    """The train/valid splits a supernet was trained on, rebuilt for selectors that need data.

    From ``recipe`` when given (e.g. for DARTS / DARTS-PT checkpoints), else from the recipe
    `selbench train` stored in the checkpoint's metadata; the split follows the stored seed
    (``seed`` when the metadata has none).  A DARTS / DARTS-PT checkpoint always gets the
    ``"ordered"`` split those codes train with, whatever the recipe says, so that the images
    used for selection never trained θ.
    """
    recipe = recipe or checkpoint_recipe(metadata)
    if recipe is None:
        raise SelbenchError("the checkpoint carries no recipe (it was not written by `selbench train`), so its "
                            "data cannot be rebuilt; pass --recipe NAME_OR_TOML naming its dataset and split")
    section = {**recipe.data, "split": "ordered"} if metadata.get("source") == "darts" else recipe.data
    stored_seed = metadata.get("seed")
    return load_data(section, seed=int(stored_seed) if stored_seed is not None else seed, device=device)
