"""The built-in datasets, registered through the ``selbench_register_datasets`` hook."""
from __future__ import annotations

from typing import Any

from selbench.data.datasets.cifar import CIFAR10, CIFAR100
from selbench.data.datasets.digits import Digits
from selbench.data.datasets.fashion_mnist import FashionMnist
from selbench.data.datasets.svhn import Svhn
from selbench.data.datasets.torchvision_adapter import TorchvisionDataset
from selbench.plugin.host import hookimpl


@hookimpl
def selbench_register_datasets(register: Any) -> None:
    for dataset in (Digits(), FashionMnist(), CIFAR10, CIFAR100, Svhn(), TorchvisionDataset()):
        register(dataset)
