"""SVHN (Netzer et al., 2011), cropped digits, from the official ``train_32x32.mat`` and ``test_32x32.mat``.

Each file is a MATLAB file read with ``scipy.io.loadmat``: ``X`` holds uint8 images as
[32, 32, 3, N] (height, width, channel, image), ``y`` the labels as [N, 1] in 1–10, where 10
stands for the digit 0; selbench's labels are the digits 0–9.  Each file's MD5 is checked before
it is parsed; ``--download`` fetches the missing ones from the official site.
"""
from __future__ import annotations

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
    md5_of_file,
    missing_files_error,
)
from selbench.data.loading import ImageSet

TRAIN_FILE = "train_32x32.mat"
TEST_FILE = "test_32x32.mat"
ZERO_LABEL = 10  # SVHN writes the digit 0 as class 10
_FIX = "delete it and run with --download, or replace it with the official file"


@dataclass(frozen=True)
class Svhn:
    """The train (73,257 images) and test (26,032 images) splits; ``extra`` is not used."""

    name: str = "svhn"
    description: str = "SVHN 32x32 colour house-number digits, 10 classes (official .mat files)"
    url: str = "http://ufldl.stanford.edu/housenumbers/"
    md5: Mapping[str, str] = field(default_factory=lambda: {
        TRAIN_FILE: "e26dedcc434d2e4c54c9b2d4a06d8373",
        TEST_FILE: "eb5a983be6a315427106f1b164d9cef3",
    })

    def load(self, root: Path | None, *, download: bool = False) -> ImageSet:
        directory = root if root is not None else default_data_dir(self.name)
        missing = [name for name in (TRAIN_FILE, TEST_FILE) if not (directory / name).is_file()]
        if missing and not download:
            raise missing_files_error(self.name, [directory], missing)
        for name in missing:
            download_verified(self.url + name, directory / name, self.md5[name])
        train_images, train_labels = self._read(directory / TRAIN_FILE)
        test_images, test_labels = self._read(directory / TEST_FILE)
        return ImageSet(train_images=train_images, train_labels=train_labels, test_images=test_images,
                        test_labels=test_labels, num_classes=10)

    def _read(self, path: Path) -> tuple[Tensor, Tensor]:
        """Images as uint8 [N, 3, 32, 32] and labels 0–9 from one official file, its MD5 checked first."""
        check_md5(md5_of_file(path), self.md5[path.name], str(path), _FIX)
        from scipy.io import loadmat  # scipy is only needed for this dataset

        try:
            contents = loadmat(path, variable_names=("X", "y"))
            pixels, labels = np.asarray(contents["X"]), np.asarray(contents["y"]).reshape(-1)
        except (KeyError, ValueError, TypeError, OSError, NotImplementedError) as exc:
            raise SelbenchError(f"{path} is not an SVHN file (a MATLAB file with X and y): {exc}; {_FIX}") from None
        if pixels.dtype != np.uint8 or pixels.shape[:3] != (32, 32, 3) or pixels.ndim != 4 \
                or pixels.shape[3] != len(labels):
            raise SelbenchError(f"{path}: expected X of uint8 [32, 32, 3, N] and N labels, got X of {pixels.dtype} "
                                f"{list(pixels.shape)} and {len(labels)} labels; {_FIX}")
        if len(labels) and (labels.min() < 1 or labels.max() > ZERO_LABEL):
            raise SelbenchError(f"{path}: labels must be 1–10, found {labels.min()}–{labels.max()}; {_FIX}")
        images = torch.from_numpy(np.ascontiguousarray(pixels.transpose(3, 2, 0, 1)))
        return images, torch.from_numpy((labels.astype(np.int64) % ZERO_LABEL).copy())
