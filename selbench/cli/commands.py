"""CLI sub-commands; each module defines ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``."""

COMMANDS = [
    "plugins",
    "select",
    "train",
    "recipes",
    "retrain",
    "run",
    "worker",
    "status",
    "demo",
    "leaderboard",
    "analyze",
    "report",
    "draw",
    "tabulate",
]
