"""Datasets on the device: look-up, seeded splits, and batched augmentation.

A dataset (registered through ``selbench_register_datasets``) loads once into an
:class:`ImageSet` of uint8 tensors.  :func:`load_data` moves it to the device and cuts the
training set into the supernet's two halves; :class:`SearchData` then serves batches whose
augmentation (pad-and-crop, horizontal flip, cutout) and normalisation are a handful of
tensor ops over the whole batch on the device — no per-image Python, no worker processes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from selbench.core.errors import SelbenchError
from selbench.core.sections import check_section
from selbench.core.tensors import Batch
from selbench.data.augment import cutout, normalize, random_crops
from selbench.data.dataset import ImageSet
from selbench.plugin.lookup import get_dataset

SPLITS = ("train", "valid", "train_full", "test")

# The [data] section of a recipe: every key load_data understands, with its default.
DATA_DEFAULTS: dict[str, Any] = {
    "dataset": "digits",
    "root": "",  # directory holding the dataset's files; "" = the dataset's default places
    "download": False,  # fetch missing official files (and verify their MD5)
    "subset": 0,  # number of training images to use; 0 = all
    "train_portion": 0.5,  # share of the (subset of the) training set that trains θ; the rest trains α
    "batch_size": 64,
    "crop_padding": 4,  # random crop after zero padding by this many pixels; 0 = no crop
    "flip": True,  # random horizontal flip
    "cutout": 0,  # side of the cutout square (DeVries & Taylor); 0 = no cutout
}

# [data] keys added after the first recipes.  A section holds one only when it differs from its
# default, so recipes that leave it out keep their config hash and run-store keys.
DATA_OPTIONAL_DEFAULTS: dict[str, Any] = {
    # how the training set is cut into θ and α images: "shuffled" (a permutation seeded by the
    # run's seed) or "ordered" (dataset order, θ first: DARTS's and DARTS-PT's split)
    "split": "shuffled",
}
SPLIT_KINDS = ("shuffled", "ordered")


# -- the supernet's data ------------------------------------------------------------------------
class SearchData:
    """The splits of one dataset on one device, served as ``(images, labels)`` batches.

    ``batches(split)`` starts a fresh pass over one of

    * ``"train"``: the θ portion of the training set, reshuffled every pass and augmented;
    * ``"valid"``: the α portion, in a fixed order, not augmented (normalised only;
      :meth:`augmented_batches` serves it reshuffled and augmented instead);
    * ``"train_full"``: the whole (subset of the) training set, reshuffled and augmented —
      what a discrete network is retrained on;
    * ``"test"``: the test set, fixed order, not augmented — for final scores only.

    Each split is normalised once, on the device, when loaded (the training images zero-padded
    first, so that a random crop reads straight from them); serving a batch is a gather, plus
    crop, flip and cutout where augmented, never a normalisation.
    Shuffles and augmentation draw from one generator on the device, seeded from the run's
    seed; ``state_dict()``/``load_state_dict()`` save and restore it so a resumed run sees
    the same batches as an uninterrupted one.
    """

    def __init__(self, images: ImageSet, *, theta: Tensor, alpha: Tensor, seed: int, device: torch.device,
                 batch_size: int, crop_padding: int, flip: bool, cutout: int, name: str):
        self.name = name
        self.device = device
        self.batch_size = batch_size
        self.crop_padding = crop_padding
        self.flip = flip
        self.cutout = cutout
        self.num_classes = images.num_classes
        self.in_channels = images.train_images.shape[1]
        self.image_size = tuple(images.train_images.shape[2:])
        mean, std = _mean_std(images)
        self._mean, self._std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (mean, std))
        # normalised once, on the device; zero padding is added before (a padded pixel is a black one, as
        # torchvision pads the PIL image) so that crops read straight from the padded set
        pad = (crop_padding,) * 4
        self._train_padded = normalize(F.pad(images.train_images.to(device), pad), self._mean, self._std)
        height, width = self.image_size
        self._train_images = self._train_padded[:, :, crop_padding:crop_padding + height,
                                                crop_padding:crop_padding + width]
        self._train_labels = images.train_labels.to(device)
        self._test_images = normalize(images.test_images.to(device), self._mean, self._std)
        self._test_labels = images.test_labels.to(device)
        self._indices = {"train": theta.to(device), "valid": alpha.to(device),
                         "train_full": torch.cat([theta, alpha]).to(device)}
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def split_size(self, split: str) -> int:
        self._check_split(split)
        return len(self._test_labels) if split == "test" else len(self._indices[split])

    def num_batches(self, split: str) -> int:
        return -(-self.split_size(split) // self.batch_size)

    def batches(self, split: str) -> Iterator[Batch]:
        """A fresh pass over ``split`` ("train", "valid", "train_full" or "test"); see the class docstring."""
        self._check_split(split)
        if self.split_size(split) == 0:
            raise SelbenchError(f"the {split!r} split of {self.name!r} is empty "
                                "(train_portion = 1 leaves no images for 'valid')")
        if split == "test":
            return self._ordered(self._test_images, self._test_labels, None)
        if split == "valid":
            return self._ordered(self._train_images, self._train_labels, self._indices["valid"])
        return self._augmented(self._indices[split])

    def _ordered(self, images: Tensor, labels: Tensor, indices: Tensor | None) -> Iterator[Batch]:
        count = len(labels) if indices is None else len(indices)
        for start in range(0, count, self.batch_size):
            stop = start + self.batch_size
            chosen = slice(start, stop) if indices is None else indices[start:stop]
            yield images[chosen], labels[chosen]

    def augmented_batches(self, split: str, generator: torch.Generator) -> Iterator[Batch]:
        """A pass over ``"train"``, ``"valid"`` or ``"train_full"`` as training sees it: reshuffled and
        augmented, drawing from ``generator`` (on :attr:`device`) instead of the data's own.

        For ``"valid"`` this is DARTS-PT's projection queue: the α images under the training transform.
        """
        if split not in self._indices:
            raise SelbenchError(f"split {split!r} has no augmented pass; splits with one: {', '.join(self._indices)}")
        return self._augmented(self._indices[split], generator)

    def _augmented(self, indices: Tensor, generator: torch.Generator | None = None) -> Iterator[Batch]:
        generator = self.generator if generator is None else generator
        order = indices[torch.randperm(len(indices), generator=generator, device=self.device)]
        for start in range(0, len(order), self.batch_size):
            chosen = order[start:start + self.batch_size]
            if self.crop_padding or self.flip:
                images = random_crops(self._train_padded, chosen, padding=self.crop_padding, flip=self.flip,
                                      generator=generator)
            else:
                images = self._train_images[chosen]
            if self.cutout:
                images = cutout(images, self.cutout, generator=generator)
            yield images, self._train_labels[chosen]

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise SelbenchError(f"unknown data split {split!r}; splits are {', '.join(SPLITS)}")

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])


def _mean_std(images: ImageSet) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if images.mean is not None and images.std is not None:
        return tuple(images.mean), tuple(images.std)
    pixels = images.train_images.transpose(0, 1).reshape(images.train_images.shape[1], -1).double() / 255.0
    return tuple(pixels.mean(dim=1).tolist()), tuple(pixels.std(dim=1, correction=0).clamp_min(1e-6).tolist())


def check_data_section(section: Mapping[str, Any], where: str = "data section") -> dict[str, Any]:
    """``section`` overlaid on :data:`DATA_DEFAULTS`; unknown keys, wrong types and bad values are one clear error."""
    merged = check_section(section, {**DATA_DEFAULTS, **DATA_OPTIONAL_DEFAULTS}, "data", where)
    problems = [
        (merged["split"] not in SPLIT_KINDS, f"split must be one of {', '.join(SPLIT_KINDS)}"),
        (not 0 < merged["train_portion"] <= 1, "train_portion must be in (0, 1]"),
        (merged["subset"] < 0, "subset must be >= 0 (0 = all images)"),
        (merged["batch_size"] < 1, "batch_size must be >= 1"),
        (merged["crop_padding"] < 0, "crop_padding must be >= 0"),
        (merged["cutout"] < 0, "cutout must be >= 0 (0 = off)"),
    ]
    for bad, message in problems:
        if bad:
            raise SelbenchError(f"{where}: data.{message}")
    return {k: v for k, v in merged.items() if k in DATA_DEFAULTS or v != DATA_OPTIONAL_DEFAULTS[k]}


def split_indices(count: int, *, subset: int, train_portion: float, seed: int,
                  split: str = "shuffled") -> tuple[Tensor, Tensor]:
    """θ and α indices into a training set of ``count`` images.

    ``split="shuffled"``: the images in a permutation seeded by ``seed`` (drawn on the CPU, so
    the split is the same on every device); ``"ordered"``: in dataset order, as DARTS and
    DARTS-PT cut CIFAR-10 (θ on ``indices[:split]``, α on ``indices[split:]``).  The first
    ``subset`` images of that order (all if 0) are kept; the first ``floor(train_portion · kept)``
    of those train θ, the rest train α.
    """
    if split not in SPLIT_KINDS:
        raise SelbenchError(f"data split {split!r} is not one of {', '.join(SPLIT_KINDS)}")
    kept = subset or count
    if split == "ordered":
        order = torch.arange(kept)
    else:
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:kept]
    cut = int(train_portion * kept)
    return order[:cut], order[cut:]


def load_data(data: Mapping[str, Any], *, seed: int, device: str | torch.device = "cpu") -> SearchData:
    """The splits described by a recipe's ``[data]`` section, on ``device``.

    ``data`` may be partial; missing keys take :data:`DATA_DEFAULTS` and
    :data:`DATA_OPTIONAL_DEFAULTS`.  Every shuffle follows ``seed``, and so do the θ/α split
    and the subset unless ``split = "ordered"``.  For the supernet use ``batches("train")``
    (θ) and ``batches("valid")`` (α); to retrain a discrete network use
    ``batches("train_full")`` (every training image kept by ``subset``) and score it on
    ``batches("test")``.  Give the retraining batch size and cutout through ``data`` (see
    ``Recipe.retrain_data()``).
    """
    section = check_data_section(data)
    dataset = get_dataset(section["dataset"])
    root = Path(section["root"]).expanduser() if section["root"] else None
    images = dataset.load(root, download=section["download"])
    images.check(dataset.name)
    count = len(images.train_labels)
    if section["subset"] > count:
        raise SelbenchError(f"data.subset = {section['subset']} but {dataset.name!r} has only {count} training images; "
                            "use a smaller subset or 0 for all")
    theta, alpha = split_indices(count, subset=section["subset"], train_portion=section["train_portion"], seed=seed,
                                 split=section.get("split", DATA_OPTIONAL_DEFAULTS["split"]))
    if len(theta) == 0:
        raise SelbenchError(f"data.train_portion = {section['train_portion']} leaves no training images for θ "
                            f"out of {len(theta) + len(alpha)}; raise train_portion or subset")
    return SearchData(images, theta=theta, alpha=alpha, seed=seed, device=torch.device(device),
                      batch_size=section["batch_size"], crop_padding=section["crop_padding"], flip=section["flip"],
                      cutout=section["cutout"], name=section["dataset"])
