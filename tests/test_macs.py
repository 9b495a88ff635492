"""Multiply-add and parameter counting against hand counts, brute force, and torch's own FLOP counter."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import selbench
from darts_reference import DARTS_TEXT
from selbench import count_macs, count_parameters


def brute_force_conv_macs(c_in, c_out, k, stride, padding, dilation, groups, h, w):
    """Count the multiplies by convolving all-ones: each output of an all-ones conv sums 1 per multiply.

    The padding is materialised as ones so that multiplications with padded positions count too.
    """
    ones = torch.ones(1, c_in, h + 2 * padding, w + 2 * padding, dtype=torch.float64)
    weight = torch.ones(c_out, c_in // groups, k, k, dtype=torch.float64)
    return int(F.conv2d(ones, weight, stride=stride, dilation=dilation, groups=groups).sum())


CONVS = [  # c_in, c_out, k, stride, padding, dilation, groups, h, w
    (3, 8, 3, 1, 1, 1, 1, 8, 8),
    (3, 8, 3, 2, 1, 1, 1, 10, 10),
    (4, 4, 3, 1, 2, 2, 4, 7, 7),     # depthwise, dilated (DARTS dil_conv_3x3)
    (4, 8, 5, 2, 2, 1, 2, 9, 6),     # grouped, strided, non-square input
    (6, 6, 5, 1, 4, 2, 6, 8, 8),     # depthwise 5x5 dilation 2 (dil_conv_5x5)
    (5, 7, 1, 2, 0, 1, 1, 7, 7),     # 1x1 stride 2 (factorized reduce)
]


@pytest.mark.parametrize("c_in,c_out,k,stride,padding,dilation,groups,h,w", CONVS)
def test_conv_macs_match_formula_and_brute_force(c_in, c_out, k, stride, padding, dilation, groups, h, w):
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=False)
    h_out = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    w_out = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    by_hand = c_out * h_out * w_out * (c_in // groups) * k * k
    assert count_macs(conv, (c_in, h, w)) == by_hand
    assert by_hand == brute_force_conv_macs(c_in, c_out, k, stride, padding, dilation, groups, h, w)


def test_linear_macs_count_every_position():
    assert count_macs(nn.Linear(6, 5), (6,)) == 30
    assert count_macs(nn.Linear(6, 5), (4, 6)) == 4 * 30  # applied at 4 positions


def test_small_network_by_hand():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),                 # 4 x 8 x 8 outputs, 1*9 each: 2304
        nn.BatchNorm2d(4),                             # not counted
        nn.ReLU(),
        nn.MaxPool2d(2),                               # -> 4 x 4 x 4, not counted
        nn.Conv2d(4, 8, 3, stride=2, groups=2),        # -> 8 x 1 x 1, (4/2)*9 each: 144
        nn.Flatten(),
        nn.Linear(8, 3),                               # 3 outputs, 8 each: 24
    )
    assert count_macs(net, (1, 8, 8)) == 2304 + 144 + 24
    # conv 36 + 4 bias, BN 4 + 4, grouped conv 8*2*9 + 8, linear 24 + 3
    assert count_parameters(net) == 40 + 8 + 152 + 27


def test_module_called_twice_counts_twice_and_modes_are_restored():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x):
            return self.conv(self.bn(self.conv(x)))

    net = Twice().train()
    net.bn.eval()
    assert count_macs(net, (2, 5, 5)) == 2 * (2 * 25 * 2 * 9)
    assert net.training and net.conv.training and not net.bn.training
    assert not net.conv._forward_hooks


def test_unknown_weighted_module_is_refused():
    with pytest.raises(selbench.SelbenchError, match="ConvTranspose2d"):
        count_macs(nn.Sequential(nn.ConvTranspose2d(2, 2, 3)), (2, 4, 4))


def test_count_parameters_excludes_by_name():
    net = nn.ModuleDict({"body": nn.Linear(3, 2), "auxiliary_head": nn.Linear(10, 10)})
    assert count_parameters(net) == 3 * 2 + 2
    assert count_parameters(net, exclude=()) == 8 + 110


def test_darts_v2_evaluation_network():
    """DARTS_V2 at C=36, 20 cells, 32x32: DARTS's 3,349,342 parameters and ~528M multiply-adds."""
    genotype = selbench.Genotype.parse(DARTS_TEXT["DARTS_V2"])
    net = selbench.get_space("darts").build_network(genotype, C=36, layers=20, auxiliary=True)
    assert count_parameters(net) == 3_349_342  # "param size = 3.349342MB" in DARTS's log
    macs = count_macs(net, (3, 32, 32))
    assert 520e6 <= macs <= 600e6
    net.eval()
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        net(torch.zeros(1, 3, 32, 32))
    assert macs == flops.get_total_flops() // 2  # torch counts 2 FLOPs per multiply-add
