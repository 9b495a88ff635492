"""Run one scorer on one genotype: build its context, call it, check what it returned."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from selbench.core.errors import PluginError
from selbench.core.genotype import Genotype
from selbench.plugin.lookup import get_scorer
from selbench.retrain.scorer import (
    Progress,
    Scorer,
    ScoringContext,
    no_progress,
    validate_score,
)


def score_genotype(scorer: str | Scorer, genotype: Genotype, recipe: Any, *, seed: int,
                   device: str | torch.device, out_dir: str | os.PathLike,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Run one scorer on one genotype and return its validated result."""
    chosen = get_scorer(scorer) if isinstance(scorer, str) else scorer
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = ScoringContext(genotype, recipe, seed, torch.device(device), out_dir, progress or no_progress)
    result = validate_score(chosen.name, chosen.score(ctx))
    missing = [name for name in result["artifacts"] if not (out_dir / name).is_file()]
    if missing:
        raise PluginError(f"scorer {chosen.name!r} listed artifacts {missing} that are not files in {out_dir}")
    return result
