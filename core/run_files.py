"""How each kind of run file is written and read safely: JSON replaced atomically, CSV appended and followed
while it grows, and the first layer's images as an .npy file checked before any of it is loaded.

These are the file codecs of the run folder (core/run_folder.py uses them); a file that is not what they
write raises RunFormatError, or reads as nothing for a picture that is only a view. Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import stat
from pathlib import Path

import numpy as np

from core.records import RunFormatError

MAX_FIRST_LAYER_UNITS = 1024
MAX_FIRST_LAYER_SIDE = 28


def replace_atomically(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path` and rename it over `path`, so readers never see half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as error:
        if error.filename is None:  # name the file, so a failed run says what it was writing
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        raise
    finally:
        temporary.unlink(missing_ok=True)


def write_json_atomic(path: Path, values: dict) -> None:
    """Replace a JSON file atomically (see replace_atomically)."""
    replace_atomically(path, (json.dumps(values, indent=2) + "\n").encode())


def is_regular_file(path: Path) -> bool:
    """True for a regular file itself: not a link (even to a file), a folder, a FIFO or a device."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_regular_file(path: Path) -> bytes:
    """The bytes of a run's own file, never through a symbolic link (a model.keras linked to /etc/passwd is not
    that file's download): RunFormatError names the file when it is missing, a link or not a regular file."""
    if not is_regular_file(path):
        if not os.path.lexists(path):
            raise RunFormatError(f"{path.name} is missing")
        raise RunFormatError(f"{path.name} is a link, not a file this store wrote" if os.path.islink(path)
                             else f"{path.name} is not a file")
    try:
        # O_NOFOLLOW: a link swapped in after the check above is refused by the kernel, not followed;
        # O_NONBLOCK: a FIFO swapped in does not hang the page (fstat then refuses it).
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise RunFormatError(f"{path.name} cannot be read ({error.strerror or error})") from None
    with os.fdopen(handle, "rb") as opened:
        if not stat.S_ISREG(os.fstat(opened.fileno()).st_mode):
            raise RunFormatError(f"{path.name} is not a file")
        return opened.read()


def read_json(path: Path) -> dict:
    """The object in a JSON file; RunFormatError says, naming the file, when it is missing, a link or not an
    object."""
    text = read_regular_file(path)
    try:
        values = json.loads(text.decode())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise RunFormatError(f"{path.name} is not readable JSON ({type(error).__name__}: {str(error)[:200]})") from None
    if not isinstance(values, dict):
        raise RunFormatError(f"{path.name} holds {type(values).__name__}, expected an object")
    return values


def check_csv_header(path: Path, columns: tuple) -> None:
    """A CSV the trainer writes starts with its header; anything else (random bytes, a folder) is damage."""
    if not path.exists():
        return
    if not path.is_file():
        raise RunFormatError(f"{path.name} is not a file")
    header = ",".join(columns).encode()
    try:
        with open(path, "rb") as handle:
            start = handle.read(len(header) + 2)
    except OSError as error:
        raise RunFormatError(f"{path.name} cannot be read ({error.strerror or error})") from None
    first_line = start.split(b"\n")[0].rstrip(b"\r")
    complete = b"\n" in start
    if (complete and first_line != header) or (not complete and not header.startswith(first_line)):
        raise RunFormatError(f"{path.name} does not start with the header {','.join(columns)}")


def append_csv(path: Path, columns: tuple, rows: list[tuple]) -> None:
    """Append rows to a CSV file, writing its header first when the file is new."""
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(columns)
        writer.writerows(rows)


class CsvFollower:
    """Reads one of a run's CSV files incrementally: each call parses only the lines added since the last.

    A live page polls twice a second; re-reading a 200,000-step file each time would take about a second.
    Only complete lines are consumed, so a row being written right now is picked up on the next call. Rows
    that do not parse (the header, damage) are skipped.
    """

    def __init__(self, path: Path, columns: tuple):
        self.path, self.columns_names = Path(path), columns
        self.offset = 0
        self.columns: dict[str, list] = {name: [] for name in columns}

    def read(self) -> dict[str, list]:
        """All rows so far, as columns (the first one, step, as int)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:  # not there yet, or not a file: nothing to show
            return {name: list(values) for name, values in self.columns.items()}
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        width = len(self.columns_names)
        for line in complete.decode("utf-8", "replace").splitlines():
            parts = line.split(",")
            try:
                values = [int(parts[0]), *(float(part) for part in parts[1:width])]
            except (ValueError, IndexError):
                continue
            if len(values) == width:
                for name, value in zip(self.columns_names, values):
                    self.columns[name].append(value)
        return {name: list(values) for name, values in self.columns.items()}


def write_images_atomic(path: Path, images: np.ndarray) -> None:
    """Replace an .npy file atomically (temp file, then rename) with float32 (units, h, w) images."""
    images = np.asarray(images, dtype=np.float32)
    if not _first_layer_kind(images.shape, images.dtype):  # what read_images would refuse
        raise ValueError(f"first-layer images are (units, height, width), at most {MAX_FIRST_LAYER_UNITS} "
                         f"units of at most {MAX_FIRST_LAYER_SIDE} x {MAX_FIRST_LAYER_SIDE}; "
                         f"got shape {images.shape}")
    # Serialised in memory first: numpy writing straight to a file on a full disk raises an OSError
    # without errno ("100352 requested and 45024 written"); Python's own write says ENOSPC.
    buffer = io.BytesIO()
    np.save(buffer, images, allow_pickle=False)
    replace_atomically(path, buffer.getvalue())


def read_images(path: Path) -> np.ndarray | None:
    """Images (units, h, w) from an .npy file, or None when absent or not what write_images_atomic writes
    (never raises: a page shows nothing rather than failing)."""
    try:
        with open(path, "rb") as handle:
            # Check the header before reading any data: a hostile file could claim a huge shape.
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                return None
            if not _first_layer_kind(shape, dtype):
                return None
            handle.seek(0)
            images = np.load(handle, allow_pickle=False)
    except Exception:  # absent, a folder, truncated, garbage: all mean "nothing to show"
        return None
    if not isinstance(images, np.ndarray) or not _first_layer_kind(images.shape, images.dtype):
        return None
    return images


def _first_layer_kind(shape: tuple, dtype) -> bool:
    """True for what write_images_atomic writes: floats (units, h, w), at most 1,024 units of at most 28 x 28."""
    return (np.dtype(dtype).kind == "f" and len(shape) == 3 and 1 <= shape[0] <= MAX_FIRST_LAYER_UNITS
            and all(1 <= side <= MAX_FIRST_LAYER_SIDE for side in shape[1:]))
