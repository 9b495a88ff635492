"""`selbench plugins`: every loaded plugin, where it comes from, and what it registered."""
from __future__ import annotations

import argparse

from tabulate import tabulate

from selbench.plugin.host import KINDS, plugin_host

HELP = "list installed plugins and what each registered"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["plain", "github"], default="plain", help="table style")


def run(args: argparse.Namespace) -> int:
    host = plugin_host()
    provided: dict[str, list[str]] = {}
    for kind in KINDS:
        for name, registration in sorted(host.registrations(kind).items()):
            provided.setdefault(registration.plugin, []).append(f"{kind} {name}")
    rows = [
        (plugin, dist or "-", version or "-", ", ".join(provided.get(plugin, [])) or "-")
        for plugin, dist, version in sorted(host.plugins(), key=lambda row: row[0])
        if dist is not None or plugin in provided
    ]
    print(tabulate(rows, headers=["plugin", "distribution", "version", "registers"], tablefmt=args.format))
    return 0
