"""The built-in ``retrain`` scorer: train a discrete cell's network from scratch and test it.

The training itself is :func:`selbench.retrain.training.retrain`: the recipe's ``[retrain]``
section sets the network and its training (by default DARTS's evaluation recipe at paper
scale), the network trains on every training image the ``[data]`` section keeps, is scored
once on the test split, and resumes from its last finished epoch when interrupted.
"""
from __future__ import annotations

from typing import Any

from selbench.plugin.host import hookimpl
from selbench.retrain.scorer import Scorer, ScoringContext
from selbench.retrain.training import retrain


def _score(ctx: ScoringContext) -> dict[str, Any]:
    return retrain(ctx.genotype, ctx.recipe, seed=ctx.seed, device=ctx.device, out_dir=ctx.out_dir,
                   progress=ctx.progress)


RETRAIN_SCORER = Scorer(name="retrain", score=_score,
                        description="train the discrete network from scratch with the recipe's [retrain] section")


@hookimpl
def selbench_register_scorers(register) -> None:
    register(RETRAIN_SCORER)
