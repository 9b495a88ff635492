"""CLI sub-commands; each module defines ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``."""

COMMANDS = [
    "plugins",
    "select",
    "train",
    "recipes",
    "retrain",
    "run",
    "demo",
    "leaderboard",
    "analyze",
    "report",
    "draw",
]
