"""The run store: every pipeline unit, keyed by the hash of its full configuration.

A *unit* is one supernet training, one selection or one retrain.  Its configuration (recipe
section(s), seed, the keys of the units it builds on, selector name + distribution version +
options, ...) is a JSON-able dict; its key is the sha256 of the canonical JSON of that dict,
so the same work always lands in the same place and any change to the configuration gives a
new unit.  Callers normalise their configs (resolved options, typed values): ``1`` and
``1.0`` are different configurations.

Layout::

    RUNS/<kind>/<key[:16]>/record.json     the record, written last
    RUNS/<kind>/<key[:16]>/<artifacts>     checkpoints, genotypes, ... (and resume state)

``record.json``::

    {"format": "selbench-unit", "version": 1, "kind": ..., "key": <full sha256>,
     "config": {...}, "status": "complete" | "failed", "result": {...},
     "artifacts": {name: {"sha256": ..., "bytes": ...}}, "selbench": <version>, "finished_at": <ISO time>}

Every file is written atomically (temp file + ``os.replace``) and the record is written after
its artifacts, so an interrupted unit has no record and is simply computed again; its
directory keeps whatever resume state the computation saved there.  A record that does not
parse, has another format version or key, is not finished, or whose artifacts are missing
or differ from their recorded sha256 is *corrupt*: it is reported, moved aside to
``<key[:16]>.corrupt`` and the unit is recomputed, never used.

A unit whose result carries a truthy ``failure`` (a selector that found no cell) is finished
with status ``"failed"``: it is reused like any other and counted on the leaderboard.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from selbench.core.errors import StoreError
from selbench.core.files import atomic_torch_save, atomic_write_json, canonical_json, config_key, file_sha256
from selbench.core.version import __version__

FORMAT = "selbench-unit"
FORMAT_VERSION = 1
KINDS = ("supernet", "selection", "retrain")
RECORD = "record.json"
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
        if not name or name == RECORD or Path(name).name != name or name.startswith("."):
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


class RunStore:
    """Units under one runs directory; ``log`` receives one line per reuse, computation or problem."""

    def __init__(self, root: str | os.PathLike, *, log: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.log = log if log is not None else _log_to_stderr

    def kind_directory(self, kind: str) -> Path:
        if kind not in KINDS:
            raise StoreError(f"unknown unit kind {kind!r}; kinds are {', '.join(KINDS)}")
        return self.root / kind

    def directory(self, kind: str, key: str) -> Path:
        return self.kind_directory(kind) / key[:KEY_PREFIX]

    def lookup(self, kind: str, config: Mapping[str, Any]) -> Unit | None:
        """The finished unit for ``config``, or ``None`` (never done, interrupted, or corrupt: reported)."""
        key = config_key(config)
        directory = self.directory(kind, key)
        if not (directory / RECORD).exists():
            return None
        unit, problem = _read_unit(kind, directory, expected_key=key)
        if problem is not None:
            self.log(f"corrupt {kind} {key[:KEY_PREFIX]}: {problem}; recomputing")
            _move_aside(directory)
            return None
        return unit

    def run_unit(self, kind: str, config: Mapping[str, Any], compute: Callable[[UnitWork], Mapping[str, Any]]) -> Unit:
        """Reuse the finished unit for ``config`` or run ``compute`` and record what it returns.

        ``compute(work)`` writes its artifacts through ``work`` and returns the result dict
        (plain JSON); a truthy ``result["failure"]`` finishes the unit with status ``"failed"``.
        An exception leaves no record, so the unit is computed again next time.
        """
        unit = self.lookup(kind, config)
        if unit is not None:
            self.log(f"reused {kind} {unit.short_key}")
            return unit
        key = config_key(config)
        directory = self.directory(kind, key)
        directory.mkdir(parents=True, exist_ok=True)
        self.log(f"computing {kind} {key[:KEY_PREFIX]}")
        work = UnitWork(kind, key, config, directory)
        result = dict(compute(work))
        return self._finish(work, result)

    def _finish(self, work: UnitWork, result: dict) -> Unit:
        artifacts = {}
        for name in work.artifacts:
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
            "status": "failed" if result.get("failure") else "complete",
            "result": result,
            "artifacts": artifacts,
            "selbench": __version__,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        canonical_json(record)  # refuse a result that is not plain JSON before anything is written
        atomic_write_json(record, work.directory / RECORD)
        return Unit(work.kind, work.key, work.directory, record)

    def units(self, kind: str) -> Iterator[Unit]:
        """Every finished unit of ``kind``; corrupt ones are reported (and left in place) and skipped."""
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
            yield unit


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
    if record["status"] not in FINISHED:
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


def _move_aside(directory: Path) -> None:
    """Keep a corrupt unit for inspection as ``<dir>.corrupt`` (replacing an older one) and start afresh."""
    aside = directory.with_name(directory.name + ".corrupt")
    if aside.exists():
        shutil.rmtree(aside)
    os.replace(directory, aside)


def _log_to_stderr(message: str) -> None:
    print(f"selbench: {message}", file=sys.stderr)
