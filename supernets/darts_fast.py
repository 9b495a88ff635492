"""A faster forward of the DARTS search cell that computes the same function from the same modules.

The reference (:meth:`SearchCell.forward`) evaluates every edge as ``Σ_o w_o · o(x)``: each
of the edge's four conv ops applies its own ReLU to the same input, each pool runs once per
edge, ``none`` computes ``0 · x`` and then ``w · 0``, and every op's output is multiplied by
its mixing weight before it is added.  The same sums are computed here with less memory
traffic, reading the cell's own modules, parameters and buffers (so ``functional_call``,
state dicts and checkpoints see no difference):

* ``ReLU(x_i)`` is computed once per node ``x_i`` and shared by all the conv ops of all the
  edges leaving it (every edge reads only its source node);
* each pool runs once per node and stride; the edges' BatchNorms still normalise it one by
  one, each with its own running statistics;
* ``none`` is skipped: it adds exactly zero, and its mixing weight's gradient is then zero,
  as ``∂(w · 0)/∂w`` is in the reference;
* the mixing weight of an op that ends in a BatchNorm (every op except the identity
  ``skip_connect``) becomes that BatchNorm's per-channel scale, ``w · BN(z) = BN_w(z)``, so
  the multiply costs no pass of its own; the identity is added with one fused ``addcmul``;
* the 1×1 convolutions of the conv ops run as one matrix product over the channels when the
  data is channels-last (:func:`pointwise`).

BatchNorm keeps nn.BatchNorm2d's semantics exactly (train/eval mode, ``track_running_stats``,
``momentum``, ``num_batches_tracked``), so the running statistics of every op are updated as the
reference updates them.  Per-op convolutions are kept: grouping an op's convolutions across
edges into one grouped call measured slower on the CPU (oneDNN) than the separate calls.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .darts_ops import DilConv, FactorizedReduce, SepConv, Zero

Term = Tensor | tuple[Tensor, Tensor]  # an op's w · o(x), or (w, x) for the identity, added with addcmul


class SearchCellParts(Protocol):
    """What the fast forward reads of a DARTS search cell (:class:`.darts_supernet.SearchCell`)."""

    reduction: bool
    _steps: int
    _multiplier: int
    _ops: nn.ModuleList  # one MixedOp per edge, its candidate ops in ``_ops``
    preprocess0: Callable[[Tensor], Tensor]
    preprocess1: Callable[[Tensor], Tensor]


def scaled_batch_norm(bn: nn.BatchNorm2d, x: Tensor, scale: Tensor | None = None) -> Tensor:
    """``scale · bn(x)`` for a non-affine ``bn`` in one call, updating its running statistics as ``bn(x)`` would."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average, as nn.BatchNorm2d does
            momentum = 1.0 / float(bn.num_batches_tracked)
    use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    weight: Tensor | None = bn.weight
    if scale is not None:
        channels = scale.expand(x.shape[1]).contiguous()  # a stride-0 weight takes a slow CPU kernel
        weight = channels if weight is None else weight * channels
    bias = bn.bias if scale is None or bn.bias is None else bn.bias * scale
    return F.batch_norm(x, bn.running_mean if track else None, bn.running_var if track else None,
                        weight, bias, use_batch_stats, momentum, bn.eps)


class NodeInputs:
    """One node ``x_i`` with the results its outgoing edges share: ReLU(x_i) and its pooled maps."""

    def __init__(self, x: Tensor):
        self.x = x
        self._relu: Tensor | None = None
        self._pooled: dict[tuple, Tensor] = {}

    @property
    def relu(self) -> Tensor:
        if self._relu is None:
            self._relu = F.relu(self.x)
        return self._relu

    def pooled(self, pool: nn.Module) -> Tensor:
        """``pool(x_i)``, computed once per pool kind, size, stride and padding."""
        key = (type(pool), pool.kernel_size, pool.stride, pool.padding)
        if key not in self._pooled:
            self._pooled[key] = pool(self.x)
        return self._pooled[key]


def pointwise(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)`` for a bias-free 1×1 stride-1 ``conv``: on channels-last ``x``, one matrix product over channels.

    Channels-last data is already a [pixels, channels] matrix, and oneDNN's matrix product (forward
    and backward) beats its 1×1 convolution on DARTS's sizes; the result is the same sum.
    """
    if is_channels_last(x):
        return F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1)).permute(0, 3, 1, 2)
    return conv(x)


def is_channels_last(x: Tensor) -> bool:
    """Whether the 4-D ``x`` is dense channels-last (and not also contiguous, as 1×1 maps are).

    Read off the strides: ``torch.func.vmap`` answers ``is_contiguous`` only for the default format.
    """
    batch, channels, height, width = x.shape
    return channels > 1 and x.stride() == (height * width * channels, 1, width * channels, channels)


# nn.Sequential types its layers as nn.Module; the casts below name the layers the ops are built from.
def _sep_conv(op: SepConv, node: NodeInputs, scale: Tensor) -> Tensor:
    _, depthwise1, pointwise1, bn1, relu, depthwise2, pointwise2, bn2 = op.op
    hidden = scaled_batch_norm(cast(nn.BatchNorm2d, bn1),
                               pointwise(cast(nn.Conv2d, pointwise1), depthwise1(node.relu)))
    return scaled_batch_norm(cast(nn.BatchNorm2d, bn2),
                             pointwise(cast(nn.Conv2d, pointwise2), depthwise2(relu(hidden))), scale)


def _dil_conv(op: DilConv, node: NodeInputs, scale: Tensor) -> Tensor:
    _, depthwise, pointwise_conv, bn = op.op
    return scaled_batch_norm(cast(nn.BatchNorm2d, bn),
                             pointwise(cast(nn.Conv2d, pointwise_conv), depthwise(node.relu)), scale)


def _factorized_reduce(op: FactorizedReduce, node: NodeInputs, scale: Tensor) -> Tensor:
    return scaled_batch_norm(op.bn, op.reduce_convs(node.relu), scale)


def _pool_bn(op: nn.Sequential, node: NodeInputs, scale: Tensor) -> Tensor:
    pool, bn = op
    return scaled_batch_norm(cast(nn.BatchNorm2d, bn), node.pooled(pool), scale)


def _is_pool_bn(op: nn.Module) -> bool:
    return (isinstance(op, nn.Sequential) and len(op) == 2 and isinstance(op[0], (nn.MaxPool2d, nn.AvgPool2d))
            and isinstance(op[1], nn.BatchNorm2d))


def scaled_op(op: nn.Module) -> Callable[[Any, NodeInputs, Tensor], Tensor] | None:
    """The function computing ``w · op(x)`` in one pass for ``op``'s kind, ``None`` for the identity and ``none``.

    It takes ``op`` itself as its first argument (its type depends on the kind, hence ``Any``).
    """
    if isinstance(op, SepConv):
        return _sep_conv
    if isinstance(op, DilConv):
        return _dil_conv
    if isinstance(op, FactorizedReduce):
        return _factorized_reduce
    if _is_pool_bn(op):
        return _pool_bn
    if isinstance(op, (Zero, nn.Identity)):
        return None
    return lambda module, node, scale: scale * module(node.x)


def mixed_edge_terms(mixed_op: nn.Module, node: NodeInputs, weights: Tensor,
                     active: Sequence[int] | None = None) -> list[Term]:
    """The terms ``w_o · o(x)`` of one edge whose sum is the reference's ``Σ_o w_o · o(x)``, ``none`` left out.

    ``active``: only these op indices are computed (the others count as zero).  The identity
    comes last as a ``(w, x)`` pair folded into the sum with ``addcmul``.
    """
    terms: list[Term] = []
    identity = None
    scales = weights.unbind(0)
    ops = cast(nn.ModuleList, mixed_op._ops)  # a MixedOp's candidate ops
    for k in range(len(ops)) if active is None else active:
        scale, op = scales[k], ops[k]
        compute = scaled_op(op)
        if compute is not None:
            terms.append(compute(op, node, scale))
        elif isinstance(op, nn.Identity):
            identity = scale
    if identity is not None:
        terms.append((identity, node.x))
    return terms


def weighted_sum(terms: Sequence[Term], like: Tensor, stride: int) -> Tensor:
    """Σ terms, where a ``(w, x)`` pair means ``w · x``; zeros shaped like ``like[::stride]`` when empty."""
    total = None
    for term in terms:
        if isinstance(term, tuple):
            scale, x = term
            total = scale * x if total is None else torch.addcmul(total, scale, x)
        else:
            total = term if total is None else total + term
    if total is None:
        return node_zeros(like, stride)
    return total


def node_zeros(like: Tensor, stride: int) -> Tensor:
    """Zeros shaped like ``like[::stride]``: an intermediate node with no inputs (stride 2 in a reduction cell)."""
    return like.new_zeros(like[:, :, ::stride, ::stride].shape)


def fast_cell_forward(cell: nn.Module, s0: Tensor, s1: Tensor, weights: Tensor,
                      active: Sequence[Sequence[int]] | None = None) -> Tensor:
    """The search cell's output, equal to ``cell(s0, s1, weights, active)``: node j = Σ_{i<j} Σ_o w_(i,j),o · o(x_i).

    ``active[e]``, when given, lists the ops edge ``e`` computes (ascending); the rest count as zero.
    """
    parts = cast(SearchCellParts, cell)  # nn.Module types a module's attributes as Tensor | Module
    nodes = [NodeInputs(parts.preprocess0(s0)), NodeInputs(parts.preprocess1(s1))]
    rows = weights.unbind(0)
    offset = 0
    for _ in range(parts._steps):
        terms: list[Term] = []
        for j, node in enumerate(nodes):
            edge = offset + j
            edge_active = None if active is None else active[edge]
            terms.extend(mixed_edge_terms(parts._ops[edge], node, rows[edge], edge_active))
        offset += len(nodes)
        nodes.append(NodeInputs(weighted_sum(terms, nodes[0].x, 2 if parts.reduction else 1)))
    outputs = [node.x for node in nodes[-parts._multiplier:]]
    outputs[-1] = with_dense_gradient(outputs[-1])
    return torch.cat(outputs, dim=1)


def with_dense_gradient(node: Tensor) -> Tensor:
    """``node`` itself, with a backward that hands its sum's terms a dense gradient.

    The gradient of a concatenated node is a channel slice of the cell's output gradient, and
    ``+`` passes it on as is, so without this every BatchNorm of the last node's terms would
    run its backward on a strided slice (a CPU slow path, ~6× the dense time).  The other
    nodes get dense sums from the edges that read them.  ``· 1.0`` costs one pass each way.
    """
    return node * 1.0
