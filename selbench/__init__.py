"""selbench: a benchmark for architecture selection in differentiable NAS.

The names below are the public API; plugins (built-in or third-party) import only these.
"""
from importlib.metadata import PackageNotFoundError, version as _version

from .checkpoint import load_supernet, read_checkpoint, save_supernet
from .data import Dataset, ImageSet, SearchData, get_dataset, list_datasets, load_data
from .errors import CheckpointError, GenotypeError, OptionError, PluginError, SelbenchError
from .genotype import CellGenotype, Genotype
from .macs import count_macs, count_parameters
from .observers import EpochObserver, TrainingObserver
from .options import Option
from .recipes import Recipe, list_recipes, load_recipe
from .registry import PluginHost, hookimpl, plugin_host, use_plugin_host
from .scoring import Scorer, get_scorer, list_scorers
from .selection import (
    Selection,
    SelectionContext,
    Selector,
    SupernetData,
    TensorData,
    get_selector,
    list_selectors,
    select,
)
from .space import NONE_OP, Edge, SearchSpace, Supernet, get_space, list_spaces
from .train import train_supernet

try:
    __version__ = _version("selbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "CellGenotype",
    "CheckpointError",
    "Dataset",
    "Edge",
    "EpochObserver",
    "Genotype",
    "GenotypeError",
    "ImageSet",
    "NONE_OP",
    "Option",
    "OptionError",
    "PluginError",
    "PluginHost",
    "Recipe",
    "Scorer",
    "SearchData",
    "SearchSpace",
    "SelbenchError",
    "Selection",
    "SelectionContext",
    "Selector",
    "Supernet",
    "SupernetData",
    "TensorData",
    "TrainingObserver",
    "__version__",
    "count_macs",
    "count_parameters",
    "get_dataset",
    "get_scorer",
    "get_selector",
    "get_space",
    "hookimpl",
    "list_datasets",
    "list_recipes",
    "list_scorers",
    "list_selectors",
    "list_spaces",
    "load_data",
    "load_recipe",
    "load_supernet",
    "plugin_host",
    "read_checkpoint",
    "save_supernet",
    "select",
    "train_supernet",
    "use_plugin_host",
]
