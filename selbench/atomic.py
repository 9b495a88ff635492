"""Crash-safe file writes: the target holds either its old content or the complete new one."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write ``data`` so that ``path`` holds either the old file or the complete new one."""
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON with sorted keys, atomically (:func:`atomic_write_bytes`)."""
    atomic_write_bytes((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"), path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` so that ``path`` holds either the old file or the complete new one."""
    atomic_write(path, lambda handle: torch.save(obj, handle))
