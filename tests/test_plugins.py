"""The plugin host: entry points, SELBENCH_DISABLE_PLUGINS, clashing names, selectors that need data."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import types

import pytest

import selbench
from selbench import (
    PluginError,
    PluginHost,
    SelbenchError,
    Selection,
    Selector,
    hookimpl,
)


def selector_plugin(*names: str) -> types.SimpleNamespace:
    """A plugin object registering one trivial selector per name."""

    @hookimpl
    def selbench_register_selectors(register):
        for name in names:
            register(Selector(name=name, run=lambda ctx: Selection(genotype=None, failure="unused")))

    return types.SimpleNamespace(selbench_register_selectors=selbench_register_selectors)


def test_built_in_plugins_come_from_entry_points():
    host = PluginHost()
    plugins = {name: (dist, version) for name, dist, version in host.plugins()}
    assert plugins["alpha-magnitude"] == ("selbench", selbench.__version__)
    assert plugins["darts"] == ("selbench", selbench.__version__)
    selector = host.registrations("selector")["alpha-magnitude"]
    assert (selector.plugin, selector.distribution) == ("alpha-magnitude", "selbench")
    assert host.registrations("space")["darts"].plugin == "darts"


def test_disabled_plugin_is_not_loaded(monkeypatch):
    monkeypatch.setenv("SELBENCH_DISABLE_PLUGINS", " alpha-magnitude , some-other-plugin")
    host = PluginHost()
    assert "alpha-magnitude" not in {name for name, _, _ in host.plugins()}
    assert "alpha-magnitude" not in host.registrations("selector")
    assert "darts" in host.registrations("space")
    with pytest.raises(SelbenchError, match=r"unknown selector 'alpha-magnitude'; registered selectors: "):
        host.get("selector", "alpha-magnitude")


def test_disabling_also_applies_to_plugins_given_in_code(monkeypatch):
    monkeypatch.setenv("SELBENCH_DISABLE_PLUGINS", "b")
    host = PluginHost(plugins=[("a", selector_plugin("first")), ("b", selector_plugin("second"))], entry_points=False)
    assert sorted(host.registrations("selector")) == ["first"]


def test_two_plugins_registering_one_selector_name_is_an_error_naming_both():
    host = PluginHost(plugins=[("a", selector_plugin("greedy")), ("b", selector_plugin("other", "greedy"))],
                      entry_points=False)
    with pytest.raises(PluginError) as info:
        host.registrations("selector")
    message = str(info.value)
    assert "selector 'greedy' is registered twice" in message
    assert "plugin 'a'" in message and "plugin 'b'" in message
    assert "SELBENCH_DISABLE_PLUGINS" in message


@pytest.mark.parametrize("registered, complaint", [
    (object(), r"plugin 'odd' registered <object object at .*> as a selector; selbench_register_selectors takes "
               r"selbench.Selector objects"),
    (Selector(name="", run=lambda ctx: None), r"plugin 'odd' registered a selector without a name"),
])
def test_what_is_not_a_named_selector_is_refused(registered, complaint):
    @hookimpl
    def selbench_register_selectors(register):
        register(registered)

    host = PluginHost(plugins=[("odd", types.SimpleNamespace(selbench_register_selectors=selbench_register_selectors))],
                      entry_points=False)
    with pytest.raises(PluginError, match=complaint):
        host.registrations("selector")


def fake_distribution(root, dist: str, entry_point: str, module: str, body: str) -> None:
    """An installed distribution as importlib.metadata sees it: a .dist-info folder and a module."""
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[selbench]\n{entry_point} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(body))


def test_two_distributions_with_one_plugin_name_is_an_error(tmp_path, monkeypatch):
    fake_distribution(tmp_path, "impostor", "alpha-magnitude", "impostor_plugin", """
        import selbench

        @selbench.hookimpl
        def selbench_register_selectors(register):
            register(selbench.Selector(name="impostor", run=lambda ctx: None))
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as info:
        PluginHost()
    assert "'alpha-magnitude' is used by two distributions" in str(info.value)
    assert "impostor 1.0" in str(info.value) and "selbench" in str(info.value)
    sys.modules.pop("impostor_plugin", None)


def test_a_plugin_that_fails_to_import_is_named(tmp_path, monkeypatch):
    fake_distribution(tmp_path, "broken", "broken-plugin", "broken_plugin", "raise ImportError('needs foo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"plugin 'broken-plugin' \(broken 1\.0\) failed to import: "
                                          r"ImportError: needs foo; .*SELBENCH_DISABLE_PLUGINS=broken-plugin"):
        PluginHost()
    monkeypatch.setenv("SELBENCH_DISABLE_PLUGINS", "broken-plugin")
    assert "alpha-magnitude" in PluginHost().registrations("selector")


def test_selector_that_needs_data_refuses_to_run_without(supernet):
    calls = []
    needy = Selector(name="needy", run=lambda ctx: calls.append(ctx), needs_data=True)
    with pytest.raises(SelbenchError, match=r"selector 'needy' needs the supernet's train/valid data; pass data="):
        selbench.select(supernet, needy)
    assert not calls


def test_unknown_selector_and_unknown_option_are_clear_errors(supernet):
    with pytest.raises(SelbenchError, match=r"unknown selector 'nope'; registered selectors: .*alpha-magnitude"):
        selbench.select(supernet, "nope")
    with pytest.raises(selbench.OptionError, match=r"unknown option 'depth' for selector 'alpha-magnitude'"):
        selbench.select(supernet, "alpha-magnitude", depth=3)


def test_list_functions_name_the_built_ins():
    assert "alpha-magnitude" in selbench.list_selectors()
    assert "darts" in selbench.list_spaces()
    assert selbench.get_selector("alpha-magnitude").needs_data is False


BROKEN_PLUGINS = {
    "misspelled": ("""
        import selbench

        @selbench.hookimpl
        def selbench_register_selector(register):  # the hook is selbench_register_selectors
            pass
        """, r"plugin 'misspelled' \(misspelled-dist 1\.0\) implements unknown hook selbench_register_selector; "
             r"the hooks are .*selbench_register_selectors.*SELBENCH_DISABLE_PLUGINS=misspelled"),
    "wrong-arguments": ("""
        import selbench

        @selbench.hookimpl
        def selbench_register_selectors(add):
            pass
        """, r"plugin 'wrong-arguments' \(wrong-arguments-dist 1\.0\) does not fit selbench's hooks: .*add"),
    "raising": ("""
        import selbench

        @selbench.hookimpl
        def selbench_register_selectors(register):
            register(selbench.Selector("raising", run=None), "an extra argument")
        """, r"plugin 'raising' \(raising-dist 1\.0\) failed in selbench_register_selectors: TypeError: .*"
             r"SELBENCH_DISABLE_PLUGINS=raising"),
    "wrong-kind": ("""
        import selbench

        @selbench.hookimpl
        def selbench_register_spaces(register):
            register(selbench.Selector("not-a-space", run=None))
        """, r"plugin 'wrong-kind' \(wrong-kind-dist 1\.0\) registered Selector\(name='not-a-space'.* as a space; "
             r"selbench_register_spaces takes selbench.SearchSpace objects"),
}


@pytest.mark.parametrize("plugin", sorted(BROKEN_PLUGINS))
def test_a_broken_installed_plugin_is_one_line_naming_it_and_exit_2(plugin, tmp_path):
    body, message = BROKEN_PLUGINS[plugin]
    module = plugin.replace("-", "_") + "_plugin"
    fake_distribution(tmp_path, f"{plugin}-dist", plugin, module, body)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "selbench", "plugins"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.search(message, lines[0]), lines[0]
    env["SELBENCH_DISABLE_PLUGINS"] = plugin  # the advice in the message works
    assert subprocess.run([sys.executable, "-m", "selbench", "plugins"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120).returncode == 0


def test_an_observer_hook_that_raises_names_its_plugin(supernet):
    @hookimpl
    def selbench_selection_finished(selection):
        raise RuntimeError("tracker offline")

    logger = types.SimpleNamespace(selbench_selection_finished=selbench_selection_finished)
    selbench.use_plugin_host(PluginHost(plugins=[("tracker", logger)]))
    try:
        with pytest.raises(PluginError, match=r"plugin 'tracker' failed in selbench_selection_finished: "
                                              r"RuntimeError: tracker offline"):
            selbench.select(supernet, "alpha-magnitude")
    finally:
        selbench.use_plugin_host(None)
