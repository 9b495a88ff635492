"""Fashion-MNIST (Xiao et al., 2017) from its official IDX files, gzipped or not.

Found without configuration where Debian's ``dataset-fashion-mnist`` package installs it
(/usr/share/datasets/fashion-mnist); Debian re-compresses the files, so the check is on
the MD5 of the decompressed contents, which are the same everywhere.  ``--download``
fetches the official gz files and checks their own MD5s.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from selbench.core.errors import SelbenchError
from selbench.data.datasets.files import (
    check_md5,
    default_data_dir,
    download_verified,
    md5_of_bytes,
    missing_files_error,
)
from selbench.data.loading import ImageSet

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
OFFICIAL_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

CONTENT_MD5 = {
    TRAIN_IMAGES: "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    TRAIN_LABELS: "9018921c3c673c538a1fc5bad174d6f9",
    TEST_IMAGES: "8181f5470baa50b63fa0f6fddb340f0a",
    TEST_LABELS: "15d484375f8d13e6eb1aabb0c3f46965",
}
OFFICIAL_GZ_MD5 = {
    TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
    TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
    TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
}

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


def parse_idx(data: bytes, magic: int, what: str) -> Tensor:
    """An IDX file of unsigned bytes: big-endian int32 magic, one int32 size per dimension, the values."""
    dims = magic & 0xFF
    header = 4 * (1 + dims)
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise SelbenchError(f"{what} is not an IDX file of unsigned bytes with {dims} dimension(s) "
                            f"(expected magic number {magic}); replace it with the official file")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    if len(data) - header != int(np.prod(shape)):
        raise SelbenchError(f"{what} is truncated: its header promises {shape} bytes of data, it has "
                            f"{len(data) - header}; replace it with the official file")
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy())


@dataclass(frozen=True)
class FashionMnist:
    """Fashion-MNIST: 60,000 training and 10,000 test images, 28×28 grayscale, 10 classes."""

    name: str = "fashion-mnist"
    description: str = "Fashion-MNIST 28x28 grayscale, 10 classes (official IDX files)"
    content_md5: Mapping[str, str] = field(default_factory=lambda: dict(CONTENT_MD5))
    gz_md5: Mapping[str, str] = field(default_factory=lambda: dict(OFFICIAL_GZ_MD5))
    url: str = OFFICIAL_URL

    def directories(self, root: Path | None) -> list[Path]:
        """Where to look, in order: ``root`` if given, else Debian's directory and the download cache."""
        return [root] if root is not None else [DEBIAN_DIR, default_data_dir(self.name)]

    def load(self, root: Path | None, *, download: bool = False) -> ImageSet:
        directories = self.directories(root)
        found = next((files for d in directories if (files := _find_files(d)) is not None), None)
        if found is None:
            if not download:
                raise missing_files_error(self.name, directories, [f"{f}[.gz]" for f in FILES])
            found = {name: download_verified(f"{self.url}{name}.gz", directories[-1] / f"{name}.gz",
                                              self.gz_md5[name]) for name in FILES}
        contents = {name: self._read(name, path) for name, path in found.items()}
        train_images = parse_idx(contents[TRAIN_IMAGES], IMAGES_MAGIC, str(found[TRAIN_IMAGES]))
        test_images = parse_idx(contents[TEST_IMAGES], IMAGES_MAGIC, str(found[TEST_IMAGES]))
        return ImageSet(
            train_images=train_images[:, None], test_images=test_images[:, None],
            train_labels=parse_idx(contents[TRAIN_LABELS], LABELS_MAGIC, str(found[TRAIN_LABELS])).long(),
            test_labels=parse_idx(contents[TEST_LABELS], LABELS_MAGIC, str(found[TEST_LABELS])).long(),
            num_classes=10)

    def _read(self, name: str, path: Path) -> bytes:
        try:
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise SelbenchError(f"{path} cannot be read ({exc}); replace it with the official file") from None
        check_md5(md5_of_bytes(data), self.content_md5[name], f"{path} (decompressed)",
                  "replace it with the official file (or delete it and use --download)")
        return data


def _find_files(directory: Path) -> dict[str, Path] | None:
    """The four IDX files in ``directory`` (each gzipped or raw), or ``None`` if any is missing."""
    found = {}
    for name in FILES:
        candidates = [directory / f"{name}.gz", directory / name]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            return None
        found[name] = path
    return found
