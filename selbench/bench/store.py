"""The run store: every pipeline unit, keyed by the hash of its full configuration.

A *unit* is one supernet training, one selection, one retrain or one cell of a truth table
(``tabulate``).  Its configuration (recipe section(s), seed, the keys of the units it builds
on, selector name + distribution version + options, ...) is a JSON-able dict; its key is the
sha256 of the canonical JSON of that dict, so the same work always lands in the same place
and any change to the configuration gives a new unit.  Callers normalise their configs
(resolved options, typed values): ``1`` and ``1.0`` are different configurations.

Layout::

    RUNS/<kind>/<key[:16]>/record.json     the record, written last
    RUNS/<kind>/<key[:16]>/<artifacts>     checkpoints, genotypes, ... (and resume state)
    RUNS/<kind>/<key[:16]>/attempts.json   every computation started: host, pid, times, outcome
    RUNS/<kind>/<key[:16]>/claim.json      while a worker computes the unit (see selbench.bench.claims)
    RUNS/<kind>/<key[:16]>.lock            the unit's lock file, held while a claim is checked or written

``record.json``::

    {"format": "selbench-unit", "version": 1, "kind": ..., "key": <full sha256>,
     "config": {...}, "about": {words for people: recipe, selector, seeds}, "status": ...,
     "result": {...}, "artifacts": {name: {"sha256": ..., "bytes": ...}}, "attempts": [...],
     "crash": {"type", "message", "traceback"} (crashed units only), "selbench": <version>,
     "finished_at": <ISO time>}

``status`` is ``"complete"``; ``"failed"`` when the result carries a truthy ``failure`` (a
selector that found no cell: a finished answer, reused and counted on the leaderboard); or
``"crashed"`` when the computation raised — a bug, an out-of-memory — which is *not* a
result: the record keeps the exception for the user and the leaderboard, and the next run
computes the unit again (resuming from whatever state the computation saved).

Every file is written atomically (temp file + ``os.replace``) and the record is written after
its artifacts, so a killed unit has no record and is simply computed again; its directory
keeps whatever resume state the computation saved there.  A record that does not parse, has
another format version or key, or whose artifacts are missing or differ from their recorded
sha256 is *corrupt*: it is reported, moved aside to ``<key[:16]>.corrupt`` and the unit is
recomputed, never used.  Workers that share a runs directory (processes, cluster jobs) claim
a unit before computing it, so each unit is computed once (:mod:`selbench.bench.claims`).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from tqdm import tqdm

from selbench.bench.claims import CLAIM, DEFAULT_STALE_AFTER, Claims, Owner, read_claim, stale_reason
from selbench.core.errors import SelbenchError, StoreError
from selbench.core.files import (
    atomic_torch_save,
    atomic_write_json,
    canonical_json,
    config_key,
    file_sha256,
    read_json_or_none,
)
from selbench.core.version import __version__

FORMAT = "selbench-unit"
FORMAT_VERSION = 1
KINDS = ("supernet", "selection", "retrain", "tabulate")  # tabulate: one cell, one seed of a truth table
RECORD = "record.json"
ATTEMPTS = "attempts.json"
FINISHED = ("complete", "failed")
KEY_PREFIX = 16  # hex digits of the key used as the directory name
RUNS_ENV = "SELBENCH_RUNS"
DEFAULT_RUNS_DIR = "runs"


def default_runs_dir() -> Path:
    """``$SELBENCH_RUNS`` if set, else ``./runs``."""
    return Path(os.environ.get(RUNS_ENV) or DEFAULT_RUNS_DIR)


@dataclass(frozen=True)
class Unit:
    """A finished unit as read back from its verified record."""

    kind: str
    key: str
    directory: Path
    record: Mapping[str, Any]

    @property
    def short_key(self) -> str:
        return self.key[:KEY_PREFIX]

    @property
    def status(self) -> str:
        return self.record["status"]

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def crashed(self) -> bool:
        return self.status == "crashed"

    @property
    def attempts(self) -> int:
        """How many computations of this unit started (killed and crashed ones included)."""
        return len(self.record.get("attempts", ())) or 1

    @property
    def config(self) -> Mapping[str, Any]:
        return self.record["config"]

    @property
    def result(self) -> Mapping[str, Any]:
        return self.record["result"]

    def artifact(self, name: str) -> Path:
        """Path of a recorded (and verified) artifact."""
        if name not in self.record["artifacts"]:
            raise StoreError(f"{self.kind} unit {self.short_key} has no artifact {name!r}; "
                             f"it has {sorted(self.record['artifacts'])}")
        return self.directory / name


class UnitWork:
    """What a computation gets: its unit directory and atomic writers that register artifacts.

    Files in :attr:`directory` that are not registered (e.g. a resume checkpoint) are kept
    across interruptions but not hashed into the record.
    """

    def __init__(self, kind: str, key: str, config: Mapping[str, Any], directory: Path):
        self.kind = kind
        self.key = key
        self.config = config
        self.directory = directory
        self.artifacts: list[str] = []

    def path(self, name: str) -> Path:
        if not name or name in (RECORD, ATTEMPTS, CLAIM) or Path(name).name != name or name.startswith("."):
            raise StoreError(f"artifact name {name!r} must be a plain file name other than {RECORD}")
        return self.directory / name

    def add_artifact(self, name: str) -> Path:
        """Register a file the computation wrote itself (atomically!) under :meth:`path`."""
        path = self.path(name)
        if name not in self.artifacts:
            self.artifacts.append(name)
        return path

    def save_torch(self, name: str, obj: Any) -> Path:
        path = self.add_artifact(name)
        atomic_torch_save(obj, path)
        return path

    def save_json(self, name: str, obj: Any) -> Path:
        path = self.add_artifact(name)
        atomic_write_json(obj, path)
        return path


@dataclass(frozen=True)
class Busy:
    """A unit that another live worker is computing now."""

    kind: str
    key: str
    label: str
    owner: Owner


class RunStore:
    """Units under one runs directory; ``log`` receives one line per reuse, computation or problem.

    ``stale_after``: seconds without a heartbeat after which another host's claim on a unit is
    taken over (see :mod:`selbench.bench.claims`); ``poll``: seconds between looks at a unit
    another worker computes.
    """

    def __init__(self, root: str | os.PathLike, *, log: Callable[[str], None] | None = None,
                 stale_after: float = DEFAULT_STALE_AFTER, poll: float = 2.0):
        self.root = Path(root)
        self.log = log if log is not None else _log_to_stderr
        self.claims = Claims(stale_after=stale_after)
        self.poll = poll

    def kind_directory(self, kind: str) -> Path:
        if kind not in KINDS:
            raise StoreError(f"unknown unit kind {kind!r}; kinds are {', '.join(KINDS)}")
        return self.root / kind

    def directory(self, kind: str, key: str) -> Path:
        return self.kind_directory(kind) / key[:KEY_PREFIX]

    def lookup(self, kind: str, config: Mapping[str, Any]) -> Unit | None:
        """The finished unit for ``config``, or ``None`` (never done, interrupted, crashed, or corrupt: reported)."""
        key = config_key(config)
        directory = self.directory(kind, key)
        if not (directory / RECORD).exists():
            return None
        unit, problem = _read_unit(kind, directory, expected_key=key)
        if unit is not None and unit.crashed:
            return None  # retried: a crash is not a result
        if problem is not None:
            self.log(f"corrupt {kind} {key[:KEY_PREFIX]}: {problem}; recomputing")
            _move_aside(directory, ".corrupt")
            return None
        return unit

    def read(self, kind: str, config: Mapping[str, Any]) -> Unit | None:
        """The recorded unit for ``config`` as it is — finished or crashed — or ``None``; nothing is moved."""
        key = config_key(config)
        unit, _ = _read_unit(kind, self.directory(kind, key), expected_key=key)
        return unit

    def claim_of(self, kind: str, config: Mapping[str, Any]) -> Owner | None:
        """The live worker computing the unit for ``config`` now, or ``None``."""
        owner = read_claim(self.directory(kind, config_key(config)) / CLAIM)
        return owner if owner is not None and stale_reason(owner, self.claims.stale_after) is None else None

    def record_crash(self, kind: str, config: Mapping[str, Any], crash: Mapping[str, str],
                     about: Mapping[str, Any]) -> Unit:
        """Record a unit whose worker died without a record (e.g. a cluster job killed for memory) as crashed."""
        key = config_key(config)
        directory = self.directory(kind, key)
        directory.mkdir(parents=True, exist_ok=True)
        attempts = read_json_or_none(directory / ATTEMPTS)
        return self._write_record(UnitWork(kind, key, config, directory), "crashed", {},
                                  attempts if isinstance(attempts, list) else [], about, crash=crash)

    def run_unit(self, kind: str, config: Mapping[str, Any], compute: Callable[[UnitWork], Mapping[str, Any]],
                 *, label: str = "", about: Mapping[str, Any] | None = None) -> Unit:
        """:meth:`try_unit`, waiting while another worker computes the unit."""
        waiting = False
        while True:
            outcome = self.try_unit(kind, config, compute, label=label, about=about)
            if isinstance(outcome, Unit):
                return outcome
            if not waiting:
                self.log(f"waiting for {kind} {outcome.label}: computed by {outcome.owner.describe()}")
                waiting = True
            time.sleep(self.poll)

    def try_unit(self, kind: str, config: Mapping[str, Any], compute: Callable[[UnitWork], Mapping[str, Any]],
                 *, label: str = "", about: Mapping[str, Any] | None = None) -> Unit | Busy:
        """Reuse the finished unit for ``config``, or claim it and run ``compute`` — or :class:`Busy`.

        ``compute(work)`` writes its artifacts through ``work`` and returns the result dict
        (plain JSON); a truthy ``result["failure"]`` finishes the unit with status ``"failed"``,
        reused like any result.  ``label`` names the unit in words on the log; ``about`` (plain
        JSON, e.g. recipe and selector) is kept in the record for readers that cannot parse a
        crashed unit's empty result.

        Errors: a :class:`~selbench.core.errors.SelbenchError` (bad input) or an interrupt
        propagates and leaves no record; any other exception is recorded as a *crashed* unit
        (exception and traceback in the record), returned, and retried by the next call.
        """
        key = config_key(config)
        shown = f"{label} ({key[:KEY_PREFIX]})" if label else key[:KEY_PREFIX]
        unit = self.lookup(kind, config)
        if unit is not None:
            self.log(f"reused {kind} {shown}")
            return unit
        directory = self.directory(kind, key)
        owner = self.claims.acquire(directory, self.kind_directory(kind) / f"{key[:KEY_PREFIX]}.lock",
                                    finished=lambda: self._finished(kind, directory, key),
                                    warn=lambda why: self.log(f"warning: {kind} {shown}: {why}"))
        if owner is None:  # finished by another worker a moment ago
            return self.try_unit(kind, config, compute, label=label, about=about)
        if owner.pid != os.getpid() or owner.host != socket.gethostname():
            return Busy(kind, key, shown, owner)
        try:
            return self._compute(UnitWork(kind, key, config, directory), compute, shown, about or {})
        finally:
            self.claims.release(directory)

    def _finished(self, kind: str, directory: Path, key: str) -> bool:
        unit, _ = _read_unit(kind, directory, expected_key=key)
        return unit is not None and not unit.crashed

    def _compute(self, work: UnitWork, compute: Callable[[UnitWork], Mapping[str, Any]], label: str,
                 about: Mapping[str, Any]) -> Unit:
        previous = self._previous_record(work)
        if previous is not None:
            self.log(f"retrying crashed {work.kind} {label} (it raised {previous['crash']['type']})")
        for half_written in work.directory.glob(".*.tmp"):  # left by a killed atomic write; the claim is ours
            half_written.unlink()
        attempts = _start_attempt(work.directory, label)
        self.log(f"computing {work.kind} {label}")
        try:
            result = dict(compute(work))
        except SelbenchError:
            _end_attempt(work.directory, attempts, "refused")
            raise
        except (KeyboardInterrupt, SystemExit):
            _end_attempt(work.directory, attempts, "interrupted")
            raise
        except Exception as exc:
            crash = {"type": type(exc).__name__, "message": str(exc)[:2000], "traceback": traceback.format_exc()}
            _end_attempt(work.directory, attempts, "crashed")
            unit = self._write_record(work, "crashed", {}, attempts, about, crash=crash)
            self.log(f"crashed {work.kind} {label}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]} "
                     f"(traceback in {work.directory / RECORD}); the next run retries it")
            return unit
        _end_attempt(work.directory, attempts, "failed" if result.get("failure") else "complete")
        return self._write_record(work, "failed" if result.get("failure") else "complete", result, attempts, about)

    def _previous_record(self, work: UnitWork) -> Mapping[str, Any] | None:
        unit, _ = _read_unit(work.kind, work.directory, expected_key=work.key)
        return unit.record if unit is not None and unit.crashed else None

    def _write_record(self, work: UnitWork, status: str, result: dict, attempts: list[dict],
                      about: Mapping[str, Any], crash: Mapping[str, str] | None = None) -> Unit:
        artifacts = {}
        for name in work.artifacts if status != "crashed" else ():
            path = work.directory / name
            if not path.is_file():
                raise StoreError(f"{work.kind} unit {work.key[:KEY_PREFIX]}: artifact {name!r} was registered "
                                 "but never written")
            artifacts[name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        record = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "kind": work.kind,
            "key": work.key,
            "config": work.config,
            "about": dict(about),
            "status": status,
            "result": result,
            "artifacts": artifacts,
            "attempts": attempts,
            "selbench": __version__,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if crash is not None:
            record["crash"] = dict(crash)
        canonical_json(record)  # refuse a result that is not plain JSON before anything is written
        atomic_write_json(record, work.directory / RECORD)
        return Unit(work.kind, work.key, work.directory, record)

    def discard(self, kind: str, key: str) -> None:
        """Set a unit aside as ``<key[:16]>.replaced`` so that it is computed again (``selbench run --redo``)."""
        directory = self.directory(kind, key)
        if directory.exists():
            _move_aside(directory, ".replaced")

    def units(self, kind: str, *, crashed: bool = False) -> Iterator[Unit]:
        """Every finished unit of ``kind`` (or, with ``crashed``, every crashed one); corrupt ones are reported."""
        base = self.kind_directory(kind)
        if not base.is_dir():
            return
        for directory in sorted(base.iterdir()):
            if not directory.is_dir() or "." in directory.name or not (directory / RECORD).exists():
                continue
            unit, problem = _read_unit(kind, directory)
            if unit is None:  # then ``problem`` says why
                self.log(f"corrupt {kind} {directory.name}: {problem}; skipped")
                continue
            if unit.crashed == crashed:
                yield unit


def _start_attempt(directory: Path, label: str) -> list[dict]:
    """Log this computation in ``attempts.json`` (earlier ones still "running" were killed) and return the log."""
    earlier = read_json_or_none(directory / ATTEMPTS)
    attempts = [dict(a, outcome="killed") if a.get("outcome") == "running" else a
                for a in (earlier if isinstance(earlier, list) else []) if isinstance(a, dict)]
    attempts.append({"unit": label, "host": socket.gethostname(), "pid": os.getpid(),
                     "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "outcome": "running"})
    atomic_write_json(attempts, directory / ATTEMPTS)
    return attempts


def _end_attempt(directory: Path, attempts: list[dict], outcome: str) -> None:
    attempts[-1].update(outcome=outcome, ended_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    atomic_write_json(attempts, directory / ATTEMPTS)


def _read_unit(kind: str, directory: Path, expected_key: str | None = None) -> tuple[Unit | None, str | None]:
    """The verified unit in ``directory``, or ``(None, why it cannot be used)``."""
    try:
        record = json.loads((directory / RECORD).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{RECORD} does not parse ({type(exc).__name__}: {str(exc)[:80]})"
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None, f"{RECORD} is not a selbench unit record"
    if record.get("version") != FORMAT_VERSION:
        return None, f"record format version {record.get('version')!r}, this selbench reads {FORMAT_VERSION}"
    missing = [f for f in ("kind", "key", "config", "status", "result", "artifacts") if f not in record]
    if missing:
        return None, f"record lacks {', '.join(missing)}"
    if record["kind"] != kind:
        return None, f"record is a {record['kind']!r} unit, found under {kind}/"
    if not isinstance(record["config"], dict) or record["key"] != config_key(record["config"]):
        return None, "record key does not match its configuration"
    if expected_key is not None and record["key"] != expected_key:
        return None, "record belongs to another configuration"
    if record["status"] not in FINISHED + ("crashed",):
        return None, f"record status {record['status']!r} is not finished"
    if not isinstance(record["artifacts"], dict):
        return None, "record artifacts are malformed"
    for name, meta in record["artifacts"].items():
        path = directory / name
        if not path.is_file():
            return None, f"artifact {name} is missing"
        digest = file_sha256(path)
        if not isinstance(meta, dict) or digest != meta.get("sha256"):
            size = path.stat().st_size
            return None, (f"artifact {name} has sha256 {digest[:12]}… ({size} bytes), the record says "
                          f"{str(meta.get('sha256') if isinstance(meta, dict) else None)[:12]}… "
                          f"({meta.get('bytes') if isinstance(meta, dict) else '?'} bytes): truncated or modified")
    return Unit(kind, record["key"], directory, record), None


def _move_aside(directory: Path, suffix: str) -> None:
    """Keep a corrupt or replaced unit for inspection as ``<dir><suffix>`` (replacing an older one); start afresh."""
    aside = directory.with_name(directory.name + suffix)
    if aside.exists():
        shutil.rmtree(aside)
    os.replace(directory, aside)


def _log_to_stderr(message: str) -> None:
    tqdm.write(f"selbench: {message}", file=sys.stderr)  # above any progress bar, not through it
