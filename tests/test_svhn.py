"""SVHN from its official MATLAB files: labels 1–10 with 10 for the digit 0, images [32, 32, 3, N], MD5 checks."""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import scipy.io
import torch

import selbench
from selbench.data.datasets.svhn import TEST_FILE, TRAIN_FILE, Svhn


def write_mat(path, labels):
    """An SVHN-format file: X uint8 [32, 32, 3, N] with distinct pixels per image, y uint8 [N, 1]."""
    rng = np.random.default_rng(len(labels))
    pixels = rng.integers(0, 256, size=(32, 32, 3, len(labels)), dtype=np.uint8)
    scipy.io.savemat(path, {"X": pixels, "y": np.asarray(labels, dtype=np.uint8).reshape(-1, 1)})
    return pixels


def svhn_files(directory):
    """Train and test files in ``directory`` and an Svhn whose MD5s are theirs."""
    train = write_mat(directory / TRAIN_FILE, [1, 10, 3, 10, 9])
    test = write_mat(directory / TEST_FILE, [10, 2, 7])
    md5 = {name: hashlib.md5((directory / name).read_bytes()).hexdigest() for name in (TRAIN_FILE, TEST_FILE)}
    return dataclasses.replace(Svhn(), md5=md5), train, test


def test_svhn_reads_the_official_format_with_ten_meaning_zero(tmp_path):
    dataset, train, test = svhn_files(tmp_path)
    images = dataset.load(tmp_path)
    assert images.train_labels.tolist() == [1, 0, 3, 0, 9] and images.test_labels.tolist() == [0, 2, 7]
    assert images.train_images.dtype == torch.uint8 and tuple(images.train_images.shape) == (5, 3, 32, 32)
    assert torch.equal(images.train_images[2], torch.from_numpy(train[:, :, :, 2]).permute(2, 0, 1))
    assert torch.equal(images.test_images[1], torch.from_numpy(test[:, :, :, 1]).permute(2, 0, 1))
    assert images.num_classes == 10


def test_svhn_is_registered_with_the_official_md5s():
    dataset = selbench.get_dataset("svhn")
    assert dataset.md5 == {TRAIN_FILE: "e26dedcc434d2e4c54c9b2d4a06d8373",
                           TEST_FILE: "eb5a983be6a315427106f1b164d9cef3"}


def test_svhn_wrong_md5_or_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(selbench.SelbenchError, match="--download") as missing:
        Svhn().load(tmp_path)
    assert TRAIN_FILE in str(missing.value) and "\n" not in str(missing.value)
    dataset, _, _ = svhn_files(tmp_path)
    bad = dataclasses.replace(dataset, md5={**dataset.md5, TEST_FILE: "0" * 32})
    with pytest.raises(selbench.SelbenchError, match="0{32}") as wrong:
        bad.load(tmp_path)
    assert TEST_FILE in str(wrong.value) and "\n" not in str(wrong.value)


def test_svhn_download_fetches_and_verifies_the_missing_files(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    dataset, _, _ = svhn_files(served)
    dataset = dataclasses.replace(dataset, url=served.as_uri() + "/")
    images = dataset.load(tmp_path / "root", download=True)
    assert images.test_labels.tolist() == [0, 2, 7] and (tmp_path / "root" / TRAIN_FILE).is_file()
