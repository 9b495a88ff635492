"""The known truth tables: the ones selbench ships and those named in ``$SELBENCH_TABLES``.

Shipped tables live in this package's ``tables/`` folder (package data); ``$SELBENCH_TABLES``
adds table files, or folders of ``*.json`` tables, separated by the system's path separator.  A
recipe's table is the one whose ``recipe_hash`` equals its own
(:func:`selbench.truth.table.truth_hash`), whatever the recipe is called.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from selbench.recipes.recipe import Recipe
from selbench.truth.table import TableError, TruthTable, read_table, truth_hash

TABLES_ENV = "SELBENCH_TABLES"


def table_paths() -> list[Path]:
    """The shipped tables, then the files (or ``*.json`` in folders) ``$SELBENCH_TABLES`` names."""
    shipped = resources.files("selbench.truth") / "tables"
    paths = sorted(Path(str(entry)) for entry in shipped.iterdir() if entry.name.endswith(".json"))
    for part in os.environ.get(TABLES_ENV, "").split(os.pathsep):
        if not part:
            continue
        path = Path(part).expanduser()
        if not path.exists():
            raise TableError(f"{TABLES_ENV} names {path}, which does not exist")
        paths.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    return paths


def known_tables() -> list[TruthTable]:
    """Every table of :func:`table_paths`, read and checked."""
    return [read_table(path) for path in table_paths()]


def table_named(recipe_name: str) -> TruthTable | None:
    """The known table made from a recipe called ``recipe_name``, or ``None``."""
    return next((table for table in known_tables() if table.recipe == recipe_name), None)


def table_for(recipe: Recipe) -> TruthTable:
    """The known table of ``recipe``'s truth configuration; none is one :class:`TableError` saying how to make one."""
    wanted = truth_hash(recipe)
    tables = known_tables()
    for table in tables:
        if table.recipe_hash == wanted:
            return table
    have = ", ".join(f"{t.recipe} ({t.recipe_hash[:12]}…)" for t in tables) or "none"
    raise TableError(f"no selbench table of recipe {recipe.name!r} (truth hash {wanted[:12]}…; tables: {have}); "
                     f"make one with `selbench tabulate {recipe.name} --out FILE` and add FILE to ${TABLES_ENV}")
