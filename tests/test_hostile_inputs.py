"""Issue 10: hostile files, full disks and bad advice. Every failure ends in plain words, bounded, with
nothing lost.

Each test is something a person did: pointed --data at a FIFO, a socket or /dev/zero; gave a gzip whose
header claims ten million images; gave an archive whose arrays hold NaN, text or Python objects; kept runs
on a disk that was read-only, already full, or filled up while a run trained; trained at the smallest
learning rate and read the advice. Data files are written in tmp_path with numpy; the command line runs in
a subprocess with a timeout, so a hang fails the test instead of blocking the suite. The disk tests mount
small tmpfs file systems and skip (saying why) where mounting is not allowed.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

import core.datafiles
from core.advice import CHANCE_LEVEL_ACCURACY, LEARNING_RATE, chance_level_warning, diverged_message
from core.cli import PROG
from core.config import OPTIMIZERS, TrainConfig
from core.data import _as_dataset, check_data_path, load_dataset
from core.datafiles import IDX_FILES, MAX_IMAGES, DatasetError, read_idx, read_npz
from core.records import FailureKind, RunState
from core.store import load_run, read_run

REPO_ROOT = Path(__file__).resolve().parents[1]
# A hang (a FIFO opened for reading waits forever for a writer) must fail the test, not block the suite.
# The limit is generous because two cores are shared: it is a hang detector, not a timing assertion.
CLI_TIMEOUT = 120
HANG_TIMEOUT = 60
MEMORY_BOUND = 100 * 1024 * 1024  # what refusing a hostile file may take; the bombs below claim far more
ERROR_PREFIX = f"{PROG}: error:"


# --- helpers ----------------------------------------------------------------------------------------


def run_cli(*flags: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    """`python -m core.cli FLAGS` as a person runs it; a run past `timeout` fails the test as a hang."""
    try:
        return subprocess.run([sys.executable, "-m", "core.cli", *flags], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:  # subprocess.run has killed it
        pytest.fail(f"python -m core.cli {' '.join(flags)} was still running after {timeout} s (a hang?); "
                    f"stderr: {(expired.stderr or b'')[-1000:]!r}")


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit code 2 and exactly one line on stderr, `python -m core.cli: error: ...`, holding every word."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    line = lines[0]
    assert line.startswith(ERROR_PREFIX), line
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    assert "Traceback" not in result.stderr
    return line


def assert_no_run_left(runs_dir: Path) -> None:
    """Nothing in the runs directory: no run folder, no dot-named staging folder, no queue file."""
    if runs_dir.exists():
        assert sorted(os.listdir(runs_dir)) == []


def call_with_timeout(function, timeout: float = HANG_TIMEOUT, unblock=None):
    """Call `function` on a thread; fail the test (after calling `unblock`) if it has not returned in time."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed back to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        if unblock:
            unblock()
        pytest.fail(f"{getattr(function, '__name__', function)} had not returned after {timeout} s (a hang?)")
    return outcome


def open_fifo_writer_briefly(path: Path) -> None:
    """Give a reader blocked on a FIFO its end of file, so a hung thread can finish."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def peak_memory(function) -> tuple[int, BaseException | None]:
    """The peak of memory Python and numpy allocated while `function` ran, and what it raised."""
    tracemalloc.start()
    raised = None
    try:
        function()
    except Exception as error:
        raised = error
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, raised


def numbers_in(message: str) -> set[str]:
    """Every whole number in a message, with and without thousands separators."""
    found = set()
    for number in re.findall(r"\d[\d,]*", message):
        found |= {number, number.replace(",", "")}
    return found


# --- writing data files -------------------------------------------------------------------------------


def idx_images(images: np.ndarray, count: int | None = None) -> bytes:
    """IDX images: magic 2051, count (the real one unless `count` lies), 28, 28, then the pixels."""
    real, rows, cols = images.shape
    header = b"".join(n.to_bytes(4, "big") for n in (2051, real if count is None else count, rows, cols))
    return header + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    """IDX labels: magic 2049, count, labels."""
    return (2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.astype(np.uint8).tobytes()


def small_arrays() -> dict[str, np.ndarray]:
    """A valid small dataset: 30 train and 12 test images, labels 0-9."""
    rng = np.random.default_rng(7)
    return {"x_train": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), "y_train": np.arange(30) % 10,
            "x_test": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8), "y_test": np.arange(12) % 10}


def write_idx_folder(folder: Path) -> Path:
    """The four IDX files of the small dataset, uncompressed."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = small_arrays()
    for key, stem in IDX_FILES.items():
        encode = idx_images if key.startswith("x") else idx_labels
        (folder / stem).write_bytes(encode(arrays[key]))
    return folder


def write_npz(path: Path, **changes) -> Path:
    """The small dataset as a Keras-layout .npz, with some arrays replaced."""
    arrays = small_arrays()
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


def npy_header(shape: tuple, dtype) -> bytes:
    """The .npy header (format 1.0) declaring `shape` of `dtype`, as numpy writes it."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def write_npz_with_member(path: Path, key: str, header: bytes, body: bytes = b"", zeros: int = 0) -> Path:
    """A .npz whose `key` member is a hand-written header and body (plus `zeros` zero bytes, deflated,
    written a chunk at a time), the other three members valid."""
    arrays = small_arrays()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            if name != key:
                archive.writestr(f"{name}.npy", npy_header(array.shape, array.dtype) + array.tobytes())
                continue
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                member.write(header + body)
                chunk = bytes(1 << 22)
                for start in range(0, zeros, len(chunk)):
                    member.write(chunk[: min(len(chunk), zeros - start)])
    return path


# --- paths that are not files ------------------------------------------------------------------------


@pytest.fixture
def short_dir():
    """A folder with a short path: a Unix socket's path must fit in 108 bytes, and tmp_path may not."""
    with tempfile.TemporaryDirectory(prefix="hx", dir="/tmp") as folder:
        yield Path(folder)


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def make_socket(path: Path) -> Path:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.close()  # the socket file stays after the socket is closed
    return path


def test_a_fifo_given_as_data_is_refused_in_one_line_without_waiting_for_a_writer(tmp_path):
    fifo = make_fifo(tmp_path / "mnist.npz")
    runs_dir = tmp_path / "runs"

    result = run_cli("--data", str(fifo), "--runs-dir", str(runs_dir), timeout=HANG_TIMEOUT)

    assert_one_line_error(result, str(fifo), "FIFO")
    assert_no_run_left(runs_dir)


@pytest.mark.parametrize("kind", ["socket", "character device"])
def test_a_socket_or_dev_zero_given_as_data_is_refused_in_one_line(tmp_path, short_dir, kind):
    path = make_socket(short_dir / "s") if kind == "socket" else Path("/dev/zero")
    runs_dir = tmp_path / "runs"

    result = run_cli("--data", str(path), "--runs-dir", str(runs_dir), timeout=HANG_TIMEOUT)

    assert_one_line_error(result, str(path), kind)
    assert_no_run_left(runs_dir)


@pytest.mark.parametrize("kind", ["FIFO", "socket", "character device"])
def test_check_data_path_names_what_the_path_is_instead_of_opening_it(short_dir, kind):
    path = {"FIFO": lambda: make_fifo(short_dir / "f"), "socket": lambda: make_socket(short_dir / "s"),
            "character device": lambda: Path("/dev/zero")}[kind]()

    outcome = call_with_timeout(lambda: check_data_path("path", str(path)),
                                unblock=lambda: open_fifo_writer_briefly(path))

    error = outcome.get("error")
    assert isinstance(error, DatasetError), outcome
    assert str(path) in str(error) and kind in str(error)
    assert "mnist.npz" in str(error)  # and what to give instead


def test_a_fifo_inside_an_idx_folder_is_refused_by_name_without_waiting_for_a_writer(tmp_path):
    folder = write_idx_folder(tmp_path / "idx")
    labels = folder / "train-labels-idx1-ubyte"
    labels.unlink()
    make_fifo(labels)

    outcome = call_with_timeout(lambda: load_dataset("mnist", "path", str(folder)),
                                unblock=lambda: open_fifo_writer_briefly(labels))

    error = outcome.get("error")
    assert isinstance(error, DatasetError), outcome
    assert str(labels) in str(error) and "FIFO" in str(error)


def test_a_fifo_inside_an_idx_folder_given_to_the_cli_leaves_no_run(tmp_path):
    folder = write_idx_folder(tmp_path / "idx")
    images = folder / "t10k-images-idx3-ubyte"
    images.unlink()
    make_fifo(images)
    runs_dir = tmp_path / "runs"

    result = run_cli("--data", str(folder), "--runs-dir", str(runs_dir), timeout=HANG_TIMEOUT)

    assert_one_line_error(result, "t10k-images-idx3-ubyte", "FIFO")
    assert_no_run_left(runs_dir)


# --- IDX headers that lie ----------------------------------------------------------------------------


def test_a_gzip_claiming_ten_million_images_is_refused_before_it_is_decompressed(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = b"".join(n.to_bytes(4, "big") for n in (2051, 10_000_000, 28, 28))
    # 128 MB of zeros: a reader that trusted the header (or just read it all) would hold more than the bound.
    with gzip.GzipFile(path, "wb", compresslevel=1) as handle:
        handle.write(header)
        chunk = bytes(1 << 22)
        for _ in range(32):
            handle.write(chunk)
    assert path.stat().st_size < 2_000_000  # the bomb is small on disk

    peak, raised = peak_memory(lambda: read_idx(path))

    assert isinstance(raised, DatasetError), raised
    message = str(raised)
    assert str(path) in message
    assert {"10000000", f"{MAX_IMAGES}"} <= numbers_in(message), message  # what it claims, and the ceiling
    assert peak < MEMORY_BOUND, f"refusing it took {peak:,} bytes"


def test_a_header_claiming_200000_images_over_1000_says_bytes_found_and_expected(tmp_path):
    images = np.zeros((1000, 28, 28), np.uint8)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_images(images, count=200_000))

    with pytest.raises(DatasetError) as raised:
        read_idx(path)

    message = str(raised.value)
    assert str(path) in message
    found, expected = 16 + 1000 * 784, 16 + 200_000 * 784
    assert {str(found), str(expected)} <= numbers_in(message), message


def test_a_file_with_more_data_than_its_header_is_refused(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_images(np.zeros((11, 28, 28), np.uint8), count=10))

    with pytest.raises(DatasetError) as raised:
        read_idx(path)

    message = str(raised.value)
    assert str(path) in message and "more data" in message
    assert str(16 + 10 * 784) in numbers_in(message)


def test_a_damaged_gzip_says_it_cannot_be_decompressed(tmp_path):
    valid = gzip.compress(idx_labels(np.arange(30) % 10))
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(valid[:10] + b"\xff" * 2000)  # a valid gzip header, then no deflate stream at all

    with pytest.raises(DatasetError) as raised:
        read_idx(path)

    assert str(path) in str(raised.value) and "cannot be decompressed" in str(raised.value)


def test_a_damaged_gzip_in_an_idx_folder_is_named_by_the_cli(tmp_path):
    folder = write_idx_folder(tmp_path / "idx")
    (folder / "train-labels-idx1-ubyte").unlink()
    damaged = folder / "train-labels-idx1-ubyte.gz"
    damaged.write_bytes(gzip.compress(b"")[:10] + b"\xff" * 2000)
    runs_dir = tmp_path / "runs"

    result = run_cli("--data", str(folder), "--runs-dir", str(runs_dir))

    assert_one_line_error(result, str(damaged), "cannot be decompressed")
    assert_no_run_left(runs_dir)


def test_a_file_that_cannot_be_opened_is_a_dataset_error_in_words(tmp_path, monkeypatch):
    # As root, chmod 000 does not stop open(); a person without root gets exactly this PermissionError.
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(idx_labels(np.arange(30) % 10))

    def refuse(file, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(file))

    monkeypatch.setattr(core.datafiles, "open", refuse, raising=False)

    with pytest.raises(DatasetError) as raised:
        read_idx(path)

    assert str(path) in str(raised.value) and "Permission denied" in str(raised.value)


# --- npz archives that lie ----------------------------------------------------------------------------


def test_an_npz_member_declaring_ten_million_images_is_refused_before_loading(tmp_path):
    path = write_npz_with_member(tmp_path / "mnist.npz", "x_train", npy_header((10_000_000, 28, 28), np.uint8),
                                 body=bytes(784))

    peak, raised = peak_memory(lambda: read_npz(path))

    assert isinstance(raised, DatasetError), raised
    message = str(raised)
    assert str(path) in message and "x_train" in message
    assert "10000000" in numbers_in(message), message
    assert peak < MEMORY_BOUND, f"refusing it took {peak:,} bytes"


def test_an_npz_member_with_extra_dimensions_of_deflated_zeros_is_refused_before_loading(tmp_path):
    # 1,000 "images" (under the ceiling) of 28x28x200 bytes: 157 MB of zeros deflate to a file of 0.2 MB.
    # Only (N, 28, 28) or (N, 784) can be used, so the archive can be refused from its header alone.
    shape = (1000, 28, 28, 200)
    path = write_npz_with_member(tmp_path / "mnist.npz", "x_train", npy_header(shape, np.uint8),
                                 zeros=int(np.prod(shape)))
    assert path.stat().st_size < 2_000_000

    peak, raised = peak_memory(lambda: load_dataset("mnist", "path", str(path)))

    assert isinstance(raised, DatasetError), raised
    assert str(path) in str(raised) and "x_train" in str(raised)
    assert peak < MEMORY_BOUND, f"refusing it took {peak:,} bytes"


def test_an_npz_member_holding_fewer_bytes_than_its_shape_is_refused(tmp_path):
    path = write_npz_with_member(tmp_path / "mnist.npz", "x_test", npy_header((100, 28, 28), np.uint8),
                                 body=bytes(1000))

    with pytest.raises(DatasetError) as raised:
        read_npz(path)

    message = str(raised.value)
    assert str(path) in message and "x_test" in message
    assert str(100 * 28 * 28) in numbers_in(message), message  # the bytes its shape needs


def test_an_npz_member_holding_more_bytes_than_its_shape_is_refused(tmp_path):
    path = write_npz_with_member(tmp_path / "mnist.npz", "y_train", npy_header((30,), np.int64),
                                 body=bytes(30 * 8 + 100_000))

    with pytest.raises(DatasetError) as raised:
        read_npz(path)

    assert str(path) in str(raised.value) and "y_train" in str(raised.value)


def test_a_truncated_npz_names_the_file_and_says_it_may_be_truncated(tmp_path):
    whole = write_npz(tmp_path / "whole.npz").read_bytes()
    path = tmp_path / "mnist.npz"
    path.write_bytes(whole[: len(whole) // 2])

    with pytest.raises(DatasetError) as raised:
        load_dataset("mnist", "path", str(path))

    message = str(raised.value)
    assert str(path) in message
    assert "truncated" in message or "damaged" in message, message


def test_a_single_npy_given_as_data_says_it_is_a_single_array(tmp_path):
    path = tmp_path / "x_train.npy"
    np.save(path, small_arrays()["x_train"])
    runs_dir = tmp_path / "runs"

    with pytest.raises(DatasetError) as raised:
        load_dataset("mnist", "path", str(path))
    result = run_cli("--data", str(path), "--runs-dir", str(runs_dir))

    assert str(path) in str(raised.value) and "single" in str(raised.value)
    assert_one_line_error(result, str(path), "single")
    assert_no_run_left(runs_dir)


# --- pixels and labels that are not digits -------------------------------------------------------------


def _with(key: str, dtype, index: tuple | None = None, value=None) -> np.ndarray:
    array = small_arrays()[key].astype(dtype)
    if index is not None:
        array[index] = value
    return array


class Evil:
    """Unpickling this makes a folder: if it appears, the loader unpickled a file it was given."""

    marker: Path | None = None

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


# name: (key, bad array maker, words the message must hold, the first bad index or None)
BAD_CONTENT = {
    "nan_pixel": ("x_train", lambda: _with("x_train", np.float32, (2, 5, 7), np.nan), ["NaN"], (2, 5, 7)),
    "infinite_pixel": ("x_test", lambda: _with("x_test", np.float64, (1, 0, 3), np.inf), ["infinite"], (1, 0, 3)),
    "complex_pixels": ("x_train", lambda: _with("x_train", np.complex64), ["complex"], None),
    "bool_pixels": ("x_test", lambda: _with("x_test", np.float32) > 100, ["true/false"], None),
    "object_pixels": ("x_train", lambda: _with("x_train", object), ["Python objects"], None),
    "uint16_pixel_of_300": ("x_train", lambda: _with("x_train", np.uint16, (4, 10, 11), 300), ["300"], (4, 10, 11)),
    "negative_pixel": ("x_test", lambda: _with("x_test", np.int16, (0, 27, 27), -3), ["-3"], (0, 27, 27)),
    "string_labels": ("y_train", lambda: np.array([str(d) for d in np.arange(30) % 10]), ["whole numbers"], None),
    "float_labels": ("y_test", lambda: (np.arange(12) % 10).astype(np.float64), ["whole numbers"], None),
}


def assert_names_the_bad_content(message: str, origin: str, case: str) -> None:
    key, _, words, index = BAD_CONTENT[case]
    assert origin in message, message
    assert key in message, message
    for word in words:
        assert word in message, message
    if index is not None:
        assert ", ".join(map(str, index)) in message, message  # the first bad pixel, to go and look at


@pytest.mark.parametrize("case", list(BAD_CONTENT))
def test_arrays_that_are_not_digits_are_refused_naming_origin_array_and_index(case):
    key, make, _, _ = BAD_CONTENT[case]
    arrays = small_arrays()
    arrays[key] = make()

    with pytest.raises(DatasetError) as raised:
        _as_dataset(arrays, "mnist", "path", "test data", "/data/given.npz")

    assert_names_the_bad_content(str(raised.value), "/data/given.npz", case)


@pytest.mark.parametrize("case", list(BAD_CONTENT))
def test_an_npz_with_arrays_that_are_not_digits_is_refused_by_load_dataset(tmp_path, case):
    key, make, _, _ = BAD_CONTENT[case]
    Evil.marker = tmp_path / "unpickled"
    array = make()
    if case == "object_pixels":
        array.flat[0] = Evil()  # np.savez pickles object arrays; loading must refuse without unpickling
    path = write_npz(tmp_path / "mnist.npz", **{key: array})

    with pytest.raises(DatasetError) as raised:
        load_dataset("mnist", "path", str(path))

    assert_names_the_bad_content(str(raised.value), str(path), case)
    assert not Evil.marker.exists()


@pytest.mark.parametrize("case", ["nan_pixel", "object_pixels", "uint16_pixel_of_300", "string_labels"])
def test_the_cli_refuses_arrays_that_are_not_digits_in_one_line_and_leaves_no_run(tmp_path, case):
    key, make, words, _ = BAD_CONTENT[case]
    path = write_npz(tmp_path / "mnist.npz", **{key: make()})
    runs_dir = tmp_path / "runs"

    result = run_cli("--data", str(path), "--runs-dir", str(runs_dir))

    assert_one_line_error(result, str(path), key, *words)
    assert_no_run_left(runs_dir)


# --- disks ------------------------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """mount_tmpfs(name, size, read_only) mounts a small tmpfs under tmp_path (skips without the right);
    every mount is unmounted at teardown."""
    mounted: list[Path] = []

    def mount_tmpfs(name: str = "disk", size: str = "1m", read_only: bool = False) -> Path:
        point = tmp_path / name
        point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            pytest.skip(f"cannot mount a tmpfs here: {error}")
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount_tmpfs
    for point in reversed(mounted):
        if subprocess.run(["umount", str(point)], capture_output=True, timeout=60).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=60)


def fill(folder: Path) -> None:
    """Write a file in `folder` until the disk is full."""
    chunk = bytes(64 * 1024)
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
    with pytest.raises(OSError):  # full: not even one more byte
        (folder / "probe").write_bytes(b"x")
    (folder / "probe").unlink(missing_ok=True)


def test_runs_dir_that_is_a_plain_file_is_one_line_naming_it(tmp_path):
    runs_dir = tmp_path / "runs"
    runs_dir.write_text("not a folder")

    result = run_cli("--source", "offline", "--steps", "5", "--runs-dir", str(runs_dir))

    assert_one_line_error(result, str(runs_dir), "a file")
    assert runs_dir.read_text() == "not a folder"


@pytest.mark.parametrize("inside", [False, True], ids=["the_mount_itself", "a_folder_to_make_in_it"])
def test_runs_dir_on_a_read_only_disk_is_one_line_naming_it(tmpfs, inside):
    disk = tmpfs("readonly", read_only=True)
    runs_dir = disk / "runs" if inside else disk

    result = run_cli("--source", "offline", "--steps", "5", "--runs-dir", str(runs_dir))

    assert_one_line_error(result, str(runs_dir), "Read-only")
    assert os.listdir(disk) == []


def test_a_disk_already_full_when_a_run_starts_is_one_line_and_no_run_folder(tmpfs):
    disk = tmpfs("full", size="1m")
    runs_dir = disk / "runs"
    runs_dir.mkdir()
    fill(disk)

    result = run_cli("--source", "offline", "--steps", "5", "--runs-dir", str(runs_dir))

    assert_one_line_error(result, str(runs_dir), "No space left on device")
    assert_no_run_left(runs_dir)  # no run folder, and no .new-* staging folder either


def test_the_runs_disk_filling_up_mid_run_fails_the_run_in_words_keeping_what_was_logged(tmpfs):
    runs_dir = tmpfs("small", size="1m")

    result = run_cli("--steps", "100000", "--source", "offline", "--json", "--runs-dir", str(runs_dir),
                     timeout=900)

    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == "failed"
    assert "no space left on device" in report["message"]
    assert str(runs_dir) in report["message"]  # where to free some space
    run = load_run(report["run_id"], runs_dir)
    assert run.state is RunState.FAILED, run.message  # not "running" forever
    assert run.status.failure is FailureKind.NO_SPACE  # what the pages word, with nothing to read in the message
    assert run.message == report["message"]
    assert 0 < run.step < 100_000
    metrics = run.read_metrics()
    assert metrics["step"] and metrics["step"][0] == 0  # what was logged before the disk filled stays
    assert not list(runs_dir.rglob("*.tmp"))
    assert not (run.path / ".reserve").exists()  # the kept-aside space was given back
    if run.error_path.exists():
        assert "Traceback" in run.error_path.read_text()
    assert read_run(run.path).damaged is None


# --- advice -------------------------------------------------------------------------------------------


def suggested_rates(message: str) -> list[float]:
    """The numbers after every "try " in a message: the learning rates it suggests."""
    rates = []
    for clause in re.findall(r"try ([^;]*)", message):
        rates += [float(n) for n in re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?:e[+-]?\d+)?", clause)]
    return rates


def test_suggested_rates_reads_the_numbers_after_try():
    assert suggested_rates("steps are too small; try 0.0001, or more steps") == [0.0001]
    assert suggested_rates("with learning rate 5; try a smaller learning rate, such as 1e-05") == [1e-5]
    assert suggested_rates("at 1e-05; try another optimizer (adam)") == []


def test_training_at_the_smallest_rate_says_the_steps_are_too_small_and_suggests_a_larger_one(tmp_path):
    from core.training import train  # imports TensorFlow

    config = TrainConfig(learning_rate=1e-5, steps=200, eval_every=100, source="offline")  # the article's net

    run = train(config, tmp_path / "runs")

    assert run.state is RunState.COMPLETED, run.message
    assert run.test_accuracy <= CHANCE_LEVEL_ACCURACY, run.message
    assert "too small" in run.message and "too large" not in run.message
    assert "try 0.0001" in run.message
    assert "1e-06" not in run.message
    assert suggested_rates(run.message) == [0.0001]


def test_chance_level_at_the_largest_rate_that_barely_moved_suggests_more_steps_not_a_larger_rate():
    config = TrainConfig(learning_rate=10.0)

    message = chance_level_warning(config, 0.1, first_loss=2.30, highest_loss=2.31, last_loss=2.29)

    assert "more steps" in message
    assert all(rate <= LEARNING_RATE.high for rate in suggested_rates(message)), message
    assert "100" not in message


def test_a_blow_up_at_the_smallest_rate_suggests_another_optimizer_not_a_smaller_rate():
    config = TrainConfig(learning_rate=1e-5)

    message = chance_level_warning(config, 0.1, first_loss=2.30, highest_loss=80.0, last_loss=2.30)

    assert "optimizer" in message
    assert suggested_rates(message) == []
    assert "1e-06" not in message


def test_diverging_at_the_smallest_rate_suggests_no_smaller_rate():
    message = diverged_message(TrainConfig(learning_rate=1e-5), float("nan"), 12)

    assert "optimizer" in message
    assert suggested_rates(message) == []
    assert "1e-06" not in message


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_advice_to_change_optimizer_names_one_other_than_the_one_in_use(optimizer):
    config = TrainConfig(learning_rate=1e-5, optimizer=optimizer)
    messages = [diverged_message(config, float("inf"), 3),
                chance_level_warning(config, 0.1, first_loss=2.3, highest_loss=50.0, last_loss=2.3)]

    for message in messages:
        advice = message.rsplit("try ", 1)[1]
        assert "optimizer" in advice, message
        assert optimizer not in advice, f"a run using {optimizer} is told to try {advice!r}"


RATES = sorted({LEARNING_RATE.low, 1.5e-5, 3e-5, 9.9e-5, 1e-4, 3e-4, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0,
                9.9, LEARNING_RATE.high, *LEARNING_RATE.stops})


@pytest.mark.parametrize("rate", RATES, ids=lambda rate: f"{rate:g}")
def test_every_rate_the_advice_suggests_is_allowed_and_goes_the_right_way(rate):
    config = TrainConfig(learning_rate=rate)
    too_large = [chance_level_warning(config, 0.1, first_loss=2.3, highest_loss=40.0, last_loss=2.3),
                 diverged_message(config, float("nan"), 7)]
    too_small = [chance_level_warning(config, 0.1, first_loss=2.30, highest_loss=2.31, last_loss=2.29)]

    for message in too_large + too_small:
        assert "try " in message or "train for more steps" in message, message  # always something to do
        for suggested in suggested_rates(message):
            assert LEARNING_RATE.low <= suggested <= LEARNING_RATE.high, message
    for message in too_large:
        assert all(suggested < rate for suggested in suggested_rates(message)), message
    for message in too_small:
        assert all(suggested > rate for suggested in suggested_rates(message)), message
