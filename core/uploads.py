"""Datasets people upload: checked, stored once by content, owned, listed, deleted, and loaded for runs.

An accepted upload lives in the runs directory's data area, `.data/uploads/`, as `<sha256>.npz` (its arrays in
a canonical form) and `<sha256>.json` (its name, image counts, classes, size and owners). The SHA-256 is of
the checked arrays in that canonical form (core/upload_files.py reads the file; pixels as bytes 0-255 when
that loses nothing, labels as bytes), so the same data given as an .npz or as IDX files is one upload. It
belongs to whoever uploaded it: a second owner of the same data is added to it, deleting removes only the
deleter's ownership, and the files go when no owner is left. A run names its upload by that SHA-256 in its
config.json (the `upload` setting), so its folder says what it trained on after the upload is gone.

Who may: everyone who may act uploads, within HYBRID_LAB_MAX_UPLOAD per file and HYBRID_LAB_UPLOADS_PER_OWNER
of stored uploads per person (all guests together count as one person: a guest is one browser tab, and anyone
can open many). Owners see, use and delete their own; operators see, use and delete any. A guest's tab, once
closed, cannot reach its uploads again: a guest's ownership older than GUEST_KEEP_SECONDS is let go at the next
upload (unless a queued or training run uses the data), so guests long gone never fill the guests' total.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import io
import os
import re
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from core.access import GUEST_KEEP_SECONDS, Identity, PermissionRefused, check_train, is_guest_key
from core.config import UPLOAD_DIGEST
from core.data import Dataset, _as_dataset
from core.datafiles import IDX_FILES, DatasetError, read_npz
from core.records import timestamp
from core.run_files import read_json, replace_atomically, write_json_atomic
from core.upload_files import megabytes, read_upload
from core.service_settings import service_setting

UPLOADS_FOLDER = Path(".data") / "uploads"
DIGEST = re.compile(UPLOAD_DIGEST[0])  # the upload setting's own pattern
MAX_NAME = 100  # characters of an uploaded file's name that are kept


class UploadGone(DatasetError):
    """The upload a run or a request names is no longer in the data area."""


@dataclass(frozen=True)
class Upload:
    """One stored upload: its content's SHA-256, counts, classes and size, and who owns it under which name."""

    digest: str
    train: int
    test: int
    classes: tuple[int, ...]
    size: int  # bytes of the stored .npz
    owners: dict  # owner key -> {"name": who, "file": the file name they gave, "uploaded_at": when}

    def name_for(self, identity: Identity) -> str:
        """The file name this person gave it (the first owner's for an operator who does not own it)."""
        record = self.owners.get(identity.key)
        return record.get("file", self.digest[:12]) if record else self.first_name

    @property
    def first_name(self) -> str:
        """The file name its first owner gave."""
        return next(iter(self.owners.values()), {}).get("file", self.digest[:12])

    def describe(self, name: str) -> str:
        """'digits.npz: 1,000 train + 200 test images, classes 0-9'."""
        return f"{name}: {self.train:,} train + {self.test:,} test images, classes {describe_classes(self.classes)}"


def describe_classes(classes) -> str:
    """'0-9', '0, 3, 7', or '0-4, 7'."""
    classes, parts, start = sorted(classes), [], None
    for index, value in enumerate(classes):
        start = value if start is None else start
        if index + 1 == len(classes) or classes[index + 1] != value + 1:
            parts.append(str(value) if value == start else f"{start}, {value}" if value == start + 1
                         else f"{start}-{value}")
            start = None
    return ", ".join(parts)


def uploads_folder(runs_dir: Path) -> Path:
    """Where a runs directory keeps its uploads."""
    return Path(runs_dir) / UPLOADS_FOLDER


def limits() -> tuple[int, int]:
    """The upload limit and the per-owner total, in bytes, from the service settings."""
    return int(service_setting("max_upload") * 1e6), int(service_setting("uploads_per_owner") * 1e6)


# ------------------------------------------------------------------------------------------- content


def canonical_arrays(arrays: dict, file_name: str) -> dict[str, np.ndarray]:
    """The checked arrays in the form that is hashed and stored: every check of core.data first (shapes, NaN,
    ranges, labels 0-9), then pixels as bytes 0-255 when that gives back exactly the same images, labels as bytes."""
    dataset = _as_dataset(arrays, "mnist", "uploaded", "", file_name)
    canonical = {}
    for part in ("train", "test"):
        given, images = np.asarray(arrays[f"x_{part}"]), getattr(dataset, f"x_{part}")
        if given.dtype.kind in "ui":  # whole numbers checked to be 0-255: the bytes themselves
            as_bytes = given.reshape(images.shape).astype(np.uint8)
        else:
            as_bytes = np.rint(images * 255).astype(np.uint8)
            if not np.array_equal(as_bytes.astype(np.float32) / np.float32(255), images):
                as_bytes = images  # floats that are not bytes over 255 stay as the run will see them
        canonical[f"x_{part}"] = as_bytes
        canonical[f"y_{part}"] = getattr(dataset, f"y_{part}").astype(np.uint8)
    return canonical


def stored_form(canonical: dict[str, np.ndarray]) -> bytes:
    """The .npz kept in the data area: Keras' layout, deflated at the fastest level (MNIST's zeros go anyway)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for key in IDX_FILES:
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(canonical[key]), allow_pickle=False)
    return buffer.getvalue()


def content_digest(canonical: dict[str, np.ndarray]) -> str:
    """The SHA-256 of the canonical arrays: each one's name, dtype, shape and bytes, in Keras' order."""
    digest = hashlib.sha256()
    for key in IDX_FILES:
        array = np.ascontiguousarray(canonical[key])
        digest.update(f"{key}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def clean_name(file_name: str) -> str:
    """The uploaded file's name as it is kept and shown: no folders, no control characters, at most MAX_NAME."""
    name = re.sub(r"[\x00-\x1f\x7f]", "", str(file_name)).replace("\\", "/").rsplit("/", 1)[-1].strip()
    return (name or "upload")[:MAX_NAME]


# ------------------------------------------------------------------------------------------- the store


def add_upload(data: bytes, file_name: str, runs_dir: Path, *, identity: Identity,
               max_upload: int | None = None, per_owner: int | None = None) -> Upload:
    """Check an uploaded file and keep it for `identity`; returns the upload (an existing one, if the same
    data is stored already). DatasetError names the file and the problem in one sentence, and nothing is kept;
    PermissionRefused for who may not upload."""
    check_train(identity)
    name = clean_name(file_name)
    default_upload, default_total = limits()
    max_upload, per_owner = max_upload or default_upload, per_owner or default_total
    canonical = canonical_arrays(read_upload(data, name, max_upload), name)
    digest = content_digest(canonical)
    folder, existing = uploads_folder(runs_dir), None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder):
            _let_go_of_gone_guests(runs_dir, folder)
            existing = read_upload_record(runs_dir, digest)
            if existing is not None and identity.key in existing.owners:
                return existing
            stored = None if existing else stored_form(canonical)  # the same data again is not packed again
            size = existing.size if existing else len(stored)
            _check_total(runs_dir, identity, name, size, per_owner)
            if existing is None:
                replace_atomically(folder / f"{digest}.npz", stored)
            return _write_record(folder, digest, canonical, size, existing, identity, name)
    except OSError as error:
        if existing is None:
            (folder / f"{digest}.npz").unlink(missing_ok=True)
        raise DatasetError(f"{name} could not be stored ({error.strerror or error}); nothing was kept") from None


def _let_go_of_gone_guests(runs_dir: Path, folder: Path) -> None:
    """Drop guests' ownerships made more than GUEST_KEEP_SECONDS ago (their tabs are gone: nobody can use or
    delete those uploads any more), and the files of an upload no owner is left of; an upload that a queued or
    training run uses is left as it is. Called with the data area locked."""
    cutoff, in_use = datetime.now() - timedelta(seconds=GUEST_KEEP_SECONDS), None
    for upload in _all_uploads(runs_dir):
        gone = {key for key, record in upload.owners.items() if is_guest_key(key) and _made_before(record, cutoff)}
        if not gone:
            continue
        in_use = _runs_on_uploads(runs_dir) if in_use is None else in_use  # the runs are listed once, if at all
        if upload.digest in in_use:
            continue
        owners = {key: record for key, record in upload.owners.items() if key not in gone}
        if owners:
            _save_record(folder, dataclasses.replace(upload, owners=owners))
        else:
            _remove_files(folder, upload.digest)


def _made_before(record: dict, cutoff: datetime) -> bool:
    """Whether an ownership was made before `cutoff`; one whose time cannot be read (edited by hand) counts."""
    try:
        return datetime.fromisoformat(str(record.get("uploaded_at"))).replace(tzinfo=None) < cutoff
    except ValueError:
        return True


def _runs_on_uploads(runs_dir: Path) -> dict[str, list[str]]:
    """The queued and training runs on uploads: upload digest -> their run ids."""
    from core.store import list_runs  # the store's listing, only when an upload may go

    using: dict[str, list[str]] = {}
    for run in list_runs(runs_dir):
        if run.state.active and run.config and run.config.source == "uploaded":
            using.setdefault(run.config.upload, []).append(run.run_id)
    return using


def _remove_files(folder: Path, digest: str) -> None:
    (folder / f"{digest}.json").unlink(missing_ok=True)
    (folder / f"{digest}.npz").unlink(missing_ok=True)


def _check_total(runs_dir: Path, identity: Identity, name: str, size: int, per_owner: int) -> None:
    """Refuse an upload that would take its owner (all guests together, for a guest) past the per-owner total."""
    guest = is_guest_key(identity.key)
    kept = sum(upload.size for upload in _all_uploads(runs_dir)
               if any(key == identity.key or (guest and is_guest_key(key)) for key in upload.owners))
    if kept + size > per_owner:
        who, whose = ("guests", "guests together") if guest else ("you", "one person")
        raise DatasetError(f"{name} ({megabytes(size)} stored) would take the uploads kept by {who} to "
                           f"{megabytes(kept + size)}, past the {megabytes(per_owner)} {whose} may keep "
                           "(HYBRID_LAB_UPLOADS_PER_OWNER); delete an upload first")


def _write_record(folder: Path, digest: str, canonical: dict, size: int, existing: Upload | None,
                  identity: Identity, name: str) -> Upload:
    owners = dict(existing.owners) if existing else {}
    owners[identity.key] = {"name": identity.name, "file": name, "uploaded_at": timestamp()}
    classes = sorted(set(np.unique(canonical["y_train"]).tolist()) | set(np.unique(canonical["y_test"]).tolist()))
    upload = Upload(digest, int(len(canonical["y_train"])), int(len(canonical["y_test"])), tuple(classes), size,
                    owners)
    _save_record(folder, upload)
    return upload


def _save_record(folder: Path, upload: Upload) -> None:
    write_json_atomic(folder / f"{upload.digest}.json", {
        "sha256": upload.digest, "train": upload.train, "test": upload.test, "classes": list(upload.classes),
        "size": upload.size, "owners": upload.owners})


@contextmanager
def _locked(folder: Path):
    """One change to the data area at a time (two people uploading the same data at once)."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing lets go of the lock


def read_upload_record(runs_dir: Path, digest: str) -> Upload | None:
    """The stored upload with this SHA-256, None when there is none (or its record cannot be read)."""
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        return None
    folder = uploads_folder(runs_dir)
    if not (folder / f"{digest}.npz").is_file():
        return None
    try:
        values = read_json(folder / f"{digest}.json")
        owners = values["owners"]
        if not isinstance(owners, dict) or not all(isinstance(record, dict) for record in owners.values()):
            return None
        return Upload(digest, int(values["train"]), int(values["test"]), tuple(int(c) for c in values["classes"]),
                      int(values["size"]), owners)
    except (ValueError, KeyError, TypeError):
        return None


def _all_uploads(runs_dir: Path) -> list[Upload]:
    folder = uploads_folder(runs_dir)
    try:
        names = sorted(path.stem for path in folder.glob("*.json"))
    except OSError:
        return []
    return [upload for upload in map(lambda name: read_upload_record(runs_dir, name), names) if upload]


def list_uploads(runs_dir: Path, identity: Identity) -> list[Upload]:
    """The uploads this identity may see and use: their own, or every one for an operator; newest first."""
    visible = [upload for upload in _all_uploads(runs_dir) if identity.is_operator or
               (identity.may_act and identity.key in upload.owners)]
    return sorted(visible, key=lambda upload: max(r.get("uploaded_at", "") for r in upload.owners.values()),
                  reverse=True)


def check_use(runs_dir: Path, digest: str, identity: Identity) -> Upload:
    """The upload a run asks for, if it is there and this identity may train on it (its owner, or an operator)."""
    upload = read_upload_record(runs_dir, digest)
    if upload is None:
        raise UploadGone(f"upload {str(digest)[:12]} is not in this server's data area (deleted?); upload the data "
                         "again or choose another upload")
    if not (identity.is_operator or identity.key in upload.owners):
        raise PermissionRefused(f"upload {digest[:12]} is not yours: only its owners and operators may train on it")
    return upload


def delete_upload(runs_dir: Path, digest: str, *, identity: Identity) -> bool:
    """Remove `identity`'s ownership of an upload (an operator who does not own it: every ownership); the files
    go when no owner is left, which is returned. Refused while a queued or training run would lose its data."""
    folder = uploads_folder(runs_dir)
    check_use(runs_dir, digest, identity)  # there, and theirs (or an operator's) to delete
    with _locked(folder):
        upload = check_use(runs_dir, digest, identity)
        owners = {key: record for key, record in upload.owners.items() if key != identity.key}
        if identity.key not in upload.owners:
            owners = {}  # an operator deleting someone's upload deletes it
        if not owners:
            if users := _runs_on_uploads(runs_dir).get(digest):
                raise ValueError(f"run {users[0]} is queued or training on this upload; stop it on the Train page "
                                 "first, then delete the upload")
            _remove_files(folder, digest)
            return True
        _save_record(folder, dataclasses.replace(upload, owners=owners))
        return False


# ------------------------------------------------------------------------------------------- for runs


def is_stored(runs_dir: Path, digest: str | None) -> bool:
    """Whether an upload's data is still in the data area."""
    return bool(digest) and DIGEST.fullmatch(str(digest)) is not None \
        and (uploads_folder(runs_dir) / f"{digest}.npz").is_file()


def load_upload(runs_dir: Path | None, digest: str | None, name: str = "mnist") -> Dataset:
    """The Dataset of an upload, for a run whose config names it; UploadGone once it has been deleted."""
    if runs_dir is None:
        from core.store import default_runs_dir

        runs_dir = default_runs_dir()
    if not is_stored(runs_dir, digest):
        raise UploadGone(f"upload {str(digest)[:12]} is not in this server's data area (deleted, or never uploaded "
                         f"here); runs on it keep its SHA-256 ({digest}) in their config.json, so the same data can be "
                         "uploaded again")
    return _cached_load(str(uploads_folder(runs_dir) / f"{digest}.npz"), name)


# An upload never changes under its name (the name is its content's hash): a worker keeps the few it uses.
@functools.lru_cache(maxsize=2)
def _cached_load(path: str, name: str) -> Dataset:
    digest = Path(path).stem
    record = read_upload_record(Path(path).parents[2], digest)
    file_name = record.first_name if record else "an upload"
    arrays = read_npz(Path(path))
    count = len(arrays["y_train"]) + len(arrays["y_test"])
    description = f"upload {file_name} (SHA-256 {digest[:12]}): {count:,} images"
    return _as_dataset(arrays, name, "uploaded", description, file_name)
