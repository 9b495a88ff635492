"""Datasets (official file formats, MD5 checks, downloads) and the device-side splits and augmentation."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import selbench
from selbench.data import loading
from selbench.data.augment import crop_and_flip, cutout, normalize
from selbench.data.datasets import fashion_mnist
from selbench.data.datasets.cifar import CIFAR10, CIFAR100
from selbench.data.loading import SPLITS, load_data, split_indices

FASHION_FILES = fashion_mnist.FILES

pytestmark = pytest.mark.usefixtures("one_thread")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- tiny files in the official formats ------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, written from the format description (magic 0x0000080N, sizes, data)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def tiny_fashion(n_train: int = 12, n_test: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        fashion_mnist.TRAIN_IMAGES: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        fashion_mnist.TRAIN_LABELS: rng.integers(0, 10, n_train, dtype=np.uint8),
        fashion_mnist.TEST_IMAGES: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        fashion_mnist.TEST_LABELS: rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_fashion(directory: Path, arrays: dict[str, np.ndarray], *, gz: bool = True) -> dict[str, bytes]:
    """Write the four files; return the (uncompressed) contents by name."""
    directory.mkdir(parents=True, exist_ok=True)
    contents = {name: idx_bytes(array) for name, array in arrays.items()}
    for name, data in contents.items():
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return contents


def fashion_with_md5s(contents: dict[str, bytes], **changes) -> fashion_mnist.FashionMnist:
    """The registered Fashion-MNIST dataset with its MD5 table pointed at the tiny files."""
    base = selbench.get_dataset("fashion-mnist")
    return dataclasses.replace(base, content_md5={name: md5(data) for name, data in contents.items()}, **changes)


def cifar_batch(images: np.ndarray, labels: list[int], label_key: bytes) -> bytes:
    """A batch as the original archive pickles it: a dict with bytes keys, data as uint8 [N, 3072]."""
    batch = {b"batch_label": b"tiny batch", label_key: labels, b"data": images.reshape(len(images), -1),
             b"filenames": [f"img_{i}.png".encode() for i in range(len(images))]}
    return pickle.dumps(batch, protocol=2)


def write_cifar_archive(path: Path, cifar, per_member: int = 3, seed: int = 0) -> tuple[dict[str, bytes], dict]:
    """A tar.gz with the dataset's real member names; returns member bytes and the arrays put in."""
    rng = np.random.default_rng(seed)
    members, arrays = {}, {}
    for member in cifar.members:
        images = rng.integers(0, 256, (per_member, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, cifar.num_classes, per_member).tolist()
        members[member] = cifar_batch(images, labels, cifar.label_key)
        arrays[member] = (images, labels)
    meta_name = "batches.meta" if cifar.name == "cifar10" else "meta"
    members_with_meta = {**members, meta_name: pickle.dumps({b"label_names": [b"x"] * cifar.num_classes}, protocol=2)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for member, data in members_with_meta.items():
            info = tarfile.TarInfo(f"{cifar.folder}/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return members, arrays


def cifar_with_md5s(cifar, archive: Path, members: dict[str, bytes], **changes):
    return dataclasses.replace(cifar, archive_md5=md5(archive.read_bytes()),
                               member_md5={m: md5(d) for m, d in members.items()} if cifar.member_md5 else {},
                               **changes)


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# -- registry ----------------------------------------------------------------------------------------
def test_builtin_datasets_are_registered_by_name():
    assert {"digits", "fashion-mnist", "cifar10", "cifar100"} <= set(selbench.list_datasets())
    for name in ("digits", "fashion-mnist", "cifar10", "cifar100"):
        assert selbench.get_dataset(name).name == name


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(selbench.SelbenchError, match="unknown dataset 'mnist-3d'"):
        load_data({"dataset": "mnist-3d"}, seed=0)


# -- digits ------------------------------------------------------------------------------------------
def test_digits_are_scaled_to_uint8_and_split_deterministically():
    from sklearn.datasets import load_digits

    images = selbench.get_dataset("digits").load(None)
    again = selbench.get_dataset("digits").load(None)
    reference = load_digits()
    assert images.train_images.shape == (1437, 1, 8, 8) and images.test_images.shape == (360, 1, 8, 8)
    assert images.train_images.dtype == torch.uint8 and images.num_classes == 10
    assert torch.equal(images.train_images, again.train_images) and torch.equal(images.test_labels, again.test_labels)
    # every one of the 1,797 images appears exactly once, with its label and 0..16 -> 0..255 scaling
    expected = sorted((tuple(np.rint(img.ravel() * 255 / 16).astype(int)), int(lab))
                      for img, lab in zip(reference.images, reference.target))
    got = sorted((tuple(img.ravel().tolist()), int(lab)) for img, lab in
                 zip(torch.cat([images.train_images, images.test_images]),
                     torch.cat([images.train_labels, images.test_labels])))
    assert got == expected


# -- Fashion-MNIST -----------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_idx_files(tmp_path, gz):
    arrays = tiny_fashion()
    contents = write_fashion(tmp_path, arrays, gz=gz)
    images = fashion_with_md5s(contents).load(tmp_path)
    assert images.train_images.shape == (12, 1, 28, 28) and images.test_images.shape == (5, 1, 28, 28)
    assert np.array_equal(images.train_images[:, 0].numpy(), arrays[fashion_mnist.TRAIN_IMAGES])
    assert np.array_equal(images.test_labels.numpy(), arrays[fashion_mnist.TEST_LABELS])
    assert images.train_labels.dtype == torch.int64


def test_fashion_mnist_wrong_md5_is_a_clear_error(tmp_path):
    write_fashion(tmp_path, tiny_fashion())
    with pytest.raises(selbench.SelbenchError) as exc:
        selbench.get_dataset("fashion-mnist").load(tmp_path)  # official MD5s, tiny files
    message = one_line(exc)
    assert "has MD5" in message and "expected" in message and str(tmp_path) in message


def test_fashion_mnist_truncated_file_is_a_clear_error(tmp_path):
    contents = write_fashion(tmp_path, tiny_fashion())
    truncated = contents[fashion_mnist.TRAIN_IMAGES][:-10]
    (tmp_path / f"{fashion_mnist.TRAIN_IMAGES}.gz").write_bytes(gzip.compress(truncated))
    dataset = fashion_with_md5s({**contents, fashion_mnist.TRAIN_IMAGES: truncated})
    with pytest.raises(selbench.SelbenchError, match="truncated"):
        dataset.load(tmp_path)


def test_fashion_mnist_missing_files_name_directory_files_and_download(tmp_path):
    with pytest.raises(selbench.SelbenchError) as exc:
        selbench.get_dataset("fashion-mnist").load(tmp_path)
    message = one_line(exc)
    assert str(tmp_path) in message and "train-images-idx3-ubyte" in message and "--download" in message


def test_fashion_mnist_download_checks_official_md5(tmp_path):
    source = tmp_path / "server"
    contents = write_fashion(source, tiny_fashion())
    gz_md5 = {name: md5((source / f"{name}.gz").read_bytes()) for name in FASHION_FILES}
    target = tmp_path / "data"
    dataset = fashion_with_md5s(contents, gz_md5=gz_md5, url=source.as_uri() + "/")
    images = dataset.load(target, download=True)
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{name}.gz" for name in FASHION_FILES)
    assert images.train_images.shape[0] == 12

    corrupt = tmp_path / "other"
    bad = dataclasses.replace(dataset, gz_md5={**gz_md5, fashion_mnist.TRAIN_IMAGES: "0" * 32})
    with pytest.raises(selbench.SelbenchError) as exc:
        bad.load(corrupt, download=True)
    assert "MD5" in one_line(exc) and not (corrupt / f"{fashion_mnist.TRAIN_IMAGES}.gz").exists()


def test_real_fashion_mnist_files():
    if fashion_mnist._find_files(fashion_mnist.DEBIAN_DIR) is None:
        pytest.skip(f"Fashion-MNIST is not installed in {fashion_mnist.DEBIAN_DIR} "
                    "(Debian package dataset-fashion-mnist)")
    images = selbench.get_dataset("fashion-mnist").load(None)  # found automatically, MD5s checked
    assert images.train_images.shape == (60000, 1, 28, 28) and images.test_images.shape == (10000, 1, 28, 28)
    assert images.train_labels.bincount().tolist() == [6000] * 10
    assert images.test_labels.bincount().tolist() == [1000] * 10


# -- CIFAR -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cifar", [CIFAR10, CIFAR100], ids=["cifar10", "cifar100"])
def test_cifar_reads_the_official_archive_format(tmp_path, cifar):
    archive = tmp_path / cifar.archive
    members, arrays = write_cifar_archive(archive, cifar)
    images = cifar_with_md5s(cifar, archive, members).load(tmp_path)
    train = [arrays[m] for m in cifar.train_members]
    assert images.train_images.shape == (3 * len(cifar.train_members), 3, 32, 32)
    assert images.num_classes == cifar.num_classes
    # pixel (c, y, x) of image n is byte c·1024 + y·32 + x of row n of b"data"
    row = train[0][0][1].reshape(-1)
    assert images.train_images[1, 2, 5, 7] == row[2 * 1024 + 5 * 32 + 7]
    assert np.array_equal(images.train_images.numpy(), np.concatenate([a for a, _ in train]))
    assert images.train_labels.tolist() == [label for _, labels in train for label in labels]
    assert images.test_labels.tolist() == arrays[cifar.test_members[0]][1]


def test_cifar_reads_the_extracted_folder(tmp_path):
    archive = tmp_path / "archive" / CIFAR10.archive
    members, arrays = write_cifar_archive(archive, CIFAR10)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "root", filter="data")
    images = cifar_with_md5s(CIFAR10, archive, members).load(tmp_path / "root")
    assert np.array_equal(images.test_images.numpy(), arrays["test_batch"][0])


def test_cifar_wrong_archive_md5_is_a_clear_error(tmp_path):
    members, _ = write_cifar_archive(tmp_path / CIFAR10.archive, CIFAR10)
    with pytest.raises(selbench.SelbenchError) as exc:
        CIFAR10.load(tmp_path)  # the official MD5 cannot match the tiny archive
    message = one_line(exc)
    assert CIFAR10.archive_md5 in message and "--download" in message


def test_cifar_wrong_member_md5_is_a_clear_error(tmp_path):
    archive = tmp_path / CIFAR10.archive
    members, _ = write_cifar_archive(archive, CIFAR10)
    dataset = cifar_with_md5s(CIFAR10, archive, members)
    dataset = dataclasses.replace(dataset, member_md5={**dataset.member_md5, "data_batch_3": "f" * 32})
    with pytest.raises(selbench.SelbenchError, match="data_batch_3 has MD5"):
        dataset.load(tmp_path)


def test_cifar_missing_files_name_directory_archive_and_download(tmp_path):
    with pytest.raises(selbench.SelbenchError) as exc:
        CIFAR10.load(tmp_path)
    message = one_line(exc)
    assert str(tmp_path) in message and "cifar-10-python.tar.gz" in message and "--download" in message


def test_cifar_download_verifies_md5_and_deletes_a_bad_file(tmp_path):
    served = tmp_path / "server" / CIFAR10.archive
    members, _ = write_cifar_archive(served, CIFAR10)
    good = cifar_with_md5s(CIFAR10, served, members, url=served.as_uri())
    images = good.load(tmp_path / "data", download=True)
    assert (tmp_path / "data" / CIFAR10.archive).read_bytes() == served.read_bytes()
    assert images.test_images.shape == (3, 3, 32, 32)

    bad = dataclasses.replace(good, archive_md5="0" * 32)
    with pytest.raises(selbench.SelbenchError) as exc:
        bad.load(tmp_path / "elsewhere", download=True)
    assert "MD5" in one_line(exc) and not (tmp_path / "elsewhere" / CIFAR10.archive).exists()


def test_cifar_unpickling_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / CIFAR100.folder
    folder.mkdir()
    (folder / "train").write_bytes(pickle.dumps({b"data": Evil()}))
    (folder / "test").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(selbench.SelbenchError, match="refusing to load builtins.print"):
        CIFAR100.load(tmp_path)


# -- torchvision (optional) --------------------------------------------------------------------------
def test_selbench_never_imports_torchvision(tmp_path):
    poisoned = tmp_path / "torchvision"
    poisoned.mkdir()
    (poisoned / "__init__.py").write_text("raise RuntimeError('torchvision was imported')\n")
    code = ("import selbench; selbench.list_datasets(); "
            "d = selbench.load_data({'dataset': 'digits'}, seed=0); next(iter(d.batches('train')))")
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(tmp_path)},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_torchvision_dataset_by_class_name(monkeypatch, tmp_path):
    class FakeSet:
        classes = ["a", "b", "c"]

        def __init__(self, root, train, download):
            n = 6 if train else 2
            self.data = np.arange(n * 4 * 4 * 3, dtype=np.uint8).reshape(n, 4, 4, 3)  # HWC, like CIFAR10
            self.targets = [i % 3 for i in range(n)]

    datasets = types.ModuleType("torchvision.datasets")
    datasets.FakeSet = FakeSet
    package = types.ModuleType("torchvision")
    package.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    images = selbench.get_dataset("torchvision:FakeSet").load(tmp_path)
    expected = torch.from_numpy(FakeSet(None, True, False).data).permute(0, 3, 1, 2)
    assert torch.equal(images.train_images, expected) and images.num_classes == 3
    assert images.test_labels.tolist() == [0, 1]


def test_torchvision_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(selbench.SelbenchError, match="needs torchvision"):
        load_data({"dataset": "torchvision:MNIST"}, seed=0)


# -- splits ------------------------------------------------------------------------------------------
def test_split_indices_are_disjoint_seeded_and_sized():
    theta, alpha = split_indices(100, subset=40, train_portion=0.5, seed=3)
    assert len(theta) == 20 and len(alpha) == 20
    assert len(set(theta.tolist()) | set(alpha.tolist())) == 40
    same = split_indices(100, subset=40, train_portion=0.5, seed=3)
    other = split_indices(100, subset=40, train_portion=0.5, seed=4)
    assert torch.equal(theta, same[0]) and torch.equal(alpha, same[1])
    assert not torch.equal(theta, other[0])
    theta, alpha = split_indices(10, subset=0, train_portion=0.75, seed=0)
    assert len(theta) == 7 and len(alpha) == 3


def test_ordered_split_is_dataset_order_theta_first_as_darts():
    theta, alpha = split_indices(50000, subset=0, train_portion=0.5, seed=3, split="ordered")
    assert torch.equal(theta, torch.arange(0, 25000)) and torch.equal(alpha, torch.arange(25000, 50000))
    theta, alpha = split_indices(100, subset=40, train_portion=0.75, seed=9, split="ordered")
    assert theta.tolist() == list(range(30)) and alpha.tolist() == list(range(30, 40))
    with pytest.raises(selbench.SelbenchError, match="split 'sorted'"):
        split_indices(10, subset=0, train_portion=0.5, seed=0, split="sorted")


def test_split_key_is_stored_only_when_ordered_so_old_hashes_stay():
    demo = selbench.load_recipe("demo")
    assert "split" not in demo.data
    assert demo.config_hash("supernet", "data", "search") == (
        "0bdda9a48bcde60dd52b20f87eb767537faa01db5c14997e01ea9b50a3e22ae6")
    assert selbench.load_recipe("demo", ["data.split=shuffled"]).config_hash() == demo.config_hash()
    assert selbench.load_recipe("demo", ["data.split=ordered"]).data["split"] == "ordered"
    for name in ("darts-cifar10", "darts-cifar10-2nd", "darts-pt-cifar10", "nb201-cifar10"):
        assert selbench.load_recipe(name).data["split"] == "ordered"
    with pytest.raises(selbench.SelbenchError, match="data.split must be one of shuffled, ordered"):
        selbench.load_recipe("demo", ["data.split=random"])


def test_ordered_split_serves_the_first_images_to_theta():
    data = load_data(plain(split="ordered"), seed=5)
    train_images = selbench.get_dataset("digits").load(None).train_images
    assert raw_rows(data, "train") == sorted(map(tuple, train_images[:50].flatten(1).tolist()))
    assert raw_rows(data, "valid") == sorted(map(tuple, train_images[50:100].flatten(1).tolist()))


def plain(**changes):
    """Digits without random augmentation, so that batches can be compared with the raw images."""
    return {"dataset": "digits", "subset": 100, "batch_size": 16, "crop_padding": 0, "flip": False, **changes}


def raw_rows(data, split):
    """Every image of a pass, un-normalised back to uint8, as sorted rows (order-free comparison)."""
    images = torch.cat([x for x, _ in data.batches(split)])
    pixels = torch.round((images * data._std + data._mean) * 255).to(torch.uint8)
    return sorted(map(tuple, pixels.flatten(1).tolist()))


def test_splits_cover_their_images_once_per_pass():
    data = load_data(plain(), seed=0)
    train_images = selbench.get_dataset("digits").load(None).train_images
    theta, alpha = split_indices(len(train_images), subset=100, train_portion=0.5, seed=0)

    def as_rows(idx):
        return sorted(map(tuple, train_images[idx].flatten(1).tolist()))

    assert raw_rows(data, "train") == as_rows(theta)
    assert raw_rows(data, "valid") == as_rows(alpha)
    assert raw_rows(data, "train_full") == as_rows(torch.cat([theta, alpha]))
    assert len(raw_rows(data, "test")) == 360
    assert data.num_batches("train") == 4 and data.split_size("train_full") == 100
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, (8, 8))
    assert set(SPLITS) == {"train", "valid", "train_full", "test"}


def test_train_reshuffles_each_pass_and_valid_keeps_its_order():
    data = load_data(plain(), seed=0)

    def labels(split):
        return torch.cat([y for _, y in data.batches(split)])

    assert not torch.equal(labels("train"), labels("train"))
    assert torch.equal(labels("valid"), labels("valid"))
    assert torch.equal(labels("test"), labels("test"))


def test_state_dict_replays_the_same_batches():
    data = load_data(plain(crop_padding=1, flip=True, cutout=3), seed=0)
    next(iter(data.batches("train")))
    state = {k: v.clone() for k, v in data.state_dict().items()}
    first = [x for x, _ in data.batches("train")]
    data.load_state_dict(state)
    second = [x for x, _ in data.batches("train")]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_normalisation_centres_the_training_set():
    data = load_data(plain(subset=0, train_portion=1.0), seed=0)
    images = torch.cat([x for x, _ in data.batches("train_full")])
    assert abs(images.mean().item()) < 1e-4 and abs(images.std(correction=0).item() - 1) < 1e-4


def test_empty_valid_split_and_bad_sections_are_clear_errors():
    data = load_data(plain(train_portion=1.0), seed=0)
    with pytest.raises(selbench.SelbenchError, match="'valid' split .* is empty"):
        next(iter(data.batches("valid")))
    with pytest.raises(selbench.SelbenchError, match="unknown data split 'validation'"):
        data.batches("validation")
    with pytest.raises(selbench.SelbenchError, match="unknown key data.shuffle"):
        load_data({"shuffle": True}, seed=0)
    with pytest.raises(selbench.SelbenchError, match="subset = 5000 but 'digits' has only 1437"):
        load_data({"subset": 5000}, seed=0)
    with pytest.raises(selbench.SelbenchError, match="train_portion must be in"):
        load_data({"train_portion": 0.0}, seed=0)
    with pytest.raises(selbench.SelbenchError, match="data.batch_size must be int"):
        load_data({"batch_size": 1.5}, seed=0)


# -- augmentation ------------------------------------------------------------------------------------
def test_crop_and_flip_takes_one_padded_window_per_image():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 2, 5, 6), dtype=torch.uint8, generator=generator)
    out = crop_and_flip(images, padding=2, flip=True, generator=generator)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    choices = set()
    for original, result in zip(padded, out):
        matches = [(dy, dx, flipped) for dy in range(5) for dx in range(5) for flipped in (False, True)
                   if torch.equal(result, (lambda w: w.flip(-1) if flipped else w)(original[:, dy:dy + 5, dx:dx + 6]))]
        assert matches, "an output is not a (flipped) window of its padded input"
        choices.add(matches[0])
    assert len(choices) > 20  # offsets and flips differ from image to image
    assert 0.2 < np.mean([flipped for _, _, flipped in choices]) < 0.8
    unchanged = crop_and_flip(images, padding=0, flip=False, generator=generator)
    assert torch.equal(unchanged, images)


def test_each_split_is_normalised_once_and_augmented_batches_are_crops_of_the_normalised_images(monkeypatch):
    calls = []
    monkeypatch.setattr(loading, "normalize", lambda *args: calls.append(1) or normalize(*args))
    data = load_data({"dataset": "digits", "subset": 96, "batch_size": 32, "crop_padding": 2, "flip": True}, seed=0)
    assert len(calls) == 2  # the training images (padded) and the test images, when loaded
    raw = selbench.get_dataset("digits").load(None)
    for split in ("train", "valid", "train_full"):
        generator = torch.Generator().manual_seed(4)
        replay = torch.Generator().manual_seed(4)
        order = data._indices[split][torch.randperm(data.split_size(split), generator=replay)]
        for start, (images, labels) in zip(range(0, len(order), 32), data.augmented_batches(split, generator)):
            chosen = order[start:start + 32]
            cropped = crop_and_flip(raw.train_images[chosen], padding=2, flip=True, generator=replay)
            torch.testing.assert_close(images, normalize(cropped, data._mean, data._std), rtol=0, atol=0)
            assert torch.equal(labels, raw.train_labels[chosen])
    list(data.batches("valid")), list(data.batches("test"))
    assert len(calls) == 2


def test_cutout_zeroes_one_clipped_square_per_image():
    generator = torch.Generator().manual_seed(1)
    images = torch.ones(200, 3, 9, 9)
    out = cutout(images, 4, generator=generator)
    full_squares = 0
    for result in out:
        zero = result[0] == 0
        assert torch.equal(zero, (result == 0).all(0))  # the same square in every channel
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert len(rows) and len(cols)  # the centre always lies inside the image
        height, width = len(rows), len(cols)
        assert zero.sum() == height * width and height <= 4 and width <= 4  # one rectangle
        assert rows[-1] - rows[0] + 1 == height and cols[-1] - cols[0] + 1 == width
        full_squares += height == width == 4
    assert full_squares > 0
