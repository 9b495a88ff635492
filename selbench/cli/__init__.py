"""The ``selbench`` command line: one sub-command per module of this package (listed in ``commands``)."""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import Sequence

from selbench.cli.commands import COMMANDS
from selbench.core.errors import SelbenchError

EXIT_USER_ERROR = 2


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (and exit 2), like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SelbenchError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="selbench", description="Benchmark architecture selection in differentiable NAS.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_OneLineParser)
    for name in COMMANDS:
        module = importlib.import_module(f"selbench.cli.{name}")
        command = sub.add_parser(name.replace("_", "-"), help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"selbench: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning  # restored when the command ends
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args) or 0)
    except SelbenchError as exc:
        print(f"selbench: error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever it says
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("selbench: interrupted; finished work is kept, run the same command again to continue", file=sys.stderr)
        return 130


