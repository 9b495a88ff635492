"""The DARTS candidate operations (Liu et al., 2019), with DARTS's module names, and RobustDARTS's ``noise``.

``affine`` is False inside the supernet and True in the discrete network; pools get a
non-affine BatchNorm only in the supernet (``pool_bn=True``).  Attribute names (``op``,
``conv_1``, ``conv_2``, ``bn``) follow the original code so its state dicts load strictly.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
DARTS_PT_OPS = DARTS_OPS[1:]  # DARTS-PT's space drops `none`


class Zero(nn.Module):
    """`none`: zeros, taking the strided slice first so the shape matches a stride-2 edge."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class Noise(nn.Module):
    """`noise` (RobustDARTS's S4): standard normal noise shaped like the input (its strided slice on a stride-2
    edge), whatever the input's values; drawn from the input device's default generator, so seeded runs repeat."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        shape = x[:, :, :: self.stride, :: self.stride].shape
        return torch.randn(shape, device=x.device, dtype=x.dtype)


class ReLUConvBN(nn.Module):
    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU, depthwise k×k conv (dilated), pointwise 1×1 conv, BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """The [ReLU, depthwise k×k, 1×1, BN] block twice; only the first depthwise conv is strided."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, 1, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


ONEDNN_SAFE_CHANNELS = 8  # one AVX2 block of float32 channels


class StridedPointwiseConv(nn.Conv2d):
    """A 1×1 convolution with stride s, the same module and state dict as ``nn.Conv2d(C_in, C_out, 1, stride=s)``.

    With fewer than :data:`ONEDNN_SAFE_CHANNELS` input channels it is computed as "keep every
    s-th pixel, then a 1×1 convolution" (the same outputs and input gradients; weight gradients
    may differ in the last bit).  Why: with one thread, oneDNN's channels-last backward of a
    strided 1×1 convolution with so few input channels corrupts the heap (torch 2.13 CPU, AMD
    EPYC: measured crashing for 1–6 input channels, never for 7 or more).  Wider convolutions,
    every paper-size and demo supernet, run as DARTS runs them.
    """

    def __init__(self, C_in: int, C_out: int, stride: int):
        super().__init__(C_in, C_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.in_channels >= ONEDNN_SAFE_CHANNELS:
            return super().forward(x)
        step = self.stride[0]
        return F.conv2d(x[:, :, ::step, ::step], self.weight)


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing pixels: two 1×1 stride-2 convs, the second shifted by one."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = StridedPointwiseConv(C_in, C_out // 2, 2)
        self.conv_2 = StridedPointwiseConv(C_in, C_out // 2, 2)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.reduce_convs(self.relu(x)))

    def reduce_convs(self, x: Tensor) -> Tensor:
        """The two convs' outputs, concatenated, for the already-ReLU'd input ``x`` (before the BN)."""
        shifted = x[:, :, 1:, 1:]
        height, width = x.shape[-2:]
        if height % 2 or width % 2:
            # odd sizes: the shifted branch would come out one pixel short; pad it back
            shifted = nn.functional.pad(shifted, (0, width % 2, 0, height % 2))
        return torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1)


def _pool(kind: str, C: int, stride: int, affine: bool, pool_bn: bool) -> nn.Module:
    if kind == "max":
        pool: nn.Module = nn.MaxPool2d(3, stride=stride, padding=1)
    else:
        pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    return nn.Sequential(pool, nn.BatchNorm2d(C, affine=False)) if pool_bn else pool


OpFactory = Callable[[int, int, bool, bool], nn.Module]

OPS: dict[str, OpFactory] = {
    "none": lambda C, stride, affine, pool_bn: Zero(stride),
    "max_pool_3x3": lambda C, stride, affine, pool_bn: _pool("max", C, stride, affine, pool_bn),
    "avg_pool_3x3": lambda C, stride, affine, pool_bn: _pool("avg", C, stride, affine, pool_bn),
    "skip_connect": lambda C, stride, affine, pool_bn: (
        nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine)),
    "sep_conv_3x3": lambda C, stride, affine, pool_bn: SepConv(C, C, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda C, stride, affine, pool_bn: SepConv(C, C, 5, stride, 2, affine=affine),
    "dil_conv_3x3": lambda C, stride, affine, pool_bn: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda C, stride, affine, pool_bn: DilConv(C, C, 5, stride, 4, 2, affine=affine),
    "noise": lambda C, stride, affine, pool_bn: Noise(stride),
}


def make_op(name: str, C: int, stride: int, *, affine: bool, pool_bn: bool) -> nn.Module:
    return OPS[name](C, stride, affine, pool_bn)
