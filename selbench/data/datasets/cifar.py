"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) from the official python archives.

A root directory holds either the archive (``cifar-10-python.tar.gz``, read in place) or
its extracted folder (``cifar-10-batches-py/``).  Each member is a pickled dict with bytes
keys: ``b"data"`` (uint8 [N, 3072], the red, green and blue planes of 32×32 images) and
``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100).  The archive's MD5 (and, for
CIFAR-10, every member's) is checked before anything is unpickled, and unpickling admits
only the numpy types these files contain.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from selbench.core.errors import SelbenchError
from selbench.data.datasets.files import (
    check_md5,
    default_data_dir,
    download_verified,
    md5_of_bytes,
    md5_of_file,
    missing_files_error,
)
from selbench.data.loading import ImageSet

_FIX = "delete it and run with --download, or replace it with the official file"

# the globals a pickled numpy array needs (numpy 1 and 2 module names), and Python 3's bytes encoding
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


@dataclass(frozen=True)
class Cifar:
    """One CIFAR dataset: where its members are, which key holds the labels, the official MD5s."""

    name: str
    description: str
    archive: str
    folder: str
    train_members: tuple[str, ...]
    test_members: tuple[str, ...]
    label_key: bytes
    num_classes: int
    url: str
    archive_md5: str
    member_md5: Mapping[str, str] = field(default_factory=dict)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def members(self) -> tuple[str, ...]:
        return self.train_members + self.test_members

    def load(self, root: Path | None, *, download: bool = False) -> ImageSet:
        directory = root if root is not None else default_data_dir(self.name)
        folder, archive = directory / self.folder, directory / self.archive
        if all((folder / m).is_file() for m in self.members):
            contents = {m: (folder / m).read_bytes() for m in self.members}
            where = {m: str(folder / m) for m in self.members}
        else:
            if archive.is_file():
                check_md5(md5_of_file(archive), self.archive_md5, str(archive), _FIX)
            elif download:
                download_verified(self.url, archive, self.archive_md5)
            else:
                raise missing_files_error(self.name, [directory], [self.archive, f"or the folder {self.folder}/"])
            contents = self._read_archive(archive)
            where = {m: f"{archive}:{self.folder}/{m}" for m in self.members}
        for member, data in contents.items():
            if member in self.member_md5:
                check_md5(md5_of_bytes(data), self.member_md5[member], where[member], _FIX)
        train = [self._unpickle(contents[m], where[m]) for m in self.train_members]
        test = [self._unpickle(contents[m], where[m]) for m in self.test_members]
        return ImageSet(
            train_images=torch.cat([images for images, _ in train]), train_labels=torch.cat([lab for _, lab in train]),
            test_images=torch.cat([images for images, _ in test]), test_labels=torch.cat([lab for _, lab in test]),
            num_classes=self.num_classes, mean=self.mean, std=self.std)

    def _read_archive(self, archive: Path) -> dict[str, bytes]:
        contents = {}
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in self.members:
                    handle = tar.extractfile(f"{self.folder}/{member}")
                    if handle is None:
                        raise KeyError(member)
                    contents[member] = handle.read()
        except KeyError as exc:
            raise SelbenchError(f"{archive} has no member {self.folder}/{exc.args[0]}; {_FIX}") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise SelbenchError(f"{archive} cannot be read ({exc}); {_FIX}") from None
        return contents

    def _unpickle(self, data: bytes, where: str) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
            pixels = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = np.asarray(batch[self.label_key], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
            raise SelbenchError(f"{where} is not a CIFAR batch (a pickled dict with b'data' and "
                                f"{self.label_key!r}): {exc}; {_FIX}") from None
        if pixels.ndim != 2 or pixels.shape[1] != 3 * 32 * 32 or len(labels) != len(pixels):
            raise SelbenchError(f"{where}: expected data of shape [N, 3072] and N labels, got {pixels.shape} and "
                                f"{len(labels)} labels; {_FIX}")
        return torch.from_numpy(pixels.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels.copy())


CIFAR10 = Cifar(
    name="cifar10",
    description="CIFAR-10 32x32 colour, 10 classes (official python archive)",
    archive="cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    train_members=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_members=("test_batch",),
    label_key=b"labels",
    num_classes=10,
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    archive_md5="c58f30108f718f92721af3b95e74349a",
    member_md5={
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
    },
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)

CIFAR100 = Cifar(
    name="cifar100",
    description="CIFAR-100 32x32 colour, 100 fine classes (official python archive)",
    archive="cifar-100-python.tar.gz",
    folder="cifar-100-python",
    train_members=("train",),
    test_members=("test",),
    label_key=b"fine_labels",
    num_classes=100,
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
)
