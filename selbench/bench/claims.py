"""Claims on run-store units: which worker computes a unit now, so that no two compute it at once.

A worker that starts a unit writes ``claim.json`` into the unit's directory — its host, pid,
start time and a heartbeat time — while holding the unit's lock file (:mod:`filelock`, a
sibling ``<key[:16]>.lock``; held only for the moment of checking and writing, never for the
whole computation, so a worker that dies leaves nothing locked).  A background thread
refreshes the heartbeat of every claim this process holds.  Another worker that finds the
claim leaves the unit alone, unless the claim is *stale*: its owner runs on this host and its
process is gone, or its heartbeat is older than ``stale_after`` seconds (a dead host, a frozen
job).  A stale claim is taken over with a warning.
"""
from __future__ import annotations

import errno
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from selbench.core.errors import StoreError
from selbench.core.files import atomic_write_json, read_json_or_none

CLAIM = "claim.json"
DEFAULT_STALE_AFTER = 600.0  # seconds without a heartbeat before another host's claim is taken over
LOCK_TIMEOUT = 60.0  # the lock is held for milliseconds; a minute of waiting means a broken lock


@dataclass(frozen=True)
class Owner:
    """Who holds a claim: host, pid, when the computation started and the last heartbeat (Unix seconds)."""

    host: str
    pid: int
    started_at: str
    heartbeat: float

    def describe(self) -> str:
        return f"{self.host} pid {self.pid} (since {self.started_at})"

    def same_worker(self, other: Owner) -> bool:
        return (self.host, self.pid, self.started_at) == (other.host, other.pid, other.started_at)


def this_worker() -> Owner:
    return Owner(socket.gethostname(), os.getpid(), datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 time.time())


def stale_reason(owner: Owner, stale_after: float, now: float | None = None) -> str | None:
    """Why ``owner``'s claim can be taken over, or ``None`` while it looks alive."""
    if owner.host == socket.gethostname() and not _process_alive(owner.pid):
        return f"its process {owner.pid} on this host is gone"
    silent = (time.time() if now is None else now) - owner.heartbeat
    if silent > stale_after:
        return f"no heartbeat for {silent:.0f} s (limit {stale_after:.0f} s)"
    return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # it exists, under another user
    return True


class Claims:
    """The claims this process holds, their heartbeat thread, and the taking of new ones."""

    def __init__(self, *, stale_after: float = DEFAULT_STALE_AFTER, heartbeat_every: float | None = None):
        if stale_after <= 0:
            raise StoreError(f"stale_after must be a positive number of seconds, not {stale_after}")
        self.stale_after = stale_after
        self.heartbeat_every = heartbeat_every if heartbeat_every is not None else min(60.0, stale_after / 4)
        self._held: dict[Path, tuple[Path, Owner]] = {}  # claim file -> (its lock file, the owner written)
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None

    def acquire(self, directory: Path, lock_path: Path, *, finished: Callable[[], bool],
                warn: Callable[[str], None]) -> Owner | None:
        """Claim ``directory``; ``None`` if it is finished meanwhile, else the owner that holds it.

        Returns this worker's :class:`Owner` on success (compare with :meth:`Owner.same_worker`),
        another live owner when the unit is busy.  ``finished()`` is checked under the lock, so a
        unit finished by another worker is never claimed again.
        """
        claim_path = directory / CLAIM
        with _locked(lock_path):
            if finished():
                return None
            current = read_claim(claim_path)
            if current is not None:
                reason = stale_reason(current, self.stale_after)
                if reason is None:
                    return current
                warn(f"taking over from {current.describe()}: {reason}")
            me = this_worker()
            directory.mkdir(parents=True, exist_ok=True)
            atomic_write_json(asdict(me), claim_path)
        with self._guard:
            self._held[claim_path] = (lock_path, me)
        self._start_heartbeat()
        return me

    def release(self, directory: Path) -> None:
        """Give up this worker's claim on ``directory`` (the record, if any, is already written)."""
        claim_path = directory / CLAIM
        with self._guard:
            held = self._held.pop(claim_path, None)
        if held is None:
            return
        lock_path, me = held
        with _locked(lock_path):
            current = read_claim(claim_path)
            if current is not None and current.same_worker(me):  # not if another worker took it over
                claim_path.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        with self._guard:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._beat, name="selbench-heartbeat", daemon=True)
                self._thread.start()

    def _beat(self) -> None:
        while True:
            time.sleep(self.heartbeat_every)
            with self._guard:
                if not self._held:
                    self._thread = None
                    return
                for claim_path, (lock_path, me) in list(self._held.items()):
                    try:
                        with _locked(lock_path):
                            current = read_claim(claim_path)
                            if current is not None and current.same_worker(me):
                                atomic_write_json({**asdict(me), "heartbeat": time.time()}, claim_path)
                    except (OSError, StoreError):
                        pass  # a missed beat is harmless; the next one tries again


def read_claim(path: Path) -> Owner | None:
    """The owner named in a claim file; ``None`` when there is none (or it is unreadable: a claim half gone)."""
    data = read_json_or_none(path)
    try:
        return Owner(str(data["host"]), int(data["pid"]), str(data["started_at"]), float(data["heartbeat"]))
    except (TypeError, KeyError, ValueError):
        return None


class _locked:
    """The unit's lock file held for a short check-and-write, with a clear error if it never comes free."""

    def __init__(self, path: Path):
        self.lock = FileLock(path, timeout=LOCK_TIMEOUT)

    def __enter__(self) -> None:
        try:
            self.lock.acquire()
        except Timeout:
            raise StoreError(f"{self.lock.lock_file} stayed locked for {LOCK_TIMEOUT:.0f} s; if no selbench "
                             "process uses this runs directory, delete the lock file") from None

    def __exit__(self, *exc_info: object) -> None:
        self.lock.release()
