"""The plugin host: loads ``selbench`` entry points with pluggy and collects what they register.

Every registered thing remembers the plugin, distribution and version it came from, so
records and ``selbench plugins`` can name its provider.  ``SELBENCH_DISABLE_PLUGINS``
(comma-separated plugin names, i.e. entry-point names) keeps plugins from loading.

A broken plugin is one :class:`selbench.PluginError` naming it and its distribution, never a
traceback: one that fails to import, implements a hook that does not exist (a misspelling:
pluggy's ``check_pending``) or with the wrong arguments, raises inside a hook, or registers
something that is not of the kind the hook registers.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Iterable

import pluggy

from selbench.core.errors import PluginError, SelbenchError
from selbench.core.space import SearchSpace
from selbench.data.dataset import Dataset
from selbench.plugin import hookspecs
from selbench.retrain.scorer import Scorer
from selbench.retrain.table_source import TableSource
from selbench.select.contract import Selector
from selbench.train.observers import TrainingObserver

ENTRY_POINT_GROUP = "selbench"
DISABLE_ENV = "SELBENCH_DISABLE_PLUGINS"

hookimpl = pluggy.HookimplMarker("selbench")

# kind -> registration hook; the kind names what the error messages call the things
KINDS = {
    "selector": "selbench_register_selectors",
    "space": "selbench_register_spaces",
    "dataset": "selbench_register_datasets",
    "scorer": "selbench_register_scorers",
    "table source": "selbench_register_table_sources",
    "training observer": "selbench_register_training_observers",
}

# kind -> what its register callback accepts (Dataset is a runtime-checkable protocol)
EXPECTED: dict[str, type] = {
    "selector": Selector,
    "space": SearchSpace,
    "dataset": Dataset,
    "scorer": Scorer,
    "table source": TableSource,
    "training observer": TrainingObserver,
}


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    obj: Any
    plugin: str
    distribution: str | None
    version: str | None

    @property
    def provider(self) -> str:
        dist = f" ({self.distribution} {self.version})" if self.distribution else ""
        return f"plugin {self.plugin!r}{dist}"


class UnknownPluginWarning(UserWarning):
    """SELBENCH_DISABLE_PLUGINS names a plugin that is not installed."""


class PluginHost:
    """A pluggy manager plus the registries filled from its registration hooks."""

    def __init__(self, plugins: Iterable[tuple[str, Any]] = (), *, entry_points: bool = True):
        self.manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.manager.add_hookspecs(hookspecs)
        self._dists: dict[str, tuple[str, str]] = {}
        for name in disabled_plugins():
            self.manager.set_blocked(name)
        for name, plugin in plugins:
            self._register_plugin(plugin, name)
        if entry_points:
            self._load_entry_points()
            self._warn_unknown_disabled(name for name, _ in plugins)
        self._check_hook_names()
        self._registry: dict[str, dict[str, Registration]] | None = None

    def _register_plugin(self, plugin: Any, name: str) -> None:
        """Register with pluggy; a hook implementation whose arguments do not match its spec is one clear error."""
        try:
            self.manager.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            detail = " ".join(str(exc).split())  # pluggy's message spans lines
            raise PluginError(f"{self.describe(name)} does not fit selbench's hooks: {detail}; fix or uninstall it, "
                              f"or set {DISABLE_ENV}={name}") from None

    def _check_hook_names(self) -> None:
        """pluggy's ``check_pending``: every ``selbench_*`` hook a plugin implements must be one selbench defines."""
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.manager.get_name(exc.plugin) or repr(exc.plugin)
            unknown = sorted(hook for hook in dir(self.manager.hook)
                             if not hook.startswith("_") and not getattr(self.manager.hook, hook).has_spec()
                             and any(impl.plugin_name == name
                                     for impl in getattr(self.manager.hook, hook).get_hookimpls()))
            hooks = ", ".join(sorted(KINDS.values()) + ["selbench_selection_finished"])
            raise PluginError(f"{self.describe(name)} implements unknown hook {', '.join(unknown) or str(exc)!s}; "
                              f"the hooks are {hooks}; fix the name or set {DISABLE_ENV}={name}") from None

    def describe(self, plugin_name: str) -> str:
        """``plugin 'name' (distribution version)``, as every error message names a plugin."""
        dist, version = self._dists.get(plugin_name, (None, None))
        return f"plugin {plugin_name!r}" + (f" ({dist} {version})" if dist else "")

    def _warn_unknown_disabled(self, given: Iterable[str]) -> None:
        """A name in SELBENCH_DISABLE_PLUGINS that no installed plugin has is most likely a typo: say so."""
        known = set(given) | self._entry_point_names
        unknown = [name for name in disabled_plugins() if name not in known]
        if unknown:
            warnings.warn(f"{DISABLE_ENV} names no installed plugin {', '.join(map(repr, unknown))}; "
                          f"installed plugins: {', '.join(sorted(known))}", UnknownPluginWarning, stacklevel=3)

    def _load_entry_points(self) -> None:
        self._entry_point_names: set[str] = set()
        for dist in metadata.distributions():
            for ep in dist.entry_points:
                if ep.group == ENTRY_POINT_GROUP:
                    self._entry_point_names.add(ep.name)
                if ep.group != ENTRY_POINT_GROUP or self.manager.is_blocked(ep.name):
                    continue
                if self.manager.get_plugin(ep.name) is not None:
                    first = self._dists.get(ep.name)
                    if first is not None and first[0] != dist.metadata["Name"]:
                        raise PluginError(
                            f"plugin name {ep.name!r} is used by two distributions, {first[0]} {first[1]} and "
                            f"{dist.metadata['Name']} {dist.version}; uninstall one of them")
                    continue  # the same distribution seen twice on sys.path
                try:
                    plugin = ep.load()
                except Exception as exc:  # a broken third-party plugin must not hide behind a traceback
                    raise PluginError(
                        f"plugin {ep.name!r} ({dist.metadata['Name']} {dist.version}) failed to import: "
                        f"{type(exc).__name__}: {exc}; fix or uninstall it, or set {DISABLE_ENV}={ep.name}"
                    ) from exc
                self._dists[ep.name] = (dist.metadata["Name"], dist.version)
                self._register_plugin(plugin, ep.name)

    # -- registries ------------------------------------------------------------------------
    def _collect(self) -> dict[str, dict[str, Registration]]:
        if self._registry is not None:
            return self._registry
        registry: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        for kind, hook_name in KINDS.items():
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
                register = self._register_callback(registry[kind], kind, impl.plugin_name)
                self._call(impl, hook_name, {"register": register})
        self._registry = registry
        return registry

    def _call(self, impl: pluggy.HookImpl, hook_name: str, kwargs: dict[str, Any]) -> None:
        """Call one plugin's implementation of ``hook_name``; what it raises becomes one line naming the plugin."""
        try:
            impl.function(*[kwargs[arg] for arg in impl.argnames])
        except PluginError:
            raise  # already names the plugin (e.g. a clash between two of them)
        except Exception as exc:
            raise PluginError(f"{self.describe(impl.plugin_name)} failed in {hook_name}: {type(exc).__name__}: {exc}; "
                              f"fix or uninstall it, or set {DISABLE_ENV}={impl.plugin_name}") from exc

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call every plugin's observer hook ``hook_name`` (e.g. ``selbench_selection_finished``), one at a time."""
        for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
            self._call(impl, hook_name, kwargs)

    def _register_callback(self, table: dict[str, Registration], kind: str, plugin_name: str) -> Callable[[Any], None]:
        dist, version = self._dists.get(plugin_name, (None, None))
        expected = EXPECTED[kind]

        def register(obj: Any) -> None:
            if not isinstance(obj, expected):
                raise PluginError(
                    f"{self.describe(plugin_name)} registered {_shorten(repr(obj))} as a {kind}; "
                    f"{KINDS[kind]} takes selbench.{expected.__name__} objects")
            name = getattr(obj, "name", None)
            if not isinstance(name, str) or not name:
                raise PluginError(f"{self.describe(plugin_name)} registered a {kind} without a name: {obj!r}")
            new = Registration(kind, name, obj, plugin_name, dist, version)
            if name in table:
                raise PluginError(
                    f"{kind} {name!r} is registered twice: by {table[name].provider} and by {new.provider}; "
                    f"uninstall one or set {DISABLE_ENV} to one of their plugin names")
            table[name] = new

        return register

    def registrations(self, kind: str) -> dict[str, Registration]:
        return dict(self._collect()[kind])

    def get(self, kind: str, name: str) -> Registration:
        table = self._collect()[kind]
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise SelbenchError(f"unknown {kind} {name!r}; registered {kind}s: {known} (see `selbench plugins`)")
        return table[name]

    def plugins(self) -> list[tuple[str, str | None, str | None]]:
        """(plugin name, distribution, version) of every loaded plugin."""
        return [(name, *self._dists.get(name, (None, None)))
                for name, plugin in self.manager.list_name_plugin() if plugin is not None]  # None: blocked

    @property
    def hook(self):
        return self.manager.hook


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def disabled_plugins() -> list[str]:
    return [name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()]


_default_host: PluginHost | None = None


def plugin_host() -> PluginHost:
    """The process-wide host, created on first use."""
    global _default_host
    if _default_host is None:
        _default_host = PluginHost()
    return _default_host


def use_plugin_host(host: PluginHost | None) -> None:
    """Replace the process-wide host (``None``: rebuild it on next use), e.g. in tests."""
    global _default_host
    _default_host = host
