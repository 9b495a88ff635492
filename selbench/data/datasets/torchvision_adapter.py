"""Any ``torchvision.datasets`` class, named in a recipe as ``"torchvision:ClassName"``.

torchvision is optional: it is imported only when such a dataset is loaded.  The class is
called as ``Class(root, train=..., download=...)`` (or ``split="train"/"test"`` for classes
such as SVHN) and must expose its images as ``.data`` and its labels as ``.targets`` or
``.labels``, as torchvision's in-memory image datasets do.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from selbench.core.errors import SelbenchError
from selbench.data.datasets.files import default_data_dir
from selbench.data.loading import ImageSet


@dataclass(frozen=True)
class TorchvisionDataset:
    name: str = "torchvision"
    description: str = "any torchvision.datasets class with in-memory images, as torchvision:ClassName"
    class_name: str | None = None

    def variant(self, class_name: str) -> TorchvisionDataset:
        return TorchvisionDataset(name=f"torchvision:{class_name}", description=self.description,
                                  class_name=class_name)

    def load(self, root: Path | None, *, download: bool = False) -> ImageSet:
        if self.class_name is None:
            raise SelbenchError("dataset 'torchvision' needs a class name: write e.g. dataset = \"torchvision:MNIST\"")
        try:
            datasets = importlib.import_module("torchvision.datasets")
        except ImportError:
            raise SelbenchError(f"dataset {self.name!r} needs torchvision, which does not import here; "
                                "install it (pip install torchvision) or use a built-in dataset") from None
        cls = getattr(datasets, self.class_name, None)
        if not isinstance(cls, type):
            raise SelbenchError(f"torchvision.datasets has no class {self.class_name!r}")
        directory = str(root if root is not None else default_data_dir("torchvision"))
        train, test = (_instantiate(cls, directory, part, download, self.name) for part in ("train", "test"))
        train_images, train_labels = _arrays(train, self.name)
        test_images, test_labels = _arrays(test, self.name)
        classes = getattr(train, "classes", None)
        num_classes = len(classes) if classes else int(max(train_labels.max(), test_labels.max())) + 1
        return ImageSet(train_images=train_images, train_labels=train_labels, test_images=test_images,
                        test_labels=test_labels, num_classes=num_classes)


def _instantiate(cls: type, root: str, part: str, download: bool, name: str) -> Any:
    try:
        try:
            return cls(root, train=part == "train", download=download)
        except TypeError:
            return cls(root, split=part, download=download)
    except (RuntimeError, OSError) as exc:
        raise SelbenchError(f"dataset {name!r} in {root}: {exc} (use --download or set [data] root)") from None


def _arrays(dataset: Any, name: str) -> tuple[Tensor, Tensor]:
    """``.data`` as uint8 [N, C, H, W] (from [N, H, W], [N, H, W, C] or [N, C, H, W]) and int64 labels."""
    data = getattr(dataset, "data", None)
    labels = getattr(dataset, "targets", getattr(dataset, "labels", None))
    if data is None or labels is None:
        raise SelbenchError(f"dataset {name!r} keeps no in-memory .data and .targets/.labels; it cannot be used here")
    images = torch.as_tensor(np.asarray(data))
    if images.dtype != torch.uint8:
        raise SelbenchError(f"dataset {name!r} has {images.dtype} images; selbench needs uint8 pixels")
    if images.dim() == 3:
        images = images[:, None]
    elif images.dim() == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2)
    if images.dim() != 4:
        raise SelbenchError(f"dataset {name!r} has images of shape {tuple(images.shape)}; expected 3 or 4 dimensions")
    return images.contiguous(), torch.as_tensor(np.asarray(labels), dtype=torch.int64)
