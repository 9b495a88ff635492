"""What a retrain is of — genotype, recipe configuration, seed — as a dict and as a short key."""
from __future__ import annotations

from typing import Any

from selbench.core.files import config_key
from selbench.core.genotype import Genotype
from selbench.recipes.recipe import Recipe


def retrain_identity(genotype: Genotype, recipe: Recipe, seed: int, *, holdout: bool = False) -> dict[str, Any]:
    """What an interrupted retrain's state belongs to: the genotype, the recipe's configuration hash, the seed
    (and ``holdout`` when set: training on the θ split only)."""
    identity = {"genotype": genotype.to_dict(), "recipe": recipe.config_hash("supernet", "data", "retrain"),
                "seed": int(seed)}
    return {**identity, "holdout": True} if holdout else identity


def retrain_key(genotype: Genotype, recipe: Recipe, seed: int) -> str:
    """A short hash of :func:`retrain_identity` (12 hex digits), e.g. for a default output directory."""
    return config_key(retrain_identity(genotype, recipe, seed))[:12]
