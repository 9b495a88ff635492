"""The benchmark grid: recipes × selectors × supernet seeds × retrain seeds, through the run store.

Each supernet is trained once per (recipe, seed) and shared by every selector; each
selection is retrained once per retrain seed.  Every unit is keyed by its full
configuration, so a grid that is interrupted and started again reuses what finished.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence, cast

import torch
from tqdm import tqdm

from selbench.bench.records import RecordError, RetrainRecord, SelectionRecord
from selbench.bench.store import Busy, RunStore, Unit, UnitWork
from selbench.bench.unit_bar import UnitBar
from selbench.core.errors import OptionError
from selbench.core.files import config_key
from selbench.core.options import resolve_options
from selbench.core.precision import PRECISIONS, check_precision
from selbench.plugin.host import plugin_host
from selbench.plugin.lookup import get_scorer
from selbench.recipes.recipe import Recipe, without_location_keys
from selbench.retrain.scoring import score_genotype
from selbench.select.run import select
from selbench.train.checkpoint import checkpoint_data, load_supernet
from selbench.train.driver import train_supernet
from selbench.train.record import CHECKPOINT_FILE, RECORD_FILE, TRAIN_SECTIONS


@dataclass(frozen=True)
class GridResult:
    supernets: int
    selections: int
    failed_selections: int
    retrains: int
    crashed: tuple[str, ...] = ()  # the crashed units, in words; the next run retries them


@dataclass(frozen=True)
class Task:
    """One unit of the grid, ready to run through the store."""

    kind: str
    recipe: Recipe
    config: Mapping[str, Any]
    compute: Callable[[UnitWork], Mapping[str, Any]]
    about: Mapping[str, Any]

    @property
    def label(self) -> str:
        return describe(self.kind, self.about)


def describe(kind: str, about: Mapping[str, Any]) -> str:
    """A unit in words, e.g. ``perturbation · demo · supernet seed 1`` (for logs and status)."""
    parts = [about.get("selector"), about.get("recipe"), f"supernet seed {about.get('supernet_seed')}"]
    if kind == "retrain":
        parts.append(f"retrain seed {about.get('retrain_seed')}")
    return " · ".join(str(part) for part in parts if part)


def supernet_task(recipe: Recipe, seed: int, device: torch.device, progress: bool) -> Task:
    config = supernet_config(recipe, seed)
    about = {"recipe": recipe.name, "supernet_seed": seed}

    def compute(work: UnitWork) -> dict[str, Any]:
        with UnitBar(describe("supernet", about), enabled=progress) as bar:
            train_supernet(recipe, seed=seed, device=device, out_dir=work.directory, progress=bar)
        work.add_artifact(CHECKPOINT_FILE)
        work.add_artifact(RECORD_FILE)
        return {"recipe": recipe.name, "seed": seed}

    return Task("supernet", recipe, config, compute, about)


def selection_task(recipe: Recipe, supernet: Unit, selector: str, options: Mapping[str, Any], seed: int,
                   device: torch.device, progress: bool = False) -> Task:
    registration = plugin_host().get("selector", selector)
    config = selection_config(supernet.key, selector, options, seed)
    resolved = config["options"]
    about = {"recipe": recipe.name, "selector": selector, "supernet_seed": int(supernet.config["seed"])}

    def compute(work: UnitWork) -> dict[str, Any]:
        net = load_supernet(supernet.artifact(CHECKPOINT_FILE))
        # this recipe, not the checkpoint's: a reused supernet may have found its data elsewhere
        data = (checkpoint_data(cast(Mapping[str, Any], net.metadata), recipe=recipe, device=device)
                if registration.obj.needs_data else None)  # metadata: attached by load_supernet
        with UnitBar(describe("selection", about), enabled=progress) as bar:
            selection = select(net, selector, data=data, seed=seed, device=device, search=recipe.search,
                               progress=bar, **resolved)
        return SelectionRecord(recipe.name, supernet.key, int(supernet.config["seed"]), selection,
                               recipe.precision("search")).to_result()

    return Task("selection", recipe, config, compute, about)


def retrain_task(recipe: Recipe, selection: Unit, seed: int, device: torch.device, scorer: str = "retrain",
                 progress: bool = False) -> Task:
    chosen = SelectionRecord.from_result(selection.result)
    config = retrain_config(recipe, selection.key, seed, scorer)
    about = {"recipe": recipe.name, "selector": chosen.selection.selector, "supernet_seed": chosen.supernet_seed,
             "retrain_seed": seed}

    def compute(work: UnitWork) -> dict[str, Any]:
        genotype = chosen.selection.genotype
        if genotype is None:  # the grid retrains successful selections only
            raise RecordError(f"selection {selection.key[:16]} failed; a failed selection has nothing to retrain")
        with UnitBar(describe("retrain", about), enabled=progress) as bar:
            score = score_genotype(scorer, genotype, recipe, seed=seed, device=device, out_dir=work.directory,
                                   progress=bar)
        for name in score["artifacts"]:
            work.add_artifact(name)
        return RetrainRecord.from_score(chosen, selection_key=selection.key, retrain_seed=seed, scorer=scorer,
                                        score=score).to_result()

    return Task("retrain", recipe, config, compute, about)


def selection_config(supernet_key: str, selector: str, options: Mapping[str, Any], seed: int) -> dict[str, Any]:
    registration = plugin_host().get("selector", selector)
    resolved = resolve_options(registration.obj.options, options, f"selector {selector!r}")
    return {"supernet": supernet_key, "selector": selector, "distribution": registration.distribution,
            "version": registration.version, "options": resolved, "seed": seed}


def retrain_config(recipe: Recipe, selection_key: str, seed: int, scorer: str) -> dict[str, Any]:
    return {"selection": selection_key, "scorer": scorer, "retrain": recipe.retrain,
            "data": without_location_keys("data", recipe.retrain_data()), "seed": seed}


def run_stage(store: RunStore, tasks: Sequence[Task], on_unit: Callable[[Unit], object] | None = None) -> list[Unit]:
    """Every task of a stage (units that do not depend on one another), in order where none is busy.

    A unit that another worker computes is passed over and looked at again after the others,
    so workers sharing a runs directory spread over a stage instead of queueing behind one
    unit.  Returns the units in task order (crashed ones included); ``on_unit`` hears of each.
    """
    done: dict[int, Unit] = {}
    waiting: dict[int, Busy] = {}
    while len(done) < len(tasks):
        progressed = False
        for index, task in enumerate(tasks):
            if index in done:
                continue
            outcome = store.try_unit(task.kind, task.config, task.compute, label=task.label, about=task.about)
            if isinstance(outcome, Unit):
                done[index] = outcome
                waiting.pop(index, None)
                progressed = True
                if on_unit is not None:
                    on_unit(outcome)
            elif index not in waiting:
                waiting[index] = outcome
                store.log(f"{task.kind} {outcome.label} is computed by {outcome.owner.describe()}; "
                          "doing other units meanwhile")
        if not progressed and len(done) < len(tasks):
            time.sleep(store.poll)
    return [done[index] for index in range(len(tasks))]


STAGES = ("supernet", "selection", "retrain")
Slot = tuple  # (recipe index, seed[, selector[, retrain seed]]): one unit's place in the grid


@dataclass(frozen=True)
class Grid:
    """What a grid computes: recipes × seeds × selectors × retrain seeds, and how.

    Every unit's configuration (so its key) follows from the grid alone, before anything
    runs; a unit's computation needs the units before it finished.  The grid is plain data
    (:meth:`to_json`), so that any worker — a process, a cluster job — can rebuild it.
    """

    recipes: tuple[Recipe, ...]
    selectors: tuple[str, ...]
    seeds: tuple[int, ...]
    retrain_seeds: tuple[int, ...]
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per selector, over the recipe's
    scorer: str = "retrain"
    device: str = "cpu"
    progress: bool = True

    def check(self) -> None:
        """Every selector, option, the scorer and the recipes' precisions on the device, before any unit runs:
        one clear error each."""
        for name in self.selectors:
            plugin_host().get("selector", name)
        for name in self.options:
            _known_selector(name, "-o")
        for recipe in self.recipes:
            for name in recipe.selectors:
                _known_selector(name, f"recipe {recipe.name} [selectors]")
        chosen_scorer = get_scorer(self.scorer)
        for recipe in self.recipes:
            recipe.check_precisions(self.device)
            if chosen_scorer.check is not None:
                chosen_scorer.check(recipe)
            for name in self.selectors:
                registration = plugin_host().get("selector", name)
                resolved = resolve_options(registration.obj.options, self.selector_options(recipe, name),
                                           f"selector {name!r}")
                for key, option in registration.obj.options.items():
                    if option.choices == PRECISIONS:  # a precision option, as perturbation's
                        check_precision(resolved[key], self.device, f"selector {name!r} option {key}")

    def selector_options(self, recipe: Recipe, selector: str) -> dict[str, Any]:
        return {**recipe.selectors.get(selector, {}), **self.options.get(selector, {})}

    def slots(self, stage: str) -> list[Slot]:
        supernets = [(r, seed) for r in range(len(self.recipes)) for seed in self.seeds]
        if stage == "supernet":
            return supernets
        selections = [(*slot, name) for slot in supernets for name in self.selectors]
        if stage == "selection":
            return selections
        return [(*slot, retrain_seed) for slot in selections for retrain_seed in self.retrain_seeds]

    def config(self, stage: str, slot: Slot) -> dict[str, Any]:
        """The configuration of the unit at ``slot`` (known before anything runs)."""
        recipe, seed = self.recipes[slot[0]], slot[1]
        supernet = supernet_config(recipe, seed)
        if stage == "supernet":
            return supernet
        selection = selection_config(config_key(supernet), slot[2], self.selector_options(recipe, slot[2]), seed)
        if stage == "selection":
            return selection
        return retrain_config(recipe, config_key(selection), slot[3], self.scorer)

    def about(self, stage: str, slot: Slot) -> dict[str, Any]:
        names = ("recipe", "supernet_seed", "selector", "retrain_seed")
        return dict(zip(names, (self.recipes[slot[0]].name, *slot[1:])))

    def task(self, store: RunStore, stage: str, slot: Slot) -> Task | None:
        """The runnable unit at ``slot``, or ``None`` while a unit it needs is not finished (or failed)."""
        recipe, seed, device = self.recipes[slot[0]], slot[1], torch.device(self.device)
        if stage == "supernet":
            return supernet_task(recipe, seed, device, self.progress)
        supernet = store.lookup("supernet", self.config("supernet", slot[:2]))
        if supernet is None:
            return None
        if stage == "selection":
            return selection_task(recipe, supernet, slot[2], self.selector_options(recipe, slot[2]), seed, device,
                                  self.progress)
        selection = store.lookup("selection", self.config("selection", slot[:3]))
        if selection is None or selection.failed:
            return None
        return retrain_task(recipe, selection, slot[3], device, self.scorer, self.progress)

    def to_json(self) -> dict[str, Any]:
        return {"recipes": [recipe.to_dict() for recipe in self.recipes], "selectors": list(self.selectors),
                "seeds": list(self.seeds), "retrain_seeds": list(self.retrain_seeds),
                "options": {k: dict(v) for k, v in self.options.items()}, "scorer": self.scorer,
                "device": self.device, "progress": self.progress}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Grid:
        return cls(recipes=tuple(Recipe.from_dict(r, where=f"grid recipe {r.get('name')}") for r in data["recipes"]),
                   selectors=tuple(data["selectors"]), seeds=tuple(data["seeds"]),
                   retrain_seeds=tuple(data["retrain_seeds"]), options=dict(data["options"]),
                   scorer=data["scorer"], device=data["device"], progress=data["progress"])


def supernet_config(recipe: Recipe, seed: int) -> dict[str, Any]:
    return {"recipe": recipe.hashed_sections(*TRAIN_SECTIONS), "seed": seed}


def run_stages(grid: Grid, store: RunStore) -> GridResult:
    """Run (or reuse) every unit of ``grid`` in this process, stage by stage; other workers may share the store.

    A crashed unit does not stop the grid: the units that need it are left for the next run.
    """
    crashed: list[str] = []
    finished: dict[str, list[Unit]] = {}
    bar = tqdm(total=sum(len(grid.slots(stage)) for stage in STAGES), desc="grid", unit="unit", position=1,
               disable=not grid.progress, dynamic_ncols=True)  # below the bars of the unit being computed
    with bar:
        for stage in STAGES:
            tasks = [task for slot in grid.slots(stage) if (task := grid.task(store, stage, slot)) is not None]
            bar.update(len(grid.slots(stage)) - len(tasks))  # left out: a unit they need crashed or failed
            units = run_stage(store, tasks, on_unit=lambda unit: bar.update(1))
            crashed.extend(f"{task.kind} {task.label}" for task, unit in zip(tasks, units) if unit.crashed)
            finished[stage] = [unit for unit in units if not unit.crashed]
    return GridResult(supernets=len(finished["supernet"]), selections=len(finished["selection"]),
                      failed_selections=sum(unit.failed for unit in finished["selection"]),
                      retrains=len(finished["retrain"]), crashed=tuple(crashed))


def redo_selectors(grid: Grid, store: RunStore, redo: Iterable[str]) -> None:
    """Set aside the selections of the ``redo`` selectors (and their retrains), so that they are computed again."""
    redo = set(redo)
    if not redo <= set(grid.selectors):
        raise OptionError(f"--redo {','.join(sorted(redo - set(grid.selectors)))}: not among the selectors of this "
                          f"run ({', '.join(grid.selectors)})")
    for slot in grid.slots("selection"):
        if slot[2] in redo:
            discard_selection(store, config_key(grid.config("selection", slot)))


def run_grid(recipes: Iterable[Recipe], selectors: Iterable[str], *, seeds: Iterable[int],
             retrain_seeds: Iterable[int], store: RunStore, device: str | torch.device = "cpu",
             options: Mapping[str, Mapping[str, Any]] | None = None, scorer: str = "retrain",
             progress: bool = True, redo: Iterable[str] = ()) -> GridResult:
    """Check, then run (or reuse) every unit of the grid in this process: supernets, selections, retrains.

    ``options`` maps selector names to option overrides; ``redo`` names selectors whose
    finished selections (and their retrains) are set aside and computed again.
    """
    grid = Grid(tuple(recipes), tuple(selectors), tuple(seeds), tuple(retrain_seeds), dict(options or {}), scorer,
                str(torch.device(device)), progress)
    grid.check()
    redo_selectors(grid, store, redo)
    return run_stages(grid, store)


def _known_selector(name: str, where: str) -> None:
    if name not in plugin_host().registrations("selector"):
        raise OptionError(f"{where}: options for {name!r}, which is not a selector; selectors: "
                          f"{', '.join(sorted(plugin_host().registrations('selector')))}")


def discard_selection(store: RunStore, key: str) -> None:
    """Set aside a selection and every retrain of it (retrains first: an interruption leaves nothing stale)."""
    for unit in [*store.units("retrain"), *store.units("retrain", crashed=True)]:
        if unit.config.get("selection") == key:
            store.discard("retrain", unit.key)
    store.discard("selection", key)
