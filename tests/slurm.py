"""A real one-node Slurm cluster on localhost for the tests: started and always stopped with .ci/slurm."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "slurm"
# the daemons live in sbin, which is not on every PATH
SBIN = ("/usr/sbin", "/sbin")
NEEDED = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "munged", "munge", "unmunge")


def _which(program: str) -> str | None:
    return shutil.which(program, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def why_not() -> str | None:
    """Why a Slurm cluster cannot start here, or None when it can be tried."""
    if not SCRIPT.exists():
        return f"{SCRIPT} is missing"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "starting slurmctld, slurmd and munged needs root"
    missing = [program for program in NEEDED if _which(program) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (Debian: apt-get install slurmctld slurmd slurm-client munge)"
    return None


def _skip(reason: str):
    # the reason also goes to stderr, so that it shows up in a run without -rs
    print(f"Slurm cluster skipped: {reason}", file=sys.stderr)
    pytest.skip(f"no Slurm cluster: {reason}")


@contextlib.contextmanager
def one_node_slurm(tmp_dir: str | os.PathLike[str], *, timeout: float = 120) -> Iterator[dict[str, str]]:
    """Start a cluster in ``tmp_dir`` (its conf, state, spool and logs) and yield the environment for subprocesses.

    The environment is a copy of ``os.environ`` with ``SLURM_CONF`` set and this Python's bin folder first on
    ``PATH``: Slurm jobs inherit the submitter's environment (sbatch ``--export=ALL``), so a job started with
    it finds this interpreter as ``python`` and the installed ``selbench`` script.  The cluster is stopped at
    the end, also when the body raises.  Where no cluster can start (not root, Slurm not installed) this calls
    ``pytest.skip`` with the reason; a cluster that should start but does not fails with the daemons' logs.
    """
    reason = why_not()
    if reason is not None:
        _skip(reason)
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    try:
        started = subprocess.run(["bash", str(SCRIPT), "start", str(tmp_dir)], capture_output=True, text=True,
                                 timeout=timeout)
        exports = [line for line in started.stdout.splitlines() if line.startswith("export SLURM_CONF=")]
        if started.returncode != 0 or not exports:
            pytest.fail(f".ci/slurm start failed (exit {started.returncode}):\n{started.stderr}", pytrace=False)
        env = dict(os.environ)
        env["SLURM_CONF"] = exports[-1].split("=", 1)[1]
        path = [str(Path(sys.executable).parent), env.get("PATH", os.defpath)]
        env["PATH"] = os.pathsep.join(path)
        yield env
    finally:
        stopped = subprocess.run(["bash", str(SCRIPT), "stop", str(tmp_dir)], capture_output=True, text=True,
                                 timeout=60)
        if stopped.returncode != 0:
            print(f".ci/slurm stop failed (exit {stopped.returncode}):\n{stopped.stderr}", file=sys.stderr)
