"""Checks of command-line inputs made before any work: the torch device and where outputs go."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from selbench.core.errors import SelbenchError


def check_device(text: str | torch.device) -> torch.device:
    """``text`` as a :class:`torch.device` that this machine can compute on; a :class:`SelbenchError` otherwise."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise SelbenchError(f"--device {text}: not a torch device ({_reason(exc)}); use e.g. cpu or cuda") from None
    if device.type == "meta":
        raise SelbenchError(f"--device {text}: the meta device holds no data and cannot train or select; "
                            "use e.g. cpu or cuda")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SelbenchError(f"--device {text}: CUDA is not available on this machine "
                                "(no GPU, no driver, or a CPU-only torch); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SelbenchError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    try:
        torch.empty(1, device=device)
    except Exception as exc:  # any backend that is compiled in but unusable here (mps, xpu, ...)
        raise SelbenchError(f"--device {text}: not usable on this machine ({_reason(exc)}); use --device cpu") from None
    return device


def _reason(exc: BaseException) -> str:
    """The first line of ``exc``'s message (at most 160 characters), or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def check_writable(path: str | os.PathLike, *, directory: bool, option: str = "--out") -> Path:
    """Make sure ``path`` (a directory, or a file when ``directory`` is false) can be written, before any work.

    Missing directories are created (the command would create them anyway); a probe file is
    written and removed.  A :class:`SelbenchError` names ``option`` and the reason otherwise.
    """
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise SelbenchError(f"{option} {path}: is a file, not a directory")
    if not directory and path.is_dir():
        raise SelbenchError(f"{option} {path}: is a directory; name a file")
    folder = path if directory else path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SelbenchError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None
    return path
