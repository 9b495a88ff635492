"""Files and keys written crash-safe and read back checked: atomic writes, checksums, JSON records, content keys."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import torch

from selbench.core.errors import SelbenchError, StoreError


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    The file gets the mode an ordinary ``open`` would give it (0666 less the umask), not the
    private 0600 of a temporary file: run stores are shared between users and jobs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write ``data`` so that ``path`` holds either the old file or the complete new one."""
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON with sorted keys, atomically (:func:`atomic_write_bytes`)."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    except ValueError as exc:  # NaN or infinity: not JSON, and a sign that what produced the record diverged
        raise SelbenchError(f"{path}: not written, the record holds a non-finite number ({exc})") from None
    atomic_write_bytes((text + "\n").encode("utf-8"), path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` so that ``path`` holds either the old file or the complete new one."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest of the file at ``path`` by the :mod:`hashlib` ``algorithm`` (a checksum, read in 1 MiB blocks)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


def read_json(record_path: Path, advice: str) -> Any:
    """The JSON in ``record_path``; a :class:`SelbenchError` ending in ``advice`` when it cannot be read."""
    try:
        return json.loads(record_path.read_text())
    except (OSError, ValueError) as exc:
        raise SelbenchError(f"{record_path} cannot be read ({exc}); {advice}") from None


def read_json_or_none(path: Path) -> Any:
    """The JSON in ``path``, or ``None`` if it is missing or unreadable (for files that may vanish meanwhile)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def canonical_json(config: Mapping[str, Any]) -> str:
    """Sorted keys, no whitespace, no NaN: one text per configuration."""
    try:
        return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"unit configuration is not plain JSON ({exc}); "
                         "convert paths, tensors and NaN first") from None


def config_key(config: Mapping[str, Any]) -> str:
    """The content key of a configuration (a run-store unit's key): sha256 (hex) of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()
