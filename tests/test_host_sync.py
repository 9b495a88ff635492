"""No host synchronisation inside a training step: supernet θ/α steps of every search mode and the retrain step."""
from __future__ import annotations

import pytest
import torch
from test_graphs import nb201_network

import selbench
from darts_reference import DARTS_TEXT
from selbench.retrain.training import train_epoch
from selbench.testing import HostSyncError, no_host_sync, tiny_data, tiny_supernet
from selbench.train.loop import UNUSED_ALPHA_MODES, search_epoch
from selbench.train.sampling import HARD_MODES, ArchSampler

SYNCS = {
    "item": lambda x: x.sum().item(),
    "float": lambda x: float(x.sum()),
    "bool": lambda x: bool((x > 0).all()),
    "tolist": lambda x: x.tolist(),
    "cpu": lambda x: x.cpu(),
    "numpy": lambda x: x.numpy(),
    "nonzero": lambda x: x.nonzero(),
    "boolean mask": lambda x: x[x > 0],
    "masked_select": lambda x: x.masked_select(x > 0),
    "unique": lambda x: x.unique(),
}


@pytest.mark.parametrize("name", list(SYNCS))
def test_the_detector_catches_every_kind_of_host_sync(name):
    with pytest.raises(HostSyncError, match="host sync"), no_host_sync():
        SYNCS[name](torch.arange(4.0))


def test_the_detector_lets_device_work_through_and_reads_allowed_host_tensors():
    counter = torch.tensor(3.0)
    x = torch.arange(4.0, requires_grad=True)
    with no_host_sync(lambda: [counter]):
        (x * x).sum().backward()
        torch.where(x > 1, x, 0.0).sum()
        assert counter.item() == 3.0
    assert torch.equal(x.grad, 2 * x.detach())


def _epoch(mode: str, sampler: ArchSampler | None = None) -> None:
    supernet = tiny_supernet("darts")
    data = tiny_data()
    w_optimizer = torch.optim.SGD(supernet.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_optimizer = None if mode in UNUSED_ALPHA_MODES else torch.optim.Adam(supernet.arch_parameters(), lr=3e-4)
    # Adam without capturable=True keeps its step counter on the host even for CUDA parameters: reading it is no sync
    counters = (lambda: [s["step"] for s in a_optimizer.state.values()]) if a_optimizer is not None else tuple
    with no_host_sync(counters):
        search_epoch(supernet, data.batches("train"), lambda: data.batches("valid"), w_optimizer=w_optimizer,
                     a_optimizer=a_optimizer, mode=mode, sampler=sampler)


@pytest.mark.parametrize("mode", ["single-level", "bilevel-1st", "bilevel-2nd", "frozen-alpha", "snas"])
def test_search_steps_make_no_host_sync(mode):
    _epoch(mode)


@pytest.mark.parametrize("mode", HARD_MODES)
def test_hard_sampling_modes_make_no_host_sync_when_computing_every_op(mode):
    _epoch(mode, ArchSampler(mode, sampled_only=False))


@pytest.mark.parametrize("mode", HARD_MODES)
def test_hard_sampling_modes_read_their_sampled_ops_on_the_host_by_design(mode):
    """Computing only the sampled op of each edge is decided in Python: one copy of the choices per step."""
    with pytest.raises(HostSyncError, match=r"Tensor\.tolist"):
        _epoch(mode)


def test_darts_retrain_step_makes_no_host_sync():
    torch.manual_seed(0)
    network = selbench.get_space("darts").build_network(selbench.Genotype.parse(DARTS_TEXT["DARTS_V2"]), C=8, layers=5,
                                                        auxiliary=True, num_classes=10, in_channels=3)
    network.drop_path_prob = 0.2
    optimizer = torch.optim.SGD(network.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    data = tiny_data(image_size=32, channels=3)
    with no_host_sync():
        train_epoch(network, data.batches("train"), optimizer, auxiliary_weight=0.4, grad_clip=5.0)


def test_nb201_retrain_step_makes_no_host_sync():
    network, optimizer = nb201_network(nesterov=True)
    data = tiny_data()
    with no_host_sync():
        train_epoch(network, data.batches("train"), optimizer, auxiliary_weight=0.4, grad_clip=0.0)
