"""selbench: a benchmark for architecture selection in differentiable NAS.

The names below are the public API; plugins (built-in or third-party) import only these.
"""
from selbench.core.errors import (
    CheckpointError,
    GenotypeError,
    OptionError,
    PluginError,
    SelbenchError,
)
from selbench.core.genotype import CellGenotype, Genotype
from selbench.core.options import Option
from selbench.core.precision import PRECISIONS, autocast, check_precision
from selbench.core.space import NONE_OP, Edge, SearchSpace, Supernet
from selbench.core.tensors import Batch
from selbench.core.version import __version__
from selbench.data.dataset import Dataset, ImageSet
from selbench.data.loading import SearchData, load_data
from selbench.plugin.host import PluginHost, hookimpl, plugin_host, use_plugin_host
from selbench.plugin.lookup import (
    get_dataset,
    get_scorer,
    get_selector,
    get_space,
    list_datasets,
    list_scorers,
    list_selectors,
    list_spaces,
)
from selbench.recipes.recipe import Recipe, list_recipes, load_recipe
from selbench.retrain.macs import count_macs, count_parameters
from selbench.retrain.scorer import Scorer, ScoringContext
from selbench.retrain.table_source import TableSource
from selbench.select.context import (
    AugmentingData,
    SelectionContext,
    SupernetData,
    TensorData,
    batchnorm_mode,
)
from selbench.select.contract import Selection, SelectionRun, Selector
from selbench.select.run import select
from selbench.train.checkpoint import DartsOutputWarning, load_supernet, read_checkpoint, save_supernet
from selbench.train.driver import train_supernet
from selbench.train.observers import EpochObserver, TrainingObserver
from selbench.train.sampling import STOCHASTIC_MODES
from selbench.train.trajectory import EdgeLayout, ObservedQuantity, Trajectories

__all__ = [
    "AugmentingData",
    "Batch",
    "CellGenotype",
    "CheckpointError",
    "DartsOutputWarning",
    "Dataset",
    "Edge",
    "EdgeLayout",
    "EpochObserver",
    "Genotype",
    "GenotypeError",
    "ImageSet",
    "NONE_OP",
    "ObservedQuantity",
    "Option",
    "OptionError",
    "PluginError",
    "PluginHost",
    "PRECISIONS",
    "Recipe",
    "Scorer",
    "ScoringContext",
    "SearchData",
    "SearchSpace",
    "SelbenchError",
    "Selection",
    "SelectionContext",
    "SelectionRun",
    "STOCHASTIC_MODES",
    "Selector",
    "Supernet",
    "SupernetData",
    "TableSource",
    "TensorData",
    "TrainingObserver",
    "Trajectories",
    "__version__",
    "autocast",
    "batchnorm_mode",
    "check_precision",
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
