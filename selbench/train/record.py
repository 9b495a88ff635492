"""The files a supernet training run writes and the JSON record that describes it."""
from __future__ import annotations

import platform
from typing import Any

import torch

from selbench.core.space import SearchSpace, space_layout
from selbench.core.version import __version__

CHECKPOINT_FILE = "supernet.pt"
RECORD_FILE = "supernet.json"
STATE_FILE = "resume.pt"
RECORD_FORMAT = "selbench-train-record"
STATE_FORMAT = "selbench-train-state"

# the recipe sections that decide what a supernet run computes
TRAIN_SECTIONS = ("supernet", "data", "search")

# which split α learns from, per mode (stored in the checkpoint for selectors and analyses)
ALPHA_SPLIT = {"single-level": "train", "bilevel-1st": "valid", "bilevel-2nd": "valid", "frozen-alpha": None,
               "snas": "train", "dsnas": "train", "uniform-sampling": None}


def run_record(recipe: Any, seed: int, mode: str, config_hash: str, space: SearchSpace, history: list,
               seconds: float, device: torch.device) -> dict[str, Any]:
    """The ``supernet.json`` of a finished run: recipe, per-epoch history, cell layout, where, in which
    precision and with what it ran."""
    return {
        "format": RECORD_FORMAT, "version": 1, "recipe_name": recipe.name, "recipe": recipe.to_dict(),
        "config_hash": config_hash, "seed": seed, "mode": mode, "alpha_split": ALPHA_SPLIT[mode],
        "space": space_layout(space), "epochs": history, "wall_seconds": seconds, "device": describe_device(device),
        "precision": recipe.precision("search"),
        "torch_version": torch.__version__, "selbench_version": __version__,
        "python_version": platform.python_version(),
        "checkpoint": CHECKPOINT_FILE,
    }


def describe_device(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H200)`` or ``cpu (2 threads)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({torch.get_num_threads()} threads)"
