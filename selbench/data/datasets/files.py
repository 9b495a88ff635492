"""Finding, fetching and verifying the files of a dataset."""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable

from selbench.core.errors import SelbenchError
from selbench.core.files import file_digest

DATA_DIR_ENV = "SELBENCH_DATA"


def default_data_dir(name: str) -> Path:
    """Where a dataset's files live when a recipe gives no root: ``$SELBENCH_DATA/<name>``
    (default ``~/.cache/selbench/datasets/<name>``)."""
    base = os.environ.get(DATA_DIR_ENV) or "~/.cache/selbench/datasets"
    return Path(base).expanduser() / name


def md5_of_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_of_file(path: Path) -> str:
    return file_digest(path, "md5")


def check_md5(actual: str, expected: str, what: str, fix: str) -> None:
    """One clear line when a file's MD5 is not the official one."""
    if actual != expected:
        raise SelbenchError(f"{what} has MD5 {actual}, expected {expected}: the file is corrupt or not the "
                            f"official one; {fix}")


def fetch(url: str, destination: Path) -> None:
    """Copy ``url`` (http(s) or file) to ``destination`` (written whole, via a temporary file)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        os.replace(tmp, destination)
    except (urllib.error.URLError, OSError) as exc:
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise SelbenchError(f"cannot download {url} ({reason}); check the network, or put the file into "
                            f"{destination.parent} by hand") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download_verified(url: str, destination: Path, md5: str) -> Path:
    """Fetch ``url`` into ``destination`` and check its MD5; a mismatching download is deleted."""
    print(f"downloading {url} to {destination}", file=sys.stderr, flush=True)
    fetch(url, destination)
    actual = md5_of_file(destination)
    if actual != md5:
        destination.unlink()
        check_md5(actual, md5, f"the download of {url}", "it was deleted; try --download again later")
    return destination


def missing_files_error(dataset: str, directories: Iterable[Path], expected: Iterable[str]) -> SelbenchError:
    """The one line a user sees when a dataset's files are not where selbench looks."""
    places = " or ".join(str(d) for d in directories)
    return SelbenchError(f"dataset {dataset!r}: files not found in {places}; expected {', '.join(expected)} there "
                         f"(set [data] root or {DATA_DIR_ENV} to the directory that holds them; or run with "
                         "--download to fetch the official files (with MD5 check))")
