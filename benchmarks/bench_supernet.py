"""pytest-benchmark baselines of the DARTS supernet's hot paths, for ``tox -e bench`` to compare run to run.

* one search step (forward + backward) of a demo-sized supernet, with softmax(α) and with
  explicit mixing weights (the path every selector's masked or projected evaluation takes);
* one alpha-magnitude selection end to end (dominated by the private copy of the supernet).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import selbench

C, LAYERS, BATCH, SIZE, CLASSES = 4, 5, 32, 16, 10


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    return selbench.get_space("darts").build_supernet(C=C, layers=LAYERS, num_classes=CLASSES, in_channels=1)


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(BATCH, 1, SIZE, SIZE, generator=generator), torch.randint(0, CLASSES, (BATCH,), generator=generator)


def search_step(supernet, images, labels, weights=None) -> torch.Tensor:
    supernet.zero_grad(set_to_none=True)
    loss = F.cross_entropy(supernet(images, weights), labels)
    loss.backward()
    return loss.detach()


def test_search_step_softmax_alpha(benchmark, supernet, batch):
    supernet.train()
    loss = benchmark(search_step, supernet, *batch)
    assert torch.isfinite(loss)


def test_search_step_explicit_mixing_weights(benchmark, supernet, batch):
    supernet.train()
    weights = {k: F.softmax(a.detach(), dim=-1).requires_grad_() for k, a in supernet.alphas.items()}
    loss = benchmark(search_step, supernet, *batch, weights)
    assert torch.isfinite(loss)


def test_alpha_magnitude_selection(benchmark, supernet):
    selection = benchmark(selbench.select, supernet, "alpha-magnitude")
    selection.genotype.validate(supernet.space)
