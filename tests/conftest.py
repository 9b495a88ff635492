"""Shared fixtures: tiny DARTS supernets and in-memory data (8×8 inputs, a few dozen images)."""
from __future__ import annotations

import pytest
import torch
from slurm import one_node_slurm

import selbench
import selbench.testing


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
    """Learnable toy images (selbench.testing's): the class sets the mean brightness of a quadrant."""
    return selbench.testing.tiny_data(n=n, channels=in_channels, classes=num_classes, batch_size=batch_size,
                                      seed=seed)


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


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A one-node Slurm cluster for the session (tests/slurm.py): the environment to run subprocesses with."""
    with one_node_slurm(tmp_path_factory.mktemp("slurm")) as env:
        yield env
