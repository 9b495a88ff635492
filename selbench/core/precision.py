"""Numeric precision of a stage: fp32 throughout (the papers' setting) or bf16 autocast with fp32 master weights."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch
from torch import Tensor

from selbench.core.errors import SelbenchError

PRECISIONS = ("fp32", "bf16")
DEFAULT_PRECISION = "fp32"


def check_precision(precision: str, device: str | torch.device, where: str = "precision") -> None:
    """Raise one clear :class:`SelbenchError` if ``precision`` is unknown or ``device`` cannot compute in it.

    bf16 autocast runs on the CPU (every x86/ARM build of PyTorch has its kernels, fast with
    AVX-512-BF16 or AMX) and on CUDA devices that report bf16 support (Ampere and newer).
    """
    if precision not in PRECISIONS:
        raise SelbenchError(f"{where} = {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    device = torch.device(device)
    supported = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_available()
                                         and torch.cuda.is_bf16_supported())
    if not supported:
        raise SelbenchError(f"{where} = bf16: device {device} cannot compute in bf16 "
                            "(CUDA needs compute capability 8.0 or newer); use precision = fp32")


def autocast(precision: str, device: str | torch.device) -> ContextManager:
    """The block's forward passes in ``precision``: nothing for fp32, ``torch.autocast`` to bf16 otherwise.

    Parameters, optimiser states and gradients stay fp32 (autocast casts per op, so the
    weights an optimiser updates are the fp32 masters); losses are reduced in fp32.
    """
    check_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    # no cast cache: a CUDA graph must not capture casts cached outside it (each weight is cast once per
    # forward anyway, so the cache saves nothing here)
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=False)


def for_loss(logits: Tensor) -> Tensor:
    """``logits`` as a loss takes them: bf16 ones (an autocast forward's) widened to fp32, any other kept as is."""
    return logits.float() if logits.dtype == torch.bfloat16 else logits
