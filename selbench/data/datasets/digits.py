"""scikit-learn's 8×8 handwritten digits: the embedded default dataset, no files, no network."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from selbench.data.loading import ImageSet

TEST_IMAGES = 360  # a fifth of the 1,797 images


@dataclass(frozen=True)
class Digits:
    """1,797 images of 8×8 pixels, 10 classes; values 0–16 scaled to 0–255.

    The train/test split is one fixed permutation (numpy's legacy ``RandomState(0)``,
    stable across versions): the last 360 images of it are the test set.
    """

    name: str = "digits"
    description: str = "scikit-learn 8x8 handwritten digits, 10 classes (embedded, works offline)"

    def load(self, root: Path | None = None, *, download: bool = False) -> ImageSet:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
        order = np.random.RandomState(0).permutation(len(pixels))
        train, test = order[:-TEST_IMAGES], order[-TEST_IMAGES:]
        images, labels = torch.from_numpy(pixels), torch.from_numpy(bunch.target.astype(np.int64))
        return ImageSet(train_images=images[train], train_labels=labels[train], test_images=images[test],
                        test_labels=labels[test], num_classes=10)
