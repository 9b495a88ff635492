"""Test kit for selection plugins: tiny supernets and data, and a check of a selector's result against its space.

Functions, usable from any test::

    from selbench.testing import check_selection, run_selector, tiny_data, tiny_supernet

    def test_my_selector_gives_a_valid_cell():
        run = run_selector("my-selector", space="nb201", seed=3, batches=1)  # batches: one of its options
        assert run.genotype is not None

``run_selector`` builds a tiny supernet of a built-in space (and tiny data when the selector
needs data), runs ``selbench.select`` and checks the result with ``check_selection``: the cell
is valid in the space, a failed selection says why, scores are finite ``[edges, ops]`` tables
per cell type, counters are non-negative integers.  Each check raises ``AssertionError`` with
a message that names the selector and what is wrong.

Fixtures, after one line in the plugin's ``tests/conftest.py``::

    pytest_plugins = ["selbench.testing"]

- ``builtin_space``: the name of each built-in space in turn (``"darts"``, ``"nb201"``): a test
  that takes it runs once per space;
- ``tiny_darts_supernet``, ``tiny_nb201_supernet``: ``tiny_supernet("darts")`` / ``("nb201")``, fresh per test;
- ``tiny_search_data``: ``tiny_data()``, train and valid splits;
- ``selbench_plugins``: isolates selbench's process-wide plugin host for one test, and loads
  plugin modules that are not installed: ``selbench_plugins(("my-plugin", my_module))``.

``no_host_sync()`` is a context manager that fails a test on any host synchronisation: on
every device it raises :class:`HostSyncError` where a tensor's value is read on the host
(``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()``, ``.numpy()``, ``.cpu()``) or an op's
output shape depends on tensor values (``nonzero``, ``masked_select``, boolean-mask indexing,
``unique``), and on CUDA it also sets ``torch.cuda.set_sync_debug_mode("error")``.

The kit needs pytest (imported here for the fixtures); ``import selbench`` does not import it.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator, Mapping, cast

import pytest
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from selbench import (
    GenotypeError,
    PluginHost,
    SearchSpace,
    SelectionRun,
    Selector,
    Supernet,
    SupernetData,
    TensorData,
    get_selector,
    get_space,
    select,
    use_plugin_host,
)

# build_supernet arguments of the tiny supernet of each built-in space: 8×8 single-channel images, 10 classes.
# DARTS: 3 cells, so that both cell types exist (normal, then two reduce cells), and 2 intermediate nodes
# (5 edges per cell instead of 14), so that selectors that measure every (edge, op) take seconds; steps=4 gives
# the full cell
TINY_SUPERNET_ARGS: Mapping[str, Mapping[str, Any]] = {
    "darts": {"C": 2, "layers": 3, "steps": 2, "num_classes": 10, "in_channels": 1},
    "nb201": {"C": 2, "N": 1, "num_classes": 10, "in_channels": 1},
}
BUILTIN_SPACES: tuple[str, ...] = tuple(TINY_SUPERNET_ARGS)


def tiny_supernet(space: str = "darts", *, seed: int = 0, **overrides: Any) -> nn.Module:
    """A supernet of the registered space ``space`` small enough that a selector runs on it in seconds.

    For the built-in spaces the size is :data:`TINY_SUPERNET_ARGS`, for 8×8 single-channel images
    and 10 classes; ``overrides`` replace or add ``build_supernet`` arguments (``steps=4``,
    ``ops=[...]``, ``C=4``), for another space they are all of them.  θ and α are drawn from ``seed``
    (without touching torch's global random state), α from a standard normal so that the
    mixing weights differ clearly between ops and selectors have something to choose.
    """
    args = {**TINY_SUPERNET_ARGS.get(space, {}), **overrides}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        supernet = get_space(space).build_supernet(**args)
        with torch.no_grad():
            for alpha in cast(Supernet, supernet).alphas.values():
                alpha.normal_()
    return supernet


def tiny_data(*, n: int = 16, image_size: int = 8, channels: int = 1, classes: int = 10, batch_size: int = 8,
              seed: int = 0) -> TensorData:
    """``n`` toy images of ``classes`` classes per split (train, valid), drawn from ``seed``.

    Images are ``0.3·randn`` noise plus 1 on quadrant ``k mod 4`` for class ``k``: with up to 4
    classes a small network learns them.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (2 * n,), generator=generator)
    images = 0.3 * torch.randn(2 * n, channels, image_size, image_size, generator=generator)
    half = image_size // 2
    for k in range(classes):
        row, col = divmod(k % 4, 2)
        images[labels == k, :, half * row : half * row + half, half * col : half * col + half] += 1.0
    return TensorData(train=(images[:n], labels[:n]), valid=(images[n:], labels[n:]), batch_size=batch_size)


def check_selection(run: SelectionRun, space: SearchSpace | str, *, allow_failure: bool = False) -> None:
    """Raise ``AssertionError`` naming the first way ``run`` breaks the selector contract in ``space``.

    ``space`` is the supernet's configured space (``supernet.space``) or a registered space's
    name.  Checked: the genotype is valid in the space (with the run's ``variable_in_degree``);
    a run has either a genotype or a failure reason, never both or neither, and fails only when
    ``allow_failure``; scores, when given, are one finite ``[num_edges, num_ops]`` tensor per
    cell type; counters are non-negative ints.
    """
    if not isinstance(run, SelectionRun):
        raise AssertionError(f"expected a selbench.SelectionRun, got {type(run).__name__}")
    if isinstance(space, str):
        space = get_space(space)
    who = f"selection by {run.selector!r} (seed {run.seed})"
    if run.genotype is None:
        if not run.failure:
            raise AssertionError(f"{who}: no genotype and no failure reason")
        if not allow_failure:
            raise AssertionError(f"{who} failed: {run.failure} (pass allow_failure=True if that is expected)")
    else:
        if run.failure:
            raise AssertionError(f"{who}: has a genotype and a failure reason ({run.failure!r})")
        try:
            space.validate(run.genotype, variable_in_degree=run.variable_in_degree)
        except GenotypeError as error:
            raise AssertionError(f"{who}: invalid cell: {error}") from None
    if run.scores is not None:
        _check_scores(who, run.scores, space)
    for name, value in run.counters.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise AssertionError(f"{who}: counter {name!r} is {value!r}, expected a non-negative int")


def _check_scores(who: str, scores: Mapping[str, Tensor], space: SearchSpace) -> None:
    if set(scores) != set(space.cell_types):
        raise AssertionError(f"{who}: scores for cell types {sorted(scores)}, the {space.name} space has "
                             f"{sorted(space.cell_types)}")
    expected = (space.num_edges, space.num_ops)
    for cell_type, table in scores.items():
        if not isinstance(table, Tensor):
            raise AssertionError(f"{who}: scores for the {cell_type} cell are a {type(table).__name__}, not a Tensor")
        if tuple(table.shape) != expected:
            raise AssertionError(f"{who}: scores for the {cell_type} cell have shape {tuple(table.shape)}, "
                                 f"expected {expected} (edges, ops)")
        if not torch.isfinite(table).all():
            raise AssertionError(f"{who}: scores for the {cell_type} cell are not all finite: {table.tolist()}")


def run_selector(selector: str | Selector, *, space: str = "darts", seed: int = 0, supernet: nn.Module | None = None,
                 data: SupernetData | None = None, allow_failure: bool = False, **options: Any) -> SelectionRun:
    """Run ``selector`` on a tiny supernet, check the result with :func:`check_selection` and return it.

    ``supernet`` defaults to ``tiny_supernet(space, seed=seed)``; ``data`` to ``tiny_data(seed=seed)``
    when the selector needs data (else none); ``options`` are the selector's options, and
    ``seed`` is also the selection's seed.
    """
    if supernet is None:
        supernet = tiny_supernet(space, seed=seed)
    if data is None:
        needs_data = (get_selector(selector) if isinstance(selector, str) else selector).needs_data
        data = tiny_data(seed=seed) if needs_data else None
    run = select(supernet, selector, data=data, seed=seed, **options)
    check_selection(run, cast(Supernet, supernet).space, allow_failure=allow_failure)
    return run


class HostSyncError(AssertionError):
    """A host synchronisation inside :func:`no_host_sync`."""


# ops whose result the host must wait for: a value read back, or an output shape that depends on values
_SYNCING_OPS = {torch.ops.aten._local_scalar_dense, torch.ops.aten.nonzero, torch.ops.aten.masked_select,
                torch.ops.aten._unique2, torch.ops.aten.unique_dim, torch.ops.aten.unique_consecutive}
_INDEXING_OPS = {torch.ops.aten.index, torch.ops.aten.index_put, torch.ops.aten.index_put_}
_HOST_COPIES = {Tensor.cpu, Tensor.tolist, Tensor.numpy}


class _SyncingOps(TorchDispatchMode):
    def __init__(self, host_tensors: Callable[[], Iterable[Tensor]]) -> None:
        super().__init__()
        self.host_tensors = host_tensors

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        if packet in _SYNCING_OPS and not (packet is torch.ops.aten._local_scalar_dense
                                            and any(args[0] is t for t in self.host_tensors())):
            raise HostSyncError(f"host sync: {func} (a tensor's value read on the host, or a value-dependent shape)")
        if packet in _INDEXING_OPS and any(isinstance(index, Tensor) and index.dtype in (torch.bool, torch.uint8)
                                           for index in args[1] or ()):
            raise HostSyncError(f"host sync: {func} with a boolean mask (its output shape depends on the values)")
        return func(*args, **(kwargs or {}))


class _HostCopies(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _HOST_COPIES:
            raise HostSyncError(f"host sync: Tensor.{func.__name__}() copies a tensor to the host")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def no_host_sync(host_tensors: Callable[[], Iterable[Tensor]] = tuple) -> Iterator[None]:
    """Raise :class:`HostSyncError` at the first host synchronisation inside the block (see the module docstring).

    ``host_tensors()`` names tensors that live on the host by design and may be read, e.g. the
    step counters of a non-capturable Adam (which PyTorch keeps on the CPU even for CUDA
    parameters): ``lambda: [s["step"] for s in optimizer.state.values()]``.
    """
    cuda = torch.cuda.is_available()
    previous = torch.cuda.get_sync_debug_mode() if cuda else 0
    if cuda:
        torch.cuda.set_sync_debug_mode("error")
    try:
        with _HostCopies(), _SyncingOps(host_tensors):
            yield
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode(previous)


# -- pytest fixtures (enabled with pytest_plugins = ["selbench.testing"]) -------------------------------------------
@pytest.fixture(params=BUILTIN_SPACES)
def builtin_space(request: pytest.FixtureRequest) -> str:
    """The name of each built-in space in turn: a test that takes this fixture runs once per space."""
    return request.param


@pytest.fixture
def tiny_darts_supernet() -> nn.Module:
    """``tiny_supernet("darts")``: normal and reduce cells of 2 nodes (5 edges), 8 ops, drawn from seed 0."""
    return tiny_supernet("darts")


@pytest.fixture
def tiny_nb201_supernet() -> nn.Module:
    """``tiny_supernet("nb201")``: one cell of 3 nodes (6 edges), 5 ops, drawn from seed 0."""
    return tiny_supernet("nb201")


@pytest.fixture
def tiny_search_data() -> TensorData:
    """``tiny_data()``: 16 train and 16 valid 8×8 images of 10 classes, batches of 8."""
    return tiny_data()


@pytest.fixture
def selbench_plugins() -> Iterator[Callable[..., PluginHost]]:
    """Isolate selbench's process-wide plugin host for one test; calling the fixture loads plugin modules.

    ``selbench_plugins(("my-plugin", my_module), ...)`` makes a host with those modules (hook
    implementations, registered under the given plugin names) plus the installed plugins the
    process-wide one and returns it; ``entry_points=False`` leaves the installed ones out (the
    built-in spaces and selectors included).  Before and after the test the host is dropped, so
    selbench builds it afresh from the installed plugins on next use.
    """
    def install(*plugins: tuple[str, object], entry_points: bool = True) -> PluginHost:
        host = PluginHost(plugins, entry_points=entry_points)
        use_plugin_host(host)
        return host

    use_plugin_host(None)
    yield install
    use_plugin_host(None)
