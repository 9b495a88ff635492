"""Recipes: TOML files that fix everything a run depends on.

A recipe has a ``description`` and four sections:

* ``[supernet]``: ``space`` (a registered search space) and the keyword arguments of its
  ``build_supernet`` (DARTS: ``C``, ``layers``, ``steps``, ``ops``, ...); the class count and
  input channels come from the dataset;
* ``[data]``: see :data:`selbench.data.DATA_DEFAULTS` and :data:`selbench.data.DATA_OPTIONAL_DEFAULTS`;
* ``[search]``: see :data:`selbench.search.SEARCH_DEFAULTS`, :data:`SEARCH_OPTIONAL_DEFAULTS` (``precision``,
  ``graphs``) and, for the stochastic modes, :data:`selbench.train.sampling.SAMPLING_DEFAULTS`;
* ``[retrain]``: the discrete network and its training from scratch.  The network keys are
  the keyword arguments of the space's ``build_network`` (DARTS: ``C``, ``layers``,
  ``auxiliary``, ...; NAS-Bench-201: ``C``, ``N``); the training keys,
  :data:`RETRAIN_TRAINING_DEFAULTS` and :data:`RETRAIN_OPTIONAL_DEFAULTS`, are the same for
  every space.

Two optional tables are not part of any unit's configuration: ``[selectors]`` (per-selector
option overrides) and ``[executor]`` (Slurm job settings for ``selbench run --executor slurm``,
the keys of ``--executor-opt``).  A recipe file holds all four sections, or starts from
another recipe (``base = "demo"``) and overrides some of its keys (see :func:`load_recipe`).
Keys left out take the defaults
(DARTS's CIFAR-10 values; network keys: the space's published evaluation network, see
:func:`retrain_network_defaults`).  Built-in recipes ship as package data (``selbench
recipes`` lists them); any path to a TOML file works too.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

import torch
from torch import nn

from selbench.core.errors import SelbenchError
from selbench.core.precision import DEFAULT_PRECISION, PRECISIONS, check_precision
from selbench.core.sections import check_section, parse_text_like, typed_like
from selbench.data.loading import DATA_DEFAULTS, DATA_OPTIONAL_DEFAULTS, check_data_section
from selbench.plugin.lookup import get_space
from selbench.train.graphs import GRAPHS_DEFAULTS, check_graphs
from selbench.train.loop import SEARCH_DEFAULTS, SEARCH_MODES
from selbench.train.sampling import SAMPLING_DEFAULTS, check_sampling

SECTIONS = ("supernet", "data", "search", "retrain")
DEFAULT_SPACE = "darts"
PRECISION_SECTIONS = ("search", "retrain")  # the sections whose stage computes in its ``precision``

# [search] keys added after the first recipes.  A section holds one only when it differs from
# its default, so recipes that leave it out keep their config hash and run-store keys.
SEARCH_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "precision": DEFAULT_PRECISION,  # fp32, or bf16 autocast with fp32 master weights (selbench.core.precision)
    **GRAPHS_DEFAULTS,  # "on": CUDA graphs of the training steps (selbench.train.graphs)
}

# How the discrete network trains, whatever the space: DARTS's CIFAR-10 evaluation recipe.
RETRAIN_TRAINING_DEFAULTS: dict[str, Any] = {
    "auxiliary_weight": 0.4,  # used when the network has an auxiliary head
    "drop_path_prob": 0.2,  # ramped linearly from 0 over the epochs (networks with drop path only)
    "cutout": 16,  # 0 = off
    "epochs": 600,
    "batch_size": 96,
    "lr": 0.025,  # SGD, cosine-annealed from lr to lr_min
    "lr_min": 0.0,
    "momentum": 0.9,
    "weight_decay": 3e-4,
    "grad_clip": 5.0,  # max gradient norm; 0 = no clipping
}

# Training keys added after the first recipes.  A section holds one only when it differs from
# its default, so recipes that leave it out keep their config hash and run-store keys.
RETRAIN_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "nesterov": False,  # Nesterov momentum (NAS-Bench-201's protocol)
    "precision": DEFAULT_PRECISION,  # as search.precision
    **GRAPHS_DEFAULTS,  # "on": CUDA graphs of the training steps (selbench.train.graphs)
}

_SET_BY_DATA = ("num_classes", "in_channels")
# build_network arguments the harness passes itself: the cell, and whether its nodes may have any in-degree
_SET_BY_HARNESS = ("genotype", "variable_in_degree", *_SET_BY_DATA)
# keys that say where the files are, not what is computed: left out of the config hash
_LOCATION_KEYS = {"data": ("root", "download")}
_TRAINING_KEYS = (*RETRAIN_TRAINING_DEFAULTS, *RETRAIN_OPTIONAL_DEFAULTS)


@dataclass(frozen=True)
class Recipe:
    """A validated recipe; every section holds every key (defaults filled in), except optional keys at their default."""

    name: str
    description: str
    supernet: dict[str, Any]
    data: dict[str, Any]
    search: dict[str, Any]
    retrain: dict[str, Any]
    selectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    executor: dict[str, Any] = field(default_factory=dict)  # Slurm job settings: where units run, not what they do

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                **{section: dict(getattr(self, section)) for section in SECTIONS},
                "selectors": {name: dict(options) for name, options in self.selectors.items()},
                "executor": dict(self.executor)}

    @classmethod
    def from_dict(cls, recipe: Mapping[str, Any], *, where: str = "recipe") -> Recipe:
        """Validate ``recipe`` (as :meth:`to_dict` writes it, or a parsed TOML file plus ``name``)."""
        unknown = sorted(set(recipe) - {"name", "description", "selectors", "executor", *SECTIONS})
        if unknown:
            raise SelbenchError(f"{where}: unknown section [{unknown[0]}]; a recipe has description and the "
                                f"sections {', '.join(f'[{s}]' for s in SECTIONS)}")
        for section in SECTIONS:
            if not isinstance(recipe.get(section, {}), Mapping):
                raise SelbenchError(f"{where}: [{section}] must be a table of key = value lines")
        return cls(
            name=str(recipe.get("name", "")),
            description=str(recipe.get("description", "")),
            supernet=_check_supernet(recipe.get("supernet", {}), where),
            data=check_data_section(recipe.get("data", {}), where),
            search=_check_search(recipe.get("search", {}), where),
            retrain=_check_retrain(recipe.get("retrain", {}), recipe.get("supernet", {}).get("space", DEFAULT_SPACE),
                                   where),
            selectors=_check_selectors(recipe.get("selectors", {}), where),
            executor=_check_executor(recipe.get("executor", {}), where),
        )

    def hashed_sections(self, *sections: str) -> dict[str, dict[str, Any]]:
        """The sections (default: all four) by name, without the location keys ``data.root`` and ``data.download``.

        What :meth:`config_hash` hashes and what run-store unit configurations hold: where
        the data files are does not change what a run computes.
        """
        chosen = sections or SECTIONS
        unknown = [s for s in chosen if s not in SECTIONS]
        if unknown:
            raise SelbenchError(f"no recipe section {unknown[0]!r}; sections are {', '.join(SECTIONS)}")
        return {s: without_location_keys(s, getattr(self, s)) for s in chosen}

    def config_hash(self, *sections: str) -> str:
        """SHA-256 of :meth:`hashed_sections` as canonical JSON; stable across runs and machines.

        The name, the description and where the data files are (``data.root``,
        ``data.download``) are left out: they do not change what a run computes.
        """
        content = self.hashed_sections(*sections)
        return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def build_supernet(self, *, num_classes: int, in_channels: int) -> nn.Module:
        """The ``[supernet]`` of this recipe for a dataset with ``num_classes`` and ``in_channels``."""
        args = {k: v for k, v in self.supernet.items() if k != "space"}
        return get_space(self.supernet["space"]).build_supernet(num_classes=num_classes, in_channels=in_channels,
                                                                **args)

    def retrain_network(self) -> dict[str, Any]:
        """The ``build_network`` keyword arguments of ``[retrain]`` (its network keys)."""
        return {k: v for k, v in self.retrain.items() if k not in _TRAINING_KEYS}

    def retrain_training(self) -> dict[str, Any]:
        """The training keys of ``[retrain]``, optional ones filled in with their defaults."""
        return {**RETRAIN_OPTIONAL_DEFAULTS, **{k: v for k, v in self.retrain.items() if k in _TRAINING_KEYS}}

    def precision(self, section: str) -> str:
        """The ``precision`` of ``[search]`` or ``[retrain]``: fp32 unless the section says otherwise."""
        if section not in PRECISION_SECTIONS:
            raise SelbenchError(f"[{section}] has no precision; sections with one: {', '.join(PRECISION_SECTIONS)}")
        return getattr(self, section).get("precision", DEFAULT_PRECISION)

    def check_precisions(self, device: str | torch.device) -> None:
        """One clear :class:`SelbenchError` if ``device`` cannot compute in the precision of ``[search]`` or
        ``[retrain]`` (bf16 on a CUDA device older than Ampere)."""
        for section in PRECISION_SECTIONS:
            check_precision(self.precision(section), device, f"recipe {self.name!r}: {section}.precision")

    def retrain_data(self) -> dict[str, Any]:
        """The ``[data]`` section for retraining: ``[retrain]``'s batch size and cutout replace the search's."""
        return {**self.data, "batch_size": self.retrain["batch_size"], "cutout": self.retrain["cutout"]}


def without_location_keys(section: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` of recipe section ``section`` without the keys that say where the data files are."""
    return {k: v for k, v in values.items() if k not in _LOCATION_KEYS.get(section, ())}


def _keyword_parameters(space_name: Any, builder: str, set_elsewhere: Iterable[str],
                        where: str) -> dict[str, inspect.Parameter] | None:
    """The keyword arguments of the space's ``builder`` method a recipe may set (``None``: it takes any)."""
    if not isinstance(space_name, str):
        raise SelbenchError(f"{where}: supernet.space must be the name of a search space, got {space_name!r}")
    parameters = inspect.signature(getattr(get_space(space_name), builder)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    excluded = set(set_elsewhere)
    return {name: p for name, p in parameters.items() if name not in excluded and p.kind is not p.VAR_POSITIONAL}


def _supernet_parameters(space_name: Any, where: str) -> dict[str, inspect.Parameter] | None:
    """The keyword arguments of the space's ``build_supernet`` a recipe may set (``None``: it takes any)."""
    return _keyword_parameters(space_name, "build_supernet", _SET_BY_DATA, where)


def _check_supernet(section: Mapping[str, Any], where: str) -> dict[str, Any]:
    merged = {"space": DEFAULT_SPACE, **section}
    parameters = _supernet_parameters(merged["space"], where)
    for key, value in section.items():
        if key == "space":
            continue
        if key in _SET_BY_DATA:
            raise SelbenchError(f"{where}: supernet.{key} is set by the dataset; remove it from the recipe")
        if parameters is None:
            continue
        if key not in parameters:
            raise SelbenchError(f"{where}: unknown key supernet.{key} for the {merged['space']} space; valid keys: "
                                f"space, {', '.join(parameters)}")
        default = parameters[key].default
        if default is not inspect.Parameter.empty and default is not None:
            merged[key] = typed_like(default, value, f"{where}: supernet.{key}")
    return merged


def _check_search(section: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The merged ``[search]``; the stochastic modes' keys (:data:`SAMPLING_DEFAULTS`) and
    :data:`SEARCH_OPTIONAL_DEFAULTS` only where not at default."""
    optional = {**SAMPLING_DEFAULTS, **SEARCH_OPTIONAL_DEFAULTS}
    merged = check_section(section, {**SEARCH_DEFAULTS, **optional}, "search", where)
    check_sampling(merged, where)
    _check_precision_value(merged["precision"], "search", where)
    check_graphs(merged, f"{where}: search.graphs")
    if merged["mode"] not in SEARCH_MODES:
        raise SelbenchError(f"{where}: search.mode {merged['mode']!r} is not one of {', '.join(SEARCH_MODES)}")
    _check_ranges(merged, "search", where, non_negative=("epochs", "lr_min", "momentum", "weight_decay",
                                                         "arch_weight_decay"),
                  positive=("lr", "grad_clip", "arch_lr", "hvp_epsilon"))
    for beta in ("arch_beta1", "arch_beta2"):
        if not 0 <= merged[beta] < 1:
            raise SelbenchError(f"{where}: search.{beta} must be in [0, 1), got {merged[beta]}")
    return {k: v for k, v in merged.items() if k in SEARCH_DEFAULTS or v != optional[k]}


def _check_precision_value(value: str, section: str, where: str) -> None:
    if value not in PRECISIONS:
        raise SelbenchError(f"{where}: {section}.precision {value!r} is not one of {', '.join(PRECISIONS)}")


def _build_network_parameters(space_name: Any, where: str) -> dict[str, inspect.Parameter] | None:
    """The keyword arguments of the space's ``build_network`` a recipe may set (``None``: it takes any)."""
    return _keyword_parameters(space_name, "build_network", (*_SET_BY_HARNESS, *_TRAINING_KEYS), where)


def retrain_network_defaults(space_name: str) -> dict[str, Any]:
    """The network keys a ``[retrain]`` section for ``space_name`` gets when it leaves them out.

    The space's ``retrain_defaults`` (its published evaluation network, see
    :class:`selbench.SearchSpace`), kept to the keywords its ``build_network`` takes.
    """
    parameters = _build_network_parameters(space_name, f"space {space_name!r}")
    defaults = get_space(space_name).retrain_defaults
    return {k: v for k, v in defaults.items() if parameters is None or k in parameters}


def _retrain_example(space_name: Any, key: str, where: str) -> Any:
    """A value typed like ``retrain.key`` for this space (``None``: untyped); unknown keys are an error."""
    if key in _TRAINING_KEYS:
        return {**RETRAIN_TRAINING_DEFAULTS, **RETRAIN_OPTIONAL_DEFAULTS}[key]
    parameters = _build_network_parameters(space_name, where)
    if parameters is not None and key not in parameters:
        raise SelbenchError(f"{where}: unknown key retrain.{key} for the {space_name} space; valid keys in [retrain]: "
                            f"{', '.join([*parameters, *_TRAINING_KEYS])}")
    default = retrain_network_defaults(space_name).get(key, parameters[key].default if parameters else None)
    return None if default is inspect.Parameter.empty else default


def _check_retrain(section: Mapping[str, Any], space_name: Any, where: str) -> dict[str, Any]:
    network = retrain_network_defaults(space_name) if isinstance(space_name, str) else {}
    for key, value in section.items():
        if key not in _TRAINING_KEYS:
            network[key] = typed_like(_retrain_example(space_name, key, where), value, f"{where}: retrain.{key}")
    sizes = [k for k, v in network.items() if isinstance(v, int) and not isinstance(v, bool) and v < 1]
    if sizes:
        raise SelbenchError(f"{where}: retrain.{sizes[0]} is a network size and must be >= 1, got {network[sizes[0]]}")
    training = check_section({k: v for k, v in section.items() if k in RETRAIN_TRAINING_DEFAULTS},
                             RETRAIN_TRAINING_DEFAULTS, "retrain", where)
    _check_ranges(training, "retrain", where, non_negative=("auxiliary_weight", "cutout", "epochs", "lr_min",
                                                            "momentum", "weight_decay", "grad_clip"),
                  positive=("batch_size", "lr"))
    if not 0 <= training["drop_path_prob"] < 1:
        raise SelbenchError(f"{where}: retrain.drop_path_prob must be in [0, 1), got {training['drop_path_prob']}")
    for key, default in RETRAIN_OPTIONAL_DEFAULTS.items():
        if key in section:
            value = typed_like(default, section[key], f"{where}: retrain.{key}")
            if value != default:
                training[key] = value
    _check_precision_value(training.get("precision", DEFAULT_PRECISION), "retrain", where)
    check_graphs(training, f"{where}: retrain.graphs")
    return {**network, **training}


def _check_selectors(section: Any, where: str) -> dict[str, dict[str, Any]]:
    """``[selectors]``: per-selector option tables (``perturbation = { proj_intv = 1 }``), checked when used."""
    if not isinstance(section, Mapping) or not all(isinstance(v, Mapping) for v in section.values()):
        raise SelbenchError(f"{where}: [selectors] must map selector names to option tables, "
                            "e.g. perturbation = { proj_intv = 1 }")
    return {str(name): dict(options) for name, options in section.items()}


def _check_executor(section: Any, where: str) -> dict[str, Any]:
    """``[executor]``: Slurm job settings (``partition = "gpu"``, ``time = 2880``, ...), checked when used."""
    if not isinstance(section, Mapping) or any(isinstance(v, Mapping) for v in section.values()):
        raise SelbenchError(f"{where}: [executor] must hold key = value lines, e.g. partition = \"gpu\"")
    return dict(section)


def _check_ranges(merged: Mapping[str, Any], section: str, where: str, *, non_negative: Iterable[str],
                  positive: Iterable[str]) -> None:
    for key in non_negative:
        if merged[key] < 0:
            raise SelbenchError(f"{where}: {section}.{key} must be >= 0, got {merged[key]}")
    for key in positive:
        if merged[key] <= 0:
            raise SelbenchError(f"{where}: {section}.{key} must be > 0, got {merged[key]}")


# -- finding, reading and overriding recipes -------------------------------------------------------
def _builtin_dir():
    return resources.files("selbench") / "recipes"


def builtin_recipe_names() -> list[str]:
    return sorted(entry.name[:-5] for entry in _builtin_dir().iterdir() if entry.name.endswith(".toml"))


def _locate(name_or_path: str | Path) -> tuple[str, Any]:
    """(recipe name, file) for a built-in name or a path to a TOML file."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text or Path(text).is_file():
        path = Path(text).expanduser()
        if not path.is_file():
            raise SelbenchError(f"recipe file {path} does not exist; give a built-in recipe name "
                                f"({', '.join(builtin_recipe_names())}) or a path to a TOML file")
        return path.stem, path
    entry = _builtin_dir() / f"{text}.toml"
    if not entry.is_file():
        raise SelbenchError(f"unknown recipe {text!r}; built-in recipes: {', '.join(builtin_recipe_names())} "
                            "(or give a path to a TOML file)")
    return text, entry


def load_recipe(name_or_path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """A built-in recipe by name, or a TOML file by path, with ``section.key=value`` overrides applied.

    The file must hold all four sections (an empty one takes the defaults), or name a recipe
    to start from with ``base = "NAME or PATH"`` (a path relative to the file) whose sections
    it overrides key by key.  An override is typed like the value it replaces (the file's,
    else the default); unknown sections and keys, in the file or in an override, and values
    out of range, are one clear :class:`SelbenchError` naming the file and the overrides.
    """
    name, source, raw = _read_recipe_file(name_or_path, ())
    where = f"recipe {source}"
    missing = [section for section in SECTIONS if section not in raw]
    for item in overrides:
        _apply_override(raw, item)
    recipe = Recipe.from_dict({**raw, "name": name},
                              where=where + (f" with --set {' '.join(overrides)}" if overrides else ""))
    if missing:  # after checking what is there, so that a misspelled section is named as such
        raise SelbenchError(f"{where} has no [{missing[0]}] section; write it (an empty [{missing[0]}] takes the "
                            f"defaults: DARTS's CIFAR-10 values) or start from another recipe with base = \"demo\"")
    return recipe


def _read_recipe_file(name_or_path: str | Path, seen: tuple[str, ...]) -> tuple[str, Any, dict[str, Any]]:
    """(name, file, raw TOML with its ``base`` chain merged in) of a recipe."""
    name, source = _locate(name_or_path)
    where = f"recipe {source}"
    try:
        raw = tomllib.loads(source.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SelbenchError(f"{where} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise SelbenchError(f"{where} is not UTF-8 text; save it as UTF-8") from None
    if "name" in raw:
        raise SelbenchError(f"{where}: remove the key 'name'; a recipe is named after its file ({name!r})")
    base = raw.pop("base", None)
    if base is None:
        return name, source, raw
    if not isinstance(base, str) or not base:
        raise SelbenchError(f"{where}: base must name a recipe (a built-in name or a path), got {base!r}")
    if str(source) in seen:
        raise SelbenchError(f"{where}: its base chain comes back to it ({' -> '.join([*seen, str(source)])})")
    if isinstance(source, Path) and (base.endswith(".toml") or "/" in base):
        base = str(source.parent / base)
    _, _, base_raw = _read_recipe_file(base, (*seen, str(source)))
    merged = {key: ({**base_raw[key], **value} if isinstance(value, dict) and isinstance(base_raw.get(key), dict)
                    else value) for key, value in raw.items()}
    return name, source, {**base_raw, **merged}


def _apply_override(raw: dict[str, Any], item: str) -> None:
    where = f"--set {item}"
    target, sep, text = item.partition("=")
    section, dot, key = target.strip().partition(".")
    if not sep or not dot or not key:
        raise SelbenchError(f"{where}: expected section.key=value, e.g. search.epochs=10")
    if section not in SECTIONS:
        raise SelbenchError(f"{where}: unknown section [{section}]; sections are {', '.join(SECTIONS)}")
    current = raw.setdefault(section, {})
    if key in current:
        example = current[key]
    elif section == "supernet":
        example = _supernet_example(current.get("space", DEFAULT_SPACE), key, where)
    elif section == "retrain":
        example = _retrain_example(raw.get("supernet", {}).get("space", DEFAULT_SPACE), key, where)
    else:
        defaults = {"data": {**DATA_DEFAULTS, **DATA_OPTIONAL_DEFAULTS},
                    "search": {**SEARCH_DEFAULTS, **SAMPLING_DEFAULTS, **SEARCH_OPTIONAL_DEFAULTS}}[section]
        if key not in defaults:
            raise SelbenchError(f"{where}: unknown key {section}.{key}; valid keys in [{section}]: "
                                f"{', '.join(defaults)}")
        example = defaults[key]
    current[key] = parse_text_like(example, text.strip(), where)


def _supernet_example(space: str, key: str, where: str) -> Any:
    if key == "space":
        return DEFAULT_SPACE
    parameters = _supernet_parameters(space, where)
    if parameters is None:
        return None
    if key not in parameters:
        raise SelbenchError(f"{where}: unknown key supernet.{key} for the {space} space; valid keys: space, "
                            f"{', '.join(parameters)}")
    default = parameters[key].default
    return None if default is inspect.Parameter.empty else default


def list_recipes() -> list[Recipe]:
    """Every built-in recipe, loaded."""
    return [load_recipe(name) for name in builtin_recipe_names()]
