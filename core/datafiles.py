"""Reading MNIST-style files a person points at: IDX files (gzipped or not), Keras-layout .npz archives.

Every file is treated as hostile until checked: a path that is not a regular file or folder (a FIFO, a socket,
a device) is refused before it is opened; a header is checked against a ceiling and the file's content
against its header before anything large is read, and gzip is decompressed only as far as the header says;
arrays are checked for their kind (no NaN, complex, boolean, object or text pixels) and range. Every error
is a DatasetError that names the file (and the array, and the first bad index) and says what was expected.
"""

from __future__ import annotations

import gzip
import os
import stat
import zipfile
import zlib
from pathlib import Path

import numpy as np

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
IMAGE_SIDE = 28
# The most images a file may hold: full MNIST has 70,000 and EMNIST's largest split 280,000. A header that
# claims more is refused before anything is decompressed (a 7.8 MB gzip claiming 10 million images would
# otherwise take 7.8 GB of memory).
MAX_IMAGES = 300_000
READ_CHUNK = 1 << 20
NOT_REGULAR = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device"}
WHAT_TO_GIVE = "give an mnist.npz file or a folder with the four IDX files"


class DatasetError(ValueError):
    """A data source could not give a usable dataset; the message says what was found and what to do."""


def check_path_kind(path: Path, folder_allowed: bool = True) -> None:
    """Refuse, without opening it, a path that is missing or is not a regular file (or folder)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist; {WHAT_TO_GIVE}") from None
    except OSError as error:
        raise DatasetError(f"{path} cannot be examined ({error.strerror or error}); {WHAT_TO_GIVE}") from None
    if stat.S_ISREG(mode) or (folder_allowed and stat.S_ISDIR(mode)):
        return
    kind = NOT_REGULAR.get(stat.S_IFMT(mode), "a folder" if stat.S_ISDIR(mode) else "not a regular file")
    raise DatasetError(f"{path} is {kind}, not a data file; {WHAT_TO_GIVE}")


def _read_up_to(handle, count: int) -> bytes:
    """Read at most `count` bytes, decompressing no further than that."""
    parts, remaining = [], count
    while remaining:
        part = handle.read(min(remaining, READ_CHUNK))
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _read_file(path: Path, read_stream, expected: str):
    """Read a regular file with a stream reader (which checks what it reads); an OSError is one sentence."""
    check_path_kind(path, folder_allowed=False)
    try:
        with open(path, "rb") as handle:
            return read_stream(handle, str(path))
    except OSError as error:
        raise DatasetError(f"{path}: the file cannot be read ({type(error).__name__}: {error}); {expected}") \
            from None


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped or not): images as uint8 (N, 28, 28), labels as uint8 (N,)."""
    return _read_file(Path(path), read_idx_stream, "expected an IDX file, gzipped or not")


def read_idx_stream(raw, origin: str, max_bytes: int | None = None) -> np.ndarray:
    """Read one IDX file from a seekable binary handle (gzipped or not); `origin` names it in errors.

    `max_bytes`, when given, is the most this file may unpack to: a header that claims more is refused
    before anything is decompressed (an upload's share of what the server unpacks for it).
    """
    gzipped = raw.read(2) == b"\x1f\x8b"
    raw.seek(0)
    try:
        handle = gzip.GzipFile(fileobj=raw) if gzipped else raw
        return _read_idx_content(handle, origin, max_bytes)
    except (OSError, EOFError, zlib.error) as error:
        kind = "gzip data cannot be decompressed" if gzipped else "file cannot be read"
        raise DatasetError(f"{origin}: the {kind} ({type(error).__name__}: {error}); expected an IDX file, "
                           "gzipped or not") from None


def _read_idx_content(handle, path, max_bytes: int | None = None) -> np.ndarray:
    header = handle.read(8)
    if len(header) < 8:
        raise DatasetError(f"{path}: only {len(header)} bytes; an IDX file starts with an 8-byte header")
    magic, count = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
        raise DatasetError(f"{path}: magic number {magic}; expected {IMAGES_MAGIC} (images) or {LABELS_MAGIC} (labels)")
    if count > MAX_IMAGES:
        raise DatasetError(f"{path}: its header claims {count:,} items, more than the {MAX_IMAGES:,} this app reads "
                           "(full MNIST has 70,000)")
    shape: tuple = (count,)
    if magic == IMAGES_MAGIC:
        sizes = _read_up_to(handle, 8)
        if len(sizes) < 8:
            raise DatasetError(f"{path}: image header truncated ({8 + len(sizes)} bytes, expected 16)")
        rows, cols = int.from_bytes(sizes[0:4], "big"), int.from_bytes(sizes[4:8], "big")
        if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
            raise DatasetError(f"{path}: images are {rows}x{cols}; expected 28x28")
        shape = (count, rows, cols)
    header = 8 if magic == LABELS_MAGIC else 16
    expected = int(np.prod(shape))
    if max_bytes is not None and header + expected > max_bytes:
        raise DatasetError(f"{path}: its header claims {count:,} items ({header + expected:,} bytes unpacked), more "
                           f"than the {max_bytes:,} bytes this upload may still unpack to")
    body = _read_up_to(handle, expected)
    if len(body) < expected:
        raise DatasetError(f"{path}: {header + len(body)} bytes (uncompressed) for the {count:,} items its header "
                           f"claims; expected {header + expected} (truncated?)")
    if handle.read(1):
        raise DatasetError(f"{path}: more data than the {count:,} items its header claims; expected exactly "
                           f"{header + expected} bytes")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem, folder / stem.replace("-idx", ".idx")):
        if os.path.lexists(candidate):
            return candidate
    raise DatasetError(f"{folder}: no {stem} or {stem}.gz; an IDX folder needs {', '.join(IDX_FILES.values())}")


def read_idx_folder(folder: Path) -> dict[str, np.ndarray]:
    """Read the four IDX files of a folder into x_train, y_train, x_test, y_test arrays."""
    return {key: read_idx(_find_idx(Path(folder), stem)) for key, stem in IDX_FILES.items()}


def _npy_header(archive: zipfile.ZipFile, member: str, path) -> tuple[tuple, np.dtype]:
    """The shape and dtype a member declares, read from its .npy header without loading it."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with archive.open(member) as handle:
        version = np.lib.format.read_magic(handle)
        if version not in readers:
            raise ValueError(f"unknown .npy format version {version}")
        shape, _, dtype = readers[version](handle)
    return shape, dtype


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read a Keras-layout mnist.npz (x_train, y_train, x_test, y_test), checking each member before loading it."""
    return _read_file(Path(path), read_npz_stream, "expected a readable .npz archive")


def read_npz_stream(handle, origin: str) -> dict[str, np.ndarray]:
    """Read a Keras-layout .npz from a seekable binary handle; `origin` names it in errors."""
    try:
        if handle.read(6) == b"\x93NUMPY":
            raise DatasetError(f"{origin}: a single .npy array, not an .npz archive; expected the arrays "
                               f"{list(IDX_FILES)}")
        handle.seek(0)
        with zipfile.ZipFile(handle) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            missing = [key for key in IDX_FILES if key not in members]
            if missing:
                raise DatasetError(f"{origin}: has the arrays {sorted(members)}; expected {list(IDX_FILES)}")
            for key in IDX_FILES:
                _check_member(archive, members[key], key, origin)
        handle.seek(0)
        with np.load(handle, allow_pickle=False) as loaded:
            return {key: loaded[key] for key in IDX_FILES}
    except zipfile.BadZipFile as error:
        raise DatasetError(f"{origin}: not a readable .npz archive ({error}; truncated, or not an .npz at all)") \
            from None
    except (OSError, EOFError, zlib.error, ValueError) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"{origin}: not a readable .npz archive ({type(error).__name__}: {error})") from None


def _check_member(archive: zipfile.ZipFile, member: str, key: str, path) -> None:
    """Refuse a member whose declared shape is too big, or whose size disagrees with that shape."""
    try:
        shape, dtype = _npy_header(archive, member, path)
    except ValueError as error:
        raise DatasetError(f"{path}: {key} is not a readable array ({error})") from None
    if dtype.hasobject:
        raise DatasetError(f"{path}: {key} holds Python objects; expected numbers")
    count = shape[0] if shape else 0
    if count > MAX_IMAGES:
        raise DatasetError(f"{path}: {key} declares {count:,} items, more than the {MAX_IMAGES:,} this app reads")
    # Only the shapes a dataset can have, in plain numbers of at most 8 bytes: what passes cannot be larger
    # than 300,000 images of 28 x 28 float64 values.
    allowed = ((count, IMAGE_SIDE, IMAGE_SIDE), (count, IMAGE_SIDE * IMAGE_SIDE)) if key.startswith("x") else ((count,),)
    if tuple(shape) not in allowed:
        expected = "(N, 28, 28) or (N, 784)" if key.startswith("x") else "(N,)"
        raise DatasetError(f"{path}: {key} declares shape {tuple(shape)}; expected {expected}")
    if dtype.kind not in "uifb" or dtype.itemsize > 8:
        expected = "pixel values 0-255 (or 0-1 as floats)" if key.startswith("x") else "whole numbers 0-9"
        raise DatasetError(f"{path}: {key} holds {dtype} values; expected {expected}")
    declared = int(np.prod(shape)) * dtype.itemsize
    stored = archive.getinfo(member).file_size
    # The .npy header takes a few hundred bytes; the rest must be exactly the declared array.
    if not declared <= stored <= declared + 4096:
        raise DatasetError(f"{path}: {key} declares shape {shape} of {dtype} ({declared:,} bytes) but holds "
                           f"{stored:,} bytes; the archive is damaged")


def _first_index(mask: np.ndarray) -> str:
    return ", ".join(str(int(i)) for i in np.argwhere(mask)[0])


def check_images(images: np.ndarray, origin: str, key: str) -> float:
    """Refuse pixels that are not finite real numbers in range; returns the scale to divide by (1 or 255)."""
    kind = images.dtype.kind
    if kind not in "uif":
        words = {"b": "true/false values", "c": "complex numbers", "O": "Python objects", "U": "text", "S": "bytes"}
        raise DatasetError(f"{origin}: {key} holds {words.get(kind, images.dtype)}; expected pixel values 0-255 "
                           "(or 0-1 as floats)")
    if kind == "f":
        bad = ~np.isfinite(images)
        if bad.any():
            raise DatasetError(f"{origin}: {key} holds NaN or infinite pixels (the first at index "
                               f"{_first_index(bad)}); expected pixel values 0-255 (or 0-1 as floats)")
    high = 255 if kind != "f" or images.max() > 1.0 else 1
    bad = (images < 0) | (images > high)
    if bad.any():
        value = images[tuple(np.argwhere(bad)[0])]
        raise DatasetError(f"{origin}: {key} has a pixel of {value} (at index {_first_index(bad)}); expected "
                           "values 0-255 (or 0-1 as floats)")
    return float(high)


def check_labels(labels: np.ndarray, origin: str, key: str) -> None:
    """Refuse labels that are not whole numbers 0-9."""
    if labels.dtype.kind not in "ui":
        raise DatasetError(f"{origin}: {key} holds {labels.dtype} values; expected whole numbers 0-9")
    bad = (labels < 0) | (labels > 9)
    if bad.any():
        raise DatasetError(f"{origin}: {key} has labels {labels.min()}..{labels.max()} (the first bad one at "
                           f"index {_first_index(bad)}); expected 0..9")
