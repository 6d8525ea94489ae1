"""Reading a dataset someone uploaded: an .npz in Keras' layout, or a .zip / .tar.gz / .tar of the four IDX files.

An upload is bytes in memory, never a file on the server's disk: nothing is extracted anywhere. Every check
the command line makes on a data file (core/datafiles.py) runs on it, and an archive is read as hostile
first: a member whose name leaves the archive (`../../x`, an absolute path), a link, a FIFO or a device is
refused by name; so is an archive that would unpack to more than UNPACK_FACTOR times the upload limit (its
declared sizes before anything is unpacked, what actually comes out as it is read), or any of whose members
unpacks to more than MAX_RATIO times its compressed size. Every refusal is a DatasetError naming the file
(and the member) in one sentence.
"""

from __future__ import annotations

import gzip
import io
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import PurePosixPath

import numpy as np

from core.datafiles import IDX_FILES, NOT_REGULAR, DatasetError, read_idx_stream, read_npz_stream

UNPACK_FACTOR = 4  # an archive may unpack to at most this many times the upload limit
MAX_RATIO = 100  # a member may unpack to at most this many times its compressed size (MNIST's IDX files: ~5)
RATIO_FLOOR = 1 << 20  # below a megabyte unpacked, no ratio is a bomb
MAX_MEMBERS = 64  # an archive of the four IDX files has four (and maybe a folder or a readme)
READ_CHUNK = 1 << 20
WHAT_TO_UPLOAD = "upload an .npz in Keras' layout (x_train, y_train, x_test, y_test) or a .zip or .tar.gz of the " \
                 "four IDX files"
IDX_STEMS = {stem: key for key, stem in IDX_FILES.items()}
# A tar member's type as the stat mode _member_kind words (a hard link is worded on its own).
TAR_MODES = {tarfile.SYMTYPE: stat.S_IFLNK, tarfile.FIFOTYPE: stat.S_IFIFO, tarfile.CHRTYPE: stat.S_IFCHR,
             tarfile.BLKTYPE: stat.S_IFBLK}


def megabytes(count: float) -> str:
    """A size in words: '100 MB', '0.2 MB'."""
    return f"{count / 1e6:,.1f} MB".replace(".0 MB", " MB")


def read_upload(data: bytes, file_name: str, max_bytes: int) -> dict[str, np.ndarray]:
    """The four arrays of an uploaded file, every check made; DatasetError (naming `file_name`) otherwise."""
    if len(data) > max_bytes:
        raise DatasetError(f"{file_name} is {megabytes(len(data))}, more than the {megabytes(max_bytes)} this server "
                           "takes in one upload (HYBRID_LAB_MAX_UPLOAD); upload a smaller file")
    if not data:
        raise DatasetError(f"{file_name} is empty; {WHAT_TO_UPLOAD}")
    allowance = Allowance(file_name, UNPACK_FACTOR * max_bytes)
    if data.startswith(b"\x93NUMPY"):
        return read_npz_stream(io.BytesIO(data), file_name)  # refused there, in the CLI's words
    if data.startswith(b"PK"):
        return _read_zip(data, file_name, allowance)
    if data.startswith(b"\x1f\x8b"):
        return _read_tar(gzip.GzipFile(fileobj=io.BytesIO(data)), len(data), file_name, allowance)
    if data[257:262] == b"ustar":
        return _read_tar(io.BytesIO(data), len(data), file_name, allowance)
    raise DatasetError(f"{file_name} is not an .npz, .zip, .tar.gz or .tar archive; {WHAT_TO_UPLOAD}")


class Allowance:
    """What an upload may still unpack to, in bytes; spending past it refuses the upload as a bomb."""

    def __init__(self, file_name: str, limit: int):
        self.file_name, self.limit, self.left = file_name, limit, limit

    def spend(self, count: int, what: str) -> None:
        """Take `count` bytes off, or refuse the upload naming `what` would pass the limit."""
        if count > self.left:
            raise DatasetError(f"{what}: unpacks to more than the {megabytes(self.limit)} this server unpacks from "
                               f"one upload ({UNPACK_FACTOR} times HYBRID_LAB_MAX_UPLOAD), a decompression bomb?")
        self.left -= count


def check_member_name(name: str, origin: str) -> None:
    """Refuse a member whose name would leave the archive: absolute, a drive, or a `..` among its parts."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"[A-Za-z]:", posix) or ".." in PurePosixPath(posix).parts:
        shown = name if len(name) <= 80 else f"{name[:80]}…"
        raise DatasetError(f"{origin}: the member {shown!r} points outside the archive (an absolute path or '..'); "
                           "an archive of the four IDX files names them plainly")


def _member_kind(mode: int) -> str | None:
    """What a member is when it is not a plain file or folder: 'a symbolic link', 'a FIFO (named pipe)'..."""
    kind = stat.S_IFMT(mode)
    if kind in (0, stat.S_IFREG, stat.S_IFDIR):
        return None
    return "a symbolic link" if kind == stat.S_IFLNK else NOT_REGULAR.get(kind, "not a regular file")


def _tar_member_kind(member: tarfile.TarInfo) -> str | None:
    """_member_kind for a tar member, worded the same (a tar member's type is not a stat mode)."""
    if member.isfile() or member.isdir():
        return None
    if member.islnk():
        return "a hard link"
    return _member_kind(TAR_MODES[member.type]) if member.type in TAR_MODES else "not a regular file"


def _refuse_kind(name: str, kind: str, origin: str) -> None:
    raise DatasetError(f"{origin}: the member {name!r} is {kind}, not a data file; an archive of the four IDX files "
                       "holds only files")


# ------------------------------------------------------------------------------------------------ zip


def _read_zip(data: bytes, file_name: str, allowance: Allowance) -> dict[str, np.ndarray]:
    # The central directory is read whole when the archive is opened: count its entries first.
    if data.count(b"PK\x01\x02") > MAX_MEMBERS:
        raise DatasetError(f"{file_name}: holds more than {MAX_MEMBERS} files; {WHAT_TO_UPLOAD}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            _check_zip_members(infos, file_name, Allowance(file_name, allowance.limit))
            names = {info.filename.removesuffix(".npy") for info in infos}
            if all(key in names for key in IDX_FILES):
                return read_npz_stream(io.BytesIO(data), file_name)
            return _read_idx_members(_zip_members(archive, infos), file_name, allowance)
    except zipfile.BadZipFile as error:
        raise DatasetError(f"{file_name}: not a readable .zip archive ({error}; truncated, or not a .zip at all)") \
            from None


def _check_zip_members(infos: list, file_name: str, allowance: Allowance) -> None:
    """Names, kinds, declared sizes and ratios of every member, before any is unpacked."""
    for info in infos:
        origin = f"{file_name}: {info.filename}"
        check_member_name(info.filename, file_name)
        kind = _member_kind(info.external_attr >> 16) if info.create_system == 3 else None  # 3: made on Unix
        if kind:
            _refuse_kind(info.filename, kind, file_name)
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise DatasetError(f"{origin}: unpacks {megabytes(info.compress_size)} into "
                               f"{megabytes(info.file_size)}, more than {MAX_RATIO} times its size, a zip bomb?")
        allowance.spend(info.file_size, origin)


def _zip_members(archive: zipfile.ZipFile, infos: list):
    """(name, bytes) of each file member; zipfile never unpacks more than a member declares."""
    for info in infos:
        if not info.is_dir():
            with archive.open(info) as member:
                yield info.filename, member.read(info.file_size + 1)


# ------------------------------------------------------------------------------------------------ tar


class CappedReader:
    """A stream that refuses to give more than an upload's allowance, or MAX_RATIO times its compressed size."""

    def __init__(self, stream, compressed: int, allowance: Allowance):
        self.stream, self.compressed, self.allowance, self.given = stream, compressed, allowance, 0

    def read(self, size: int = -1) -> bytes:
        part = self.stream.read(READ_CHUNK if size is None or size < 0 else size)
        self.given += len(part)
        self.allowance.spend(len(part), self.allowance.file_name)
        if self.given > RATIO_FLOOR and self.given > MAX_RATIO * self.compressed:
            raise DatasetError(f"{self.allowance.file_name}: unpacks {megabytes(self.compressed)} into more than "
                               f"{megabytes(self.given)}, more than {MAX_RATIO} times its size, a decompression bomb?")
        return part


def _read_tar(stream, compressed: int, file_name: str, allowance: Allowance) -> dict[str, np.ndarray]:
    # The archive's own bytes are unpacked once, through the cap; the members are then read from memory.
    capped = CappedReader(stream, compressed, Allowance(file_name, allowance.limit))
    try:
        with tarfile.open(fileobj=capped, mode="r|") as archive:
            return _read_idx_members(_tar_members(archive, file_name), file_name, allowance)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{file_name}: not a readable .tar.gz or .tar archive ({type(error).__name__}: {error}; "
                           "truncated?)") from None


def _tar_members(archive: tarfile.TarFile, file_name: str):
    """(name, bytes) of each file member, refusing names, links and devices as they come (streamed, in order)."""
    for count, member in enumerate(archive, start=1):
        if count > MAX_MEMBERS:
            raise DatasetError(f"{file_name}: holds more than {MAX_MEMBERS} files; {WHAT_TO_UPLOAD}")
        check_member_name(member.name, file_name)
        kind = _tar_member_kind(member)
        if kind:
            _refuse_kind(member.name, kind, file_name)
        if member.isfile():
            yield member.name, archive.extractfile(member).read(member.size)


# ------------------------------------------------------------------------------------------ IDX members


def _idx_key(name: str) -> str | None:
    """Which array a member holds, by its file name (in any folder): 'x_train' for train-images-idx3-ubyte.gz."""
    base = PurePosixPath(name.replace("\\", "/")).name.removesuffix(".gz").replace(".idx", "-idx")
    return IDX_STEMS.get(base)


def _read_idx_members(members, file_name: str, allowance: Allowance) -> dict[str, np.ndarray]:
    """The four arrays from (name, bytes) members; other members are passed over, two of one kind refused."""
    arrays, found = {}, {}
    for name, content in members:
        key = _idx_key(name)
        if key is None:
            continue
        if key in found:
            raise DatasetError(f"{file_name}: holds both {found[key]!r} and {name!r}; expected one "
                               f"{IDX_FILES[key]} (gzipped or not)")
        found[key] = name
        origin = f"{file_name}: {name}"
        arrays[key] = read_idx_stream(io.BytesIO(content), origin, max_bytes=allowance.left)
        allowance.spend(arrays[key].nbytes, origin)
    missing = [IDX_FILES[key] for key in IDX_FILES if key not in arrays]
    if missing:
        raise DatasetError(f"{file_name}: has no {', '.join(missing)} (gzipped or not); {WHAT_TO_UPLOAD}")
    return {key: arrays[key] for key in IDX_FILES}
