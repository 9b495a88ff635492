"""One supernet measured under several mixing weights in one vectorised pass (``torch.func.vmap``).

Each candidate is a mapping cell type -> mixing weights, as :meth:`SelectionContext.evaluate`
takes; the K candidates' weights are stacked to ``[K, E, O]`` and the supernet's forward is
vmapped over them, so every kernel runs once on K× the data instead of K times.  BatchNorm
in batch-statistics mode then normalises each candidate's activations with that
candidate's own mean and variance, as K separate passes would (vmap's batch-norm rule keeps
the vmapped dimension out of the statistics).  Running statistics must not change inside
(``batchnorm_mode`` guarantees it): vmap cannot batch those in-place updates.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

from selbench.core.errors import SelbenchError
from selbench.core.tensors import Batch

Candidate = Mapping[str, Tensor]


def stack_candidates(candidates: Sequence[Candidate]) -> dict[str, Tensor]:
    """The candidates' weights per cell type, stacked to ``[K, E, O]`` (all must name the same cell types)."""
    cell_types = list(candidates[0])
    if any(list(candidate) != cell_types for candidate in candidates):
        raise ValueError("every candidate must give mixing weights for the same cell types, in the same order")
    return {cell_type: torch.stack([candidate[cell_type] for candidate in candidates]) for cell_type in cell_types}


class NotVectorisable(Exception):
    """``torch.func.vmap`` cannot vectorise the supernet's forward (e.g. it branches on tensor values)."""


def evaluate_candidates(supernet: nn.Module, candidates: Sequence[Candidate], passes: Sequence[Sequence[Batch]],
                        *, shared: bool) -> tuple[Tensor, Tensor]:
    """Accuracy and mean loss ``[K]`` (device tensors) of ``supernet`` under each of the K ``candidates``.

    ``passes[k]`` holds candidate k's batches (all passes as long as one another); ``shared``:
    every pass is the same one, so the candidates share each batch and whatever does not
    depend on the weights (e.g. the stem) is computed once.  The supernet's mode (BatchNorm)
    is the caller's to set.  Raises :class:`NotVectorisable` when vmap cannot run the forward.
    """
    stacked = stack_candidates(candidates)
    count = len(candidates)
    loss_sum = torch.zeros(count, device=next(iter(stacked.values())).device)
    correct = torch.zeros(count, dtype=torch.int64, device=loss_sum.device)
    seen = 0

    def logits_of(images: Tensor, weights: Mapping[str, Tensor]) -> Tensor:
        return supernet(images, weights)

    for step in zip(*passes):
        if shared:
            images, labels = step[0]
        else:
            images, labels = torch.stack([x for x, _ in step]), torch.stack([y for _, y in step])
        try:
            logits = vmap(logits_of, in_dims=(None if shared else 0, 0))(images, stacked)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as exc:
            raise NotVectorisable(str(exc).strip().splitlines()[0]) from exc
        labels = labels.expand(count, -1) if shared else labels
        losses = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(count, -1)
        loss_sum = loss_sum + losses.sum(1).to(loss_sum.dtype)
        correct = correct + (logits.argmax(-1) == labels).sum(1)
        seen += labels.shape[1]
    if seen == 0:
        raise SelbenchError("the evaluation split produced no batches")
    return correct / seen, loss_sum / seen
