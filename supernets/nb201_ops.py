"""The NAS-Bench-201 candidate operations and the residual block between its stages (Dong & Yang, 2020).

Every cell op keeps the channel count and the resolution.  ``nor_conv`` is ReLU-conv-BN;
``affine`` is False inside the supernet and True in the discrete network.  The reference
code gives the supernet's convs a bias (``bias=not affine``); it is left out here because
the BatchNorm right after it subtracts it again, so both networks share one op definition.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from .darts_ops import ReLUConvBN, Zero

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

OpFactory = Callable[[int, bool], nn.Module]

OPS: dict[str, OpFactory] = {
    "none": lambda C, affine: Zero(stride=1),
    "skip_connect": lambda C, affine: nn.Identity(),
    "nor_conv_1x1": lambda C, affine: ReLUConvBN(C, C, 1, 1, 0, affine=affine),
    "nor_conv_3x3": lambda C, affine: ReLUConvBN(C, C, 3, 1, 1, affine=affine),
    "avg_pool_3x3": lambda C, affine: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
}


def make_op(name: str, C: int, *, affine: bool) -> nn.Module:
    return OPS[name](C, affine)


class ResidualBlock(nn.Module):
    """The stride-2 block joining two stages: ReLU-conv3×3(stride 2)-BN, ReLU-conv3×3-BN, plus a shortcut.

    The shortcut is a 2×2 average pool followed by a 1×1 conv (no BN).  The pool rounds up
    (``ceil_mode``) so that odd input sizes still match the strided conv's ⌈H/2⌉; on the
    even sizes of the benchmark this is the reference's plain pool.
    """

    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, affine=True)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine=True)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(2, stride=2, padding=0, ceil_mode=True),
            nn.Conv2d(C_in, C_out, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))
