"""The built-in datasets, registered through the ``selbench_register_datasets`` hook."""
from __future__ import annotations

from typing import Any

from ..registry import hookimpl
from .cifar import CIFAR10, CIFAR100
from .digits import Digits
from .fashion_mnist import FashionMnist
from .torchvision_adapter import TorchvisionDataset


@hookimpl
def selbench_register_datasets(register: Any) -> None:
    for dataset in (Digits(), FashionMnist(), CIFAR10, CIFAR100, TorchvisionDataset()):
        register(dataset)
