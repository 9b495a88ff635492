"""`selbench status`: per stage, the units of a runs directory that are done, running, queued, failed or crashed."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from selbench.bench.claims import CLAIM, DEFAULT_STALE_AFTER, read_claim, stale_reason
from selbench.bench.grid import describe
from selbench.bench.slurm import SLURM_DIR
from selbench.bench.store import ATTEMPTS, KINDS, RECORD, RUNS_ENV, RunStore, default_runs_dir
from selbench.core.errors import SelbenchError
from selbench.core.files import read_json_or_none

HELP = "show what a runs directory holds per stage: done, running (which worker), queued Slurm jobs, failed, crashed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", nargs="?", type=Path, default=None, metavar="RUNS",
                        help=f"runs directory (default: ${RUNS_ENV} or ./runs)")
    parser.add_argument("--watch", type=float, default=None, metavar="SECONDS", help="refresh every SECONDS")


def status_text(runs: Path) -> str:
    """The status of every stage of ``runs`` as text (see the module docstring)."""
    if not runs.is_dir():
        raise SelbenchError(f"runs directory {runs} does not exist; pass the directory `selbench run --runs` wrote")
    store = RunStore(runs, log=lambda line: None)
    submitted = _submitted_jobs(runs)
    lines = []
    for kind in KINDS:
        finished = list(store.units(kind))
        crashed = list(store.units(kind, crashed=True))
        running: list[str] = []
        stalled: list[str] = []
        for claim_path in sorted(store.kind_directory(kind).glob(f"*/{CLAIM}")):
            owner = read_claim(claim_path)
            if owner is None:
                continue
            about = _named(claim_path.parent)
            (stalled if stale_reason(owner, DEFAULT_STALE_AFTER) else running).append(f"{about} — {owner.describe()}")
        complete = sum(1 for unit in finished if not unit.failed)
        queued = [entry for key, entry in submitted.items() if key.startswith(f"{kind}:") and _waiting(
            store.kind_directory(kind) / entry.get("unit", "?"))]
        lines.append(f"{kind}: {complete} done, {len(finished) - complete} failed, {len(crashed)} crashed, "
                     f"{len(running)} running" + (f", {len(stalled)} stalled" if stalled else "")
                     + (f", {len(queued)} submitted and not started" if queued else ""))
        lines += [f"  running  {line}" for line in running] + [f"  stalled  {line}" for line in stalled]
        for unit in crashed:
            crash = unit.record.get("crash", {})
            where = f"; log {crash['log']}" if crash.get("log") else ""
            lines.append(f"  crashed  {describe(kind, unit.record.get('about', {}))} ({unit.short_key}): "
                         f"{crash.get('type')}: {' '.join(str(crash.get('message', '')).split())[:120]}{where}")
    if submitted:
        jobs = sorted({entry["job"].split("_")[0] for entry in submitted.values()})
        lines.append(f"Slurm job arrays: {', '.join(jobs)}; logs under {runs / SLURM_DIR}")
    return "\n".join(lines)


def _submitted_jobs(runs: Path) -> dict[str, dict[str, str]]:
    jobs: dict[str, dict[str, str]] = {}
    for path in sorted((runs / SLURM_DIR).glob("*.jobs.json")):
        saved = read_json_or_none(path)
        if isinstance(saved, dict):
            jobs.update(saved)
    return jobs


def _waiting(directory: Path) -> bool:
    """A submitted unit that has neither a record nor a claim yet (queued, or its job died before starting)."""
    return not (directory / RECORD).exists() and not (directory / CLAIM).exists()


def _named(directory: Path) -> str:
    """The unit in ``directory`` in words, as its latest attempt names it."""
    attempts = read_json_or_none(directory / ATTEMPTS)
    if isinstance(attempts, list) and attempts and isinstance(attempts[-1], dict) and attempts[-1].get("unit"):
        return str(attempts[-1]["unit"])
    return f"{directory.parent.name} {directory.name}"


def run(args: argparse.Namespace) -> int:
    runs = args.runs_dir or default_runs_dir()
    while True:
        print(status_text(runs), flush=True)
        if args.watch is None:
            return 0
        time.sleep(args.watch)
        print()
