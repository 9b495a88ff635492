"""The benchmark grid: recipes × selectors × supernet seeds × retrain seeds, through the run store.

Each supernet is trained once per (recipe, seed) and shared by every selector; each
selection is retrained once per retrain seed.  Every unit is keyed by its full
configuration, so a grid that is interrupted and started again reuses what finished.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, cast

import torch

from selbench.bench.records import RecordError, RetrainRecord, SelectionRecord
from selbench.bench.store import RunStore, Unit
from selbench.core.errors import SelbenchError
from selbench.core.options import resolve_options
from selbench.plugin.host import plugin_host
from selbench.plugin.lookup import get_scorer
from selbench.recipes.recipe import Recipe, without_location_keys
from selbench.retrain.scoring import score_genotype
from selbench.select.contract import Selection, SelectionRun
from selbench.select.run import select
from selbench.train.checkpoint import checkpoint_data, load_supernet
from selbench.train.driver import train_supernet
from selbench.train.record import CHECKPOINT_FILE, RECORD_FILE, TRAIN_SECTIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridResult:
    supernets: int
    selections: int
    failed_selections: int
    retrains: int


def supernet_unit(store: RunStore, recipe: Recipe, seed: int, device: torch.device, progress: bool) -> Unit:
    config = {"recipe": recipe.hashed_sections(*TRAIN_SECTIONS), "seed": seed}

    def compute(work) -> dict[str, Any]:
        train_supernet(recipe, seed=seed, device=device, out_dir=work.directory, progress=progress)
        work.add_artifact(CHECKPOINT_FILE)
        work.add_artifact(RECORD_FILE)
        return {"recipe": recipe.name, "seed": seed}

    return store.run_unit("supernet", config, compute)


def selection_unit(store: RunStore, recipe: Recipe, supernet: Unit, selector: str, options: Mapping[str, Any],
                   seed: int, device: torch.device) -> Unit:
    registration = plugin_host().get("selector", selector)
    resolved = resolve_options(registration.obj.options, options, f"selector {selector!r}")
    config = {"supernet": supernet.key, "selector": selector, "distribution": registration.distribution,
              "version": registration.version, "options": resolved, "seed": seed}

    def compute(work) -> dict[str, Any]:
        net = load_supernet(supernet.artifact(CHECKPOINT_FILE))
        # this recipe, not the checkpoint's: a reused supernet may have found its data elsewhere
        data = (checkpoint_data(cast(Mapping[str, Any], net.metadata), recipe=recipe, device=device)
                if registration.obj.needs_data else None)  # metadata: attached by load_supernet
        try:
            selection = select(net, selector, data=data, seed=seed, device=device, search=recipe.search, **resolved)
        except SelbenchError:
            raise
        except Exception as exc:  # a crashing selector is a failed selection, counted on the leaderboard
            log.warning("selector %s crashed: %s", selector, exc)
            selection = SelectionRun(Selection(genotype=None, failure=f"crashed: {type(exc).__name__}: {exc}"),
                                     selector=selector, distribution=registration.distribution,
                                     version=registration.version, options=resolved, seed=seed, device=str(device))
        return SelectionRecord(recipe.name, supernet.key, int(supernet.config["seed"]), selection).to_result()

    return store.run_unit("selection", config, compute)


def retrain_unit(store: RunStore, recipe: Recipe, selection: Unit, seed: int, device: torch.device,
                 scorer: str = "retrain") -> Unit:
    chosen = SelectionRecord.from_result(selection.result)
    config = {"selection": selection.key, "scorer": scorer, "retrain": recipe.retrain,
              "data": without_location_keys("data", recipe.retrain_data()), "seed": seed}

    def compute(work) -> dict[str, Any]:
        genotype = chosen.selection.genotype
        if genotype is None:  # the grid retrains successful selections only
            raise RecordError(f"selection {selection.key[:16]} failed; a failed selection has nothing to retrain")
        score = score_genotype(scorer, genotype, recipe, seed=seed, device=device,
                               out_dir=work.directory)
        for name in score["artifacts"]:
            work.add_artifact(name)
        return RetrainRecord.from_score(chosen, selection_key=selection.key, retrain_seed=seed, scorer=scorer,
                                        score=score).to_result()

    return store.run_unit("retrain", config, compute)


def run_grid(recipes: Iterable[Recipe], selectors: Iterable[str], *, seeds: Iterable[int],
             retrain_seeds: Iterable[int], store: RunStore, device: str | torch.device = "cpu",
             options: Mapping[str, Mapping[str, Any]] | None = None, scorer: str = "retrain",
             progress: bool = True, on_unit: Callable[[str], None] | None = None) -> GridResult:
    """Run (or reuse) every unit of the grid; ``options`` maps selector names to option overrides."""
    device = torch.device(device)
    recipes, selectors, seeds, retrain_seeds = list(recipes), list(selectors), list(seeds), list(retrain_seeds)
    for name in selectors:
        plugin_host().get("selector", name)  # unknown names fail before any training
    chosen_scorer = get_scorer(scorer)
    if chosen_scorer.check is not None:
        for recipe in recipes:  # so does a recipe the scorer cannot score
            chosen_scorer.check(recipe)
    counts = {"supernets": 0, "selections": 0, "failed_selections": 0, "retrains": 0}
    for recipe in recipes:
        for seed in seeds:
            supernet = supernet_unit(store, recipe, seed, device, progress)
            counts["supernets"] += 1
            for name in selectors:
                chosen_options = {**recipe.selectors.get(name, {}), **(options or {}).get(name, {})}
                selection = selection_unit(store, recipe, supernet, name, chosen_options, seed, device)
                counts["selections"] += 1
                if selection.failed:
                    counts["failed_selections"] += 1
                    continue
                for retrain_seed in retrain_seeds:
                    retrain_unit(store, recipe, selection, retrain_seed, device, scorer)
                    counts["retrains"] += 1
    return GridResult(**counts)
