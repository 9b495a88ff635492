"""The dataset contract: what a dataset plugin registers and the uint8 image set it loads."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from selbench.core.errors import SelbenchError


@dataclass(frozen=True)
class ImageSet:
    """A dataset as loaded: uint8 images ``[N, C, H, W]``, int64 labels in ``[0, num_classes)``.

    ``mean``/``std`` (per channel, on the 0–1 scale) normalise the images; ``None`` means
    "compute them from the training images".
    """

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def check(self, name: str) -> None:
        """Raise :class:`SelbenchError` if the tensors do not have the promised types and shapes."""
        for split, images, labels in (("train", self.train_images, self.train_labels),
                                      ("test", self.test_images, self.test_labels)):
            where = f"dataset {name!r}, {split} split"
            if images.dtype != torch.uint8 or images.dim() != 4:
                raise SelbenchError(f"{where}: images must be uint8 [N, C, H, W], got {images.dtype} "
                                    f"{tuple(images.shape)}")
            if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
                raise SelbenchError(f"{where}: labels must be int64 [{images.shape[0]}], got {labels.dtype} "
                                    f"{tuple(labels.shape)}")
            if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < self.num_classes:
                raise SelbenchError(f"{where}: labels must lie in [0, {self.num_classes})")
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise SelbenchError(f"dataset {name!r}: train images {tuple(self.train_images.shape[1:])} and test "
                                f"images {tuple(self.test_images.shape[1:])} differ in shape")


@runtime_checkable
class Dataset(Protocol):
    """What ``selbench_register_datasets`` registers.

    ``load(root, download=...)`` returns the :class:`ImageSet`; ``root`` is the directory
    holding the files (``None``: the dataset's default places); a missing file is one
    :class:`SelbenchError` line naming the directory, the expected files and ``--download``.
    A dataset with an optional ``variant(arg)`` method is also reachable as ``"name:arg"``.
    """

    name: str
    description: str

    def load(self, root: Path | None, *, download: bool = False) -> ImageSet: ...
