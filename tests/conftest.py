"""Shared fixtures: tiny DARTS supernets and in-memory data (8×8 inputs, a few dozen images)."""
from __future__ import annotations

import pytest
import torch

import selbench


def tiny_supernet(seed: int = 0, *, C: int = 4, layers: int = 2, steps: int = 4, ops=None, in_channels: int = 1,
                  num_classes: int = 4):
    """A DARTS supernet small enough to run anything on it in well under a second."""
    torch.manual_seed(seed)
    kwargs = dict(C=C, layers=layers, steps=steps, num_classes=num_classes, in_channels=in_channels)
    if ops is not None:
        kwargs["ops"] = ops
    return selbench.get_space("darts").build_supernet(**kwargs)


def tiny_nb201_supernet(seed: int = 0, *, C: int = 4, N: int = 1, in_channels: int = 1, num_classes: int = 4):
    """An NAS-Bench-201 supernet (α of shape [6, 5] under ``cell``) for 8×8 inputs."""
    torch.manual_seed(seed)
    return selbench.get_space("nb201").build_supernet(C=C, N=N, num_classes=num_classes, in_channels=in_channels)


def tiny_data(seed: int = 0, *, n: int = 32, in_channels: int = 1, num_classes: int = 4, batch_size: int = 16):
    """Learnable toy images: the class sets the mean brightness of a quadrant."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (2 * n,), generator=g)
    images = 0.3 * torch.randn(2 * n, in_channels, 8, 8, generator=g)
    for k in range(num_classes):
        r, c = divmod(k % 4, 2)
        images[labels == k, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 1.0
    return selbench.TensorData(train=(images[:n], labels[:n]), valid=(images[n:], labels[n:]), batch_size=batch_size)


@pytest.fixture
def supernet():
    return tiny_supernet()


@pytest.fixture
def data():
    return tiny_data()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: a second intra-op thread only adds contention on a busy machine (use via usefixtures)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
