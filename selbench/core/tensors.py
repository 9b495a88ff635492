"""Tensor plumbing every stage shares: the batch type and moving nested results to the host in one transfer."""
from __future__ import annotations

import functools
from typing import Any, Mapping

import torch
from torch import Tensor

Batch = tuple[Tensor, Tensor]
"""One ``(images, labels)`` batch: images ``[B, C, H, W]`` float, labels ``[B]`` int64, on one device."""


def to_host(tree: Any) -> Any:
    """``tree`` (nested dicts, lists, tuples) with every tensor replaced by its value as Python numbers / nested lists.

    All tensors travel to the host in one transfer, as the type they promote to together.
    """
    leaves: list[Tensor] = []

    def collect(node: Any) -> None:
        if isinstance(node, Tensor):
            leaves.append(node.detach())
        elif isinstance(node, Mapping):
            for value in node.values():
                collect(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                collect(value)

    collect(tree)
    if not leaves:
        return tree
    dtype = functools.reduce(torch.promote_types, (leaf.dtype for leaf in leaves))
    flat = torch.cat([leaf.to(dtype).flatten() for leaf in leaves]).cpu()
    offset = 0

    def rebuild(node: Any) -> Any:
        nonlocal offset
        if isinstance(node, Tensor):
            value = flat[offset:offset + node.numel()].view(node.shape).tolist()
            offset += node.numel()
            return value
        if isinstance(node, Mapping):
            return {key: rebuild(value) for key, value in node.items()}
        if isinstance(node, (list, tuple)):
            return [rebuild(value) for value in node]
        return node

    return rebuild(tree)
