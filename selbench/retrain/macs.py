"""Multiply-adds and parameter counts of a network, computed by the project itself.

``count_macs`` runs one image through the model (eval mode, no gradients) with forward hooks
and counts one multiply-add per weight applied to an input value:

* convolution (``nn.Conv1d/2d/3d``): every output value takes ``C_in / groups × prod(kernel)``
  multiply-adds, so MACs = output elements × C_in / groups × prod(kernel).  Stride, padding
  and dilation act through the output size; multiplications with zero padding count, as in
  the usual convention.
* ``nn.Linear``: output elements × ``in_features``.

Left out, as in DARTS-era papers: bias additions, BatchNorm (an affine map that folds into the
preceding convolution at inference), ReLU, pooling (comparisons and sums, no weights), the sums
of cell nodes, and drop path (off in eval mode).  In eval mode the auxiliary head of a DARTS
network is not run, so it is not counted.  Hooks only see modules: a convolution done with
``torch.nn.functional`` directly is invisible, and a module that holds weights the counter does
not know (e.g. a transposed convolution) makes it refuse rather than under-count.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from selbench.core.errors import SelbenchError

# modules with weights whose cost is negligible or foldable (see the module docstring)
_ZERO_MAC_MODULES = (_NormBase, nn.GroupNorm, nn.LayerNorm, nn.Embedding, nn.PReLU)


def _conv_macs(module: _ConvNd, output: torch.Tensor) -> int:
    return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)


def _linear_macs(module: nn.Linear, output: torch.Tensor) -> int:
    return output.numel() * module.in_features


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds of ``model`` on one input of ``input_shape`` (without the batch dimension, e.g. (3, 32, 32))."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    total = 0
    unknown: set[str] = set()

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, _ConvNd) and not isinstance(module, _ConvTransposeNd):
            total += _conv_macs(module, output)
        elif isinstance(module, nn.Linear):
            total += _linear_macs(module, output)
        elif any(True for _ in module.parameters(recurse=False)) and not isinstance(module, _ZERO_MAC_MODULES):
            unknown.add(type(module).__name__)

    modes = {module: module.training for module in model.modules()}
    handles = [module.register_forward_hook(hook) for module in model.modules()]
    try:
        model.eval()
        model(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    if unknown:
        raise SelbenchError(f"cannot count multiply-adds of {', '.join(sorted(unknown))} modules; "
                            "extend selbench.macs to cover them")
    return total


def count_parameters(model: nn.Module, exclude: Sequence[str] = ("auxiliary",)) -> int:
    """Parameters of ``model``, leaving out those whose name contains any of ``exclude`` (DARTS's convention)."""
    return sum(p.numel() for name, p in model.named_parameters() if not any(word in name for word in exclude))
