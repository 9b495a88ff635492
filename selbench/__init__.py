"""selbench: a benchmark for architecture selection in differentiable NAS.

The names below are the public API; plugins (built-in or third-party) import only these.
"""
from importlib.metadata import PackageNotFoundError, version as _version

from .checkpoint import load_supernet, read_checkpoint, save_supernet
from .errors import CheckpointError, GenotypeError, OptionError, PluginError, SelbenchError
from .genotype import CellGenotype, Genotype
from .options import Option
from .registry import PluginHost, hookimpl, plugin_host, use_plugin_host
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

try:
    __version__ = _version("selbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "CellGenotype",
    "CheckpointError",
    "Edge",
    "Genotype",
    "GenotypeError",
    "NONE_OP",
    "Option",
    "OptionError",
    "PluginError",
    "PluginHost",
    "SearchSpace",
    "SelbenchError",
    "Selection",
    "SelectionContext",
    "Selector",
    "Supernet",
    "SupernetData",
    "TensorData",
    "__version__",
    "get_selector",
    "get_space",
    "hookimpl",
    "list_selectors",
    "list_spaces",
    "load_supernet",
    "plugin_host",
    "read_checkpoint",
    "save_supernet",
    "select",
    "use_plugin_host",
]
