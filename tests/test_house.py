"""Tests that keep the house in order: hooks documented and exercised, the core free of plugins, plugins on
the public API only, no import circles, a docstring atop every module, and README examples that run."""
from __future__ import annotations

import ast
import inspect
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

import selbench
from selbench.plugin import hookspecs

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FACADE = "selbench"
# package -> folder, as installed (plugins/ is selbench.plugins, supernets/ is selbench.supernets)
PACKAGE_DIRS = {package: ROOT / folder for package, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items()}
PLUGIN_PACKAGES = ("selbench.plugins", "selbench.supernets")
# modules inside selbench/ written against the public API, as a plugin is, and public themselves: the testing kit
# for plugin authors
PUBLIC_API_CLIENTS = ("selbench.testing",)
ENTRY_POINT_MODULES = sorted({ep.split(":")[0] for ep in PYPROJECT["project"]["entry-points"]["selbench"].values()})
# package __init__ modules that may hold code: the facade, the command line and a plugin (an entry point)
INITS_WITH_CODE = {FACADE, "selbench.cli", "selbench.data.datasets"}
HOOK_NAMES = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
                    if name.startswith("selbench_"))


# -- the source tree as modules ----------------------------------------------------------------
def _module_name(package: str, folder: Path, path: Path) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _source_modules() -> dict[str, Path]:
    """Module name -> file for every .py under selbench/, plugins/ and supernets/."""
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            name = _module_name(package, folder, path)
            if name in modules and modules[name] != path:  # selbench/ must not hold a plugins/ or supernets/ folder
                raise AssertionError(f"{path} and {modules[name]} are both module {name}")
            modules[name] = path
    return modules


MODULES = _source_modules()


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_in(module: str, packages) -> bool:
    """Whether ``module`` is one of ``packages`` or inside one of them."""
    return any(module == p or module.startswith(p + ".") for p in packages)


def _imports(module: str, path: Path, tree: ast.Module | None = None):
    """Every import anywhere in the file (functions and ``if TYPE_CHECKING:`` blocks included), as
    ``(line, statement, base, names)``: ``base`` is the absolute module imported or imported from,
    ``names`` the names taken from it (``None`` for ``import base``)."""
    tree = _parse(path) if tree is None else tree
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, f"import {alias.name}", alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module
            names = [alias.name for alias in node.names]
            yield node.lineno, f"from {'.' * node.level}{node.module or ''} import {', '.join(names)}", base, names


def _targets(base: str, names: list[str] | None) -> list[str]:
    """The modules an import statement depends on: ``from pkg import sub`` -> ``pkg.sub`` when it is a module."""
    if names is None:
        return [base]
    return sorted({f"{base}.{name}" if f"{base}.{name}" in MODULES else base for name in names})


def _graph() -> dict[str, dict[str, list[str]]]:
    """module -> {imported source module -> the statements importing it}."""
    graph: dict[str, dict[str, list[str]]] = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, {})
        for line, statement, base, names in _imports(module, path):
            for target in _targets(base, names):
                if target in MODULES:
                    edges.setdefault(target, []).append(f"{_rel(path)}:{line}: {statement}")
    return graph


def _inside_selbench(module: str) -> bool:
    """Modules whose file is under selbench/ (not plugins/ or supernets/)."""
    return MODULES[module].is_relative_to(PACKAGE_DIRS[FACADE])


# -- (a) every hook is documented and exercised ---------------------------------------------------
def test_every_hook_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(HOOK_NAMES) >= 6, HOOK_NAMES
    missing = [name for name in HOOK_NAMES if f"`{name}" not in readme]
    assert not missing, f"README.md does not name these hooks of selbench/plugin/hookspecs.py: {missing}"
    assert "selbench/plugin/hookspecs.py" in readme, \
        "README.md should say that the hook specs live in selbench/plugin/hookspecs.py"
    stale = [m.group(0) for m in re.finditer(r"(?<![\w/])selbench/hookspecs\.py", readme)]
    assert not stale, "README.md names the old path selbench/hookspecs.py"


class Noise:
    """A dataset of random uint8 images (what selbench_register_datasets registers)."""

    name = "house-noise"
    description = "random 8x8 images, 4 classes"

    def __init__(self):
        self.loads = 0

    def load(self, root, *, download=False):
        self.loads += 1
        g = torch.Generator().manual_seed(0)
        return selbench.ImageSet(
            train_images=torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8, generator=g),
            train_labels=torch.arange(32) % 4,
            test_images=torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8, generator=g),
            test_labels=torch.arange(8) % 4,
            num_classes=4,
        )


class CountSteps:
    def __init__(self, epochs):
        self.steps = 0
        epochs.append(self)

    def step(self, split, weights, grads):
        self.steps += 1

    def result(self):
        return {"steps": self.steps}


class EveryHook:
    """One plugin implementing every hook of selbench/plugin/hookspecs.py, recording what it sees."""

    def __init__(self, space):
        self.space = space
        self.dataset = Noise()
        self.selector = selbench.Selector(name="house-first-choice", run=self.first_choice,
                                          description="per node the first edges, each with its first selectable op")
        self.scorer = selbench.Scorer(name="house-scorer", score=lambda ctx: {"test_accuracy": 0.5})
        self.table_source = selbench.TableSource(name="house-table", check=lambda recipe: None,
                                                 score=lambda genotype, recipe: {"test_accuracy": 0.25})
        self.epochs: list[CountSteps] = []
        self.observer = selbench.TrainingObserver(name="house-steps", new_epoch=lambda space: CountSteps(self.epochs))
        self.finished: list[selbench.SelectionRun] = []
        self.hooks_called: set[str] = set()

    @staticmethod
    def first_choice(ctx):
        space = ctx.space
        choices = {cell: {e.index: space.ops[space.selectable_ops[0]] for node in space.nodes
                          for e in space.edges_into(node)[: space.in_degree]} for cell in space.cell_types}
        return selbench.Selection(genotype=space.genotype_from_choices(choices))

    @selbench.hookimpl
    def selbench_register_selectors(self, register):
        self.hooks_called.add("selbench_register_selectors")
        register(self.selector)

    @selbench.hookimpl
    def selbench_register_spaces(self, register):
        self.hooks_called.add("selbench_register_spaces")
        register(self.space)

    @selbench.hookimpl
    def selbench_register_datasets(self, register):
        self.hooks_called.add("selbench_register_datasets")
        register(self.dataset)

    @selbench.hookimpl
    def selbench_register_scorers(self, register):
        self.hooks_called.add("selbench_register_scorers")
        register(self.scorer)

    @selbench.hookimpl
    def selbench_register_table_sources(self, register):
        self.hooks_called.add("selbench_register_table_sources")
        register(self.table_source)

    @selbench.hookimpl
    def selbench_register_training_observers(self, register):
        self.hooks_called.add("selbench_register_training_observers")
        register(self.observer)

    @selbench.hookimpl
    def selbench_selection_finished(self, selection):
        self.hooks_called.add("selbench_selection_finished")
        self.finished.append(selection)


def test_every_hook_is_called_by_the_harness(tmp_path):
    """A plugin implementing every hook, alone in a host: each registration lands where the harness looks it up,
    training sees the dataset and the observer, and selection reports its run to selbench_selection_finished."""
    plugin = EveryHook(selbench.get_space("darts"))  # the built-in space object, registered again by this plugin
    unexercised = [name for name in HOOK_NAMES if not callable(getattr(plugin, name, None))]
    assert not unexercised, f"add these hooks to EveryHook (and check that the harness calls them): {unexercised}"
    host = selbench.PluginHost(plugins=[("house", plugin)], entry_points=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    selbench.use_plugin_host(host)
    try:
        assert selbench.list_selectors() == ["house-first-choice"]
        assert selbench.get_selector("house-first-choice") is plugin.selector
        assert selbench.list_spaces() == ["darts"]
        assert selbench.get_space("darts") is plugin.space
        assert selbench.list_datasets() == ["house-noise"]
        assert selbench.get_dataset("house-noise") is plugin.dataset
        assert selbench.list_scorers() == ["house-scorer"]
        assert selbench.get_scorer("house-scorer") is plugin.scorer
        assert [r.obj for r in host.registrations("table source").values()] == [plugin.table_source]
        assert [r.obj for r in host.registrations("training observer").values()] == [plugin.observer]
        assert host.registrations("selector")["house-first-choice"].plugin == "house"

        recipe = selbench.Recipe.from_dict({
            "name": "house",
            "supernet": {"space": "darts", "C": 2, "layers": 3, "steps": 2},
            "data": {"dataset": "house-noise", "batch_size": 16, "crop_padding": 0, "flip": False, "cutout": 0},
            "search": {"mode": "bilevel-1st", "epochs": 1},
            "retrain": {"C": 4, "layers": 2, "auxiliary": False},
        })
        checkpoint = selbench.train_supernet(recipe, seed=0, out_dir=tmp_path, progress=False)
        assert plugin.dataset.loads == 1
        assert len(plugin.epochs) == 1 and plugin.epochs[0].steps > 0, "the training observer saw no step"
        record = json.loads((tmp_path / "supernet.json").read_text())
        assert record["epochs"][0]["observers"]["house-steps"] == {"steps": plugin.epochs[0].steps}

        supernet = selbench.load_supernet(checkpoint)
        run = selbench.select(supernet, "house-first-choice", seed=3)
        assert plugin.finished == [run]
        assert isinstance(run, selbench.SelectionRun) and run.selector == "house-first-choice" and run.seed == 3
        assert run.genotype is not None
    finally:
        selbench.use_plugin_host(None)
        torch.set_num_threads(threads)
    never = sorted(set(HOOK_NAMES) - plugin.hooks_called)
    assert not never, f"hooks never called: {never}"


# -- (b) the core imports no plugin or space -------------------------------------------------------
def _plugin_modules() -> list[str]:
    """Modules that are plugins: the plugin packages, selbench's entry-point modules and any installed entry point."""
    installed = {ep.module for ep in metadata.entry_points(group="selbench")}
    return sorted({*PLUGIN_PACKAGES, *ENTRY_POINT_MODULES, *installed})


def test_importing_selbench_loads_no_plugin():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", "import json, sys, selbench; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, env=env, check=True, cwd=ROOT).stdout
    loaded = [m for m in json.loads(out) if _is_in(m, _plugin_modules())]
    assert not loaded, f"`import selbench` imports plugin modules: {loaded}"


def test_the_core_imports_no_plugin_module():
    forbidden = (*PLUGIN_PACKAGES, *ENTRY_POINT_MODULES)
    offenders = []
    for module, path in MODULES.items():
        if not _inside_selbench(module) or _is_in(module, ENTRY_POINT_MODULES):
            continue
        for line, statement, base, names in _imports(module, path):
            if any(_is_in(target, forbidden) for target in [base, *_targets(base, names)]):
                offenders.append(f"{_rel(path)}:{line}: {statement}")
    assert not offenders, ("modules of the core import plugin or space modules (reach them through the plugin host "
                           "instead):\n" + "\n".join(offenders))


# -- (c) plugins import only the public API --------------------------------------------------------
def _plugin_files() -> dict[str, Path]:
    clients = (*PLUGIN_PACKAGES, *PUBLIC_API_CLIENTS)
    files = {module: path for module, path in MODULES.items() if _is_in(module, clients)}
    for path in sorted((ROOT / "examples" / "selbench-random").rglob("*.py")):
        files[path.stem] = path
    return files


def test_plugins_import_only_the_public_api():
    public = set(selbench.__all__)
    offenders = []
    for module, path in _plugin_files().items():
        tree = _parse(path)
        own = next((p for p in PLUGIN_PACKAGES if _is_in(module, [p])), module)
        aliases = set()
        for line, statement, base, names in _imports(module, path, tree):
            where = f"{_rel(path)}:{line}: {statement}"
            relative = statement.startswith("from .")
            if relative:
                if not _is_in(base, [own]):
                    offenders.append(f"{where} (a relative import outside {own})")
            elif base == FACADE and names is not None:
                private = [name for name in names if name not in public]
                if private:
                    offenders.append(f"{where} ({', '.join(private)} not in selbench.__all__)")
            elif _is_in(base, [FACADE]) and base != FACADE and base not in PUBLIC_API_CLIENTS:
                offenders.append(f"{where} (import from `selbench` itself, not from its modules)")
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases |= {alias.asname or alias.name for alias in node.names if alias.name == FACADE}
        for node in ast.walk(tree):  # `import selbench` then selbench.core.x: the same back door
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr not in public):
                offenders.append(f"{_rel(path)}:{node.lineno}: selbench.{node.attr} (not in selbench.__all__)")
    assert not offenders, ("plugins may import only `selbench` and the names in selbench.__all__:\n"
                           + "\n".join(offenders))


# -- (d) no import circles -------------------------------------------------------------------------
def test_internal_modules_never_import_the_facade():
    graph = _graph()
    offenders = [statement for module, edges in graph.items()
                 if module != FACADE and _inside_selbench(module) and module not in PUBLIC_API_CLIENTS
                 for statement in edges.get(FACADE, [])]
    assert not offenders, ("modules inside selbench/ import the facade `selbench`; import the defining module "
                           "instead:\n" + "\n".join(offenders))


def test_package_inits_are_docstring_only():
    offenders = []
    for module, path in MODULES.items():
        if path.name != "__init__.py" or module in INITS_WITH_CODE:
            continue
        offenders += [f"{_rel(path)}:{line}: {statement}" for line, statement, _, _ in _imports(module, path)]
    assert not offenders, "package __init__ modules hold only their docstring, no imports:\n" + "\n".join(offenders)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    cycles = []
    for component in components:  # shortest way back to the start, breadth first inside the component
        start, members = component[0], set(component)
        paths = {start: [start]}
        queue = [start]
        while queue:
            node = queue.pop(0)
            for nxt in sorted(graph[node]):
                if nxt == start:
                    cycles.append(paths[node] + [start])
                    queue = []
                    break
                if nxt in members and nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    queue.append(nxt)
    return cycles


def test_no_import_circles():
    """Counting every import (function-level and TYPE_CHECKING ones too), no modules but the facade form a circle."""
    full = _graph()
    graph = {module: {t for t in edges if t != FACADE} for module, edges in full.items() if module != FACADE}
    cycles = _cycles(graph)
    report = []
    for cycle in cycles:
        report.append(" -> ".join(cycle))
        report += [f"    {full[a][b][0]}" for a, b in zip(cycle, cycle[1:])]
    assert not cycles, "import circles:\n" + "\n".join(report)


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"a"}}) == [["a", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# -- (e) every module says its one job on its first line -------------------------------------------
def test_every_module_starts_with_a_one_line_summary():
    offenders = []
    for path in MODULES.values():
        tree = _parse(path)
        first = tree.body[0] if tree.body else None
        if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)):
            offenders.append(f"{_rel(path)}: no module docstring")
        elif first.lineno != 1:
            offenders.append(f"{_rel(path)}: the docstring starts on line {first.lineno}, not line 1")
        elif not first.value.value.split("\n", 1)[0].strip():
            offenders.append(f"{_rel(path)}: the docstring's first line is empty")
    assert not offenders, "every module starts with a docstring whose first line says its job:\n" + "\n".join(offenders)


# -- (f) the README's examples run -----------------------------------------------------------------
def readme_python_blocks() -> list[tuple[int, str]]:
    """(line, code) of every ```python block of README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1))
            for m in re.finditer(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.M | re.S)]


def test_readme_python_examples_run(tmp_path):
    blocks = readme_python_blocks()
    assert len(blocks) >= 2, "README.md should show the Python API and a plugin module"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    failures = []
    for number, (line, code) in enumerate(blocks):
        workdir = tmp_path / f"block{number}"
        workdir.mkdir()
        script = workdir / "example.py"
        script.write_text(code, encoding="utf-8")
        result = subprocess.run([sys.executable, str(script)], cwd=workdir, env=env, capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0:
            failures.append(f"README.md line {line}: exit code {result.returncode}\n{result.stderr[-2000:]}")
    assert not failures, "README python examples fail:\n" + "\n".join(failures)


def test_import_scanner_sees_every_import(tmp_path):
    """Function-level, TYPE_CHECKING and relative imports all count."""
    path = tmp_path / "mod.py"
    path.write_text('"""A module."""\nfrom typing import TYPE_CHECKING\n'
                    "if TYPE_CHECKING:\n    import selbench.core.space\n"
                    "def f():\n    from ..plugins import alpha_magnitude\n    from . import sibling\n")
    found = [(base, names) for _, _, base, names in _imports("selbench.select.mod", path)]
    assert sorted(found, key=str) == sorted([("typing", ["TYPE_CHECKING"]), ("selbench.core.space", None),
                                             ("selbench.plugins", ["alpha_magnitude"]),
                                             ("selbench.select", ["sibling"])], key=str)
    assert _targets("selbench.plugins", ["alpha_magnitude"]) == ["selbench.plugins.alpha_magnitude"]
    assert _targets("selbench", ["Genotype"]) == ["selbench"]
