"""Kept drawings: each owner's collection of digits drawn on the Draw page, kept with the label they meant.

A drawing is kept as the 28 x 28 float32 image the model saw (core/digits.py: preprocess_drawing), in the runs
directory's data area, one small .npy file per drawing under a folder named after a hash of its owner's key
(core/access.py: Identity.key), so nothing a visitor types becomes a path:

    runs/.data/collections/<owner hash>/drawings/<label>-<time>-<random>.npy
    runs/.data/collections/<owner hash>/snapshots/<content hash>.npz

(a guest's folder is `guest-<hash>`: all guests together keep at most MAX_GUEST_DRAWINGS, and a guest's
collection untouched for a day is let go, since the browser tab it belonged to is gone).

Fine-tuning trains on a snapshot, never on the live folder: `freeze` writes the collection as it is into a
file named by the hash of its content, which the run's config records, so the run says exactly what it
trained on even after drawings are kept or deleted. Every function takes who asks (`identity=`); an owner
only ever reaches their own folder, and a visitor who may not act (not signed in) keeps nothing.

How the collection is split: in each class, drawings in the order they were kept, every fifth (the 5th, 10th
...) is held out to measure the fine-tuned model, and the rest train. `keras_npz` writes the same split in
Keras' mnist.npz layout, so a collection can be uploaded again as a dataset.
"""

from __future__ import annotations

import hashlib
import io
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from core.access import GUEST_KEEP_SECONDS, OPERATOR_KEY, Identity, PermissionRefused, is_guest_key
from core.config import SNAPSHOT_DIGEST
from core.run_files import replace_atomically

DATA_FOLDER = ".data"  # the runs directory's data area: list_runs skips names that start with a dot
COLLECTIONS_FOLDER = "collections"
DRAWINGS_FOLDER = "drawings"
SNAPSHOTS_FOLDER = "snapshots"
HOLD_OUT_EVERY = 5  # in each class, every fifth drawing kept is held out
MAX_DRAWINGS = 1000  # per owner: about 3 MB of images
# Guests: a guest is one browser tab, so a closed tab leaves its drawings to nobody. All guests together keep at
# most this many, and a guest's collection untouched GUEST_KEEP_SECONDS is let go when a guest keeps a drawing.
MAX_GUEST_DRAWINGS = 5 * MAX_DRAWINGS
GUEST_PREFIX = "guest-"  # a guest's folder: the prefix, then the hash of its key
DIGIT_SHAPE = (28, 28)
CLASSES = 10
DRAWING_ID = re.compile(r"[0-9]-[0-9]{8}T[0-9]{12}-[0-9a-f]{6}")
SNAPSHOT_ID = re.compile(SNAPSHOT_DIGEST[0])  # the collection setting's own pattern
HOLD_OUT_WORDS = (f"in each digit, every {HOLD_OUT_EVERY}th drawing you kept (the {HOLD_OUT_EVERY}th, "
                  f"{2 * HOLD_OUT_EVERY}th …) is held out to measure the model; the others train it")


class CollectionError(ValueError):
    """A kept drawing or snapshot that cannot be used; the message says what was given and what to do."""


@dataclass(frozen=True)
class KeptDrawing:
    """One kept drawing: its id (label, time kept, random part), its label and its 28 x 28 image."""

    drawing_id: str
    label: int
    image: np.ndarray  # float32 (28, 28) in [0, 1]


@dataclass(frozen=True)
class Collection:
    """A whole collection (or snapshot): images, labels, which are held out, and its content hash."""

    images: np.ndarray  # float32 (N, 28, 28) in [0, 1]
    labels: np.ndarray  # int32 (N,)
    held_out: np.ndarray  # bool (N,)
    snapshot_id: str

    @property
    def train_images(self) -> np.ndarray:
        """The drawings fine-tuning trains on."""
        return self.images[~self.held_out]

    @property
    def train_labels(self) -> np.ndarray:
        """The labels of the drawings fine-tuning trains on."""
        return self.labels[~self.held_out]

    @property
    def test_images(self) -> np.ndarray:
        """The held-out drawings that measure the fine-tuned model."""
        return self.images[self.held_out]

    @property
    def test_labels(self) -> np.ndarray:
        """The labels of the held-out drawings."""
        return self.labels[self.held_out]

    def counts(self) -> dict[int, int]:
        """How many drawings of each digit, for the digits there are."""
        digits, counts = np.unique(self.labels, return_counts=True)
        return {int(digit): int(count) for digit, count in zip(digits, counts)}


def owner_folder(runs_dir: Path, owner_key: str) -> Path:
    """Where one owner's drawings and snapshots are: a hash of the key, so no key becomes a path."""
    digest = hashlib.sha256(owner_key.encode("utf-8")).hexdigest()[:32]
    return collections_folder(runs_dir) / ((GUEST_PREFIX if is_guest_key(owner_key) else "") + digest)


def collections_folder(runs_dir: Path) -> Path:
    return Path(runs_dir) / DATA_FOLDER / COLLECTIONS_FOLDER


def check_keep(identity: Identity) -> None:
    """Refuse a visitor who may not act (sign-in mode, not signed in): their drawings would belong to nobody."""
    if not identity.may_act:
        raise PermissionRefused("only signed-in users keep drawings on this server, where every drawing belongs "
                                "to whoever kept it; sign in (at the top of the page) and try again")


def _checked_image(image) -> np.ndarray:
    pixels = np.asarray(image)
    if pixels.shape != DIGIT_SHAPE or not np.issubdtype(pixels.dtype, np.floating):
        raise CollectionError(f"a kept drawing must be a float (28, 28) image as preprocess_drawing makes it; "
                              f"got {pixels.dtype} {pixels.shape}")
    if not (np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0):
        raise CollectionError("a kept drawing's pixels must be from 0 to 1 with no NaN; preprocess the drawing "
                              "with core.digits.preprocess_drawing first")
    return pixels.astype(np.float32)


def _checked_label(label) -> int:
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < CLASSES:
        raise CollectionError(f"a kept drawing's label must be a digit from 0 to 9; got {label!r}")
    return int(label)


def keep_drawing(runs_dir: Path, image, label: int, *, identity: Identity) -> KeptDrawing:
    """Keep one preprocessed drawing with its label in `identity`'s collection; returns it with its id."""
    check_keep(identity)
    pixels, label = _checked_image(image), _checked_label(label)
    folder = owner_folder(runs_dir, identity.key) / DRAWINGS_FOLDER
    if is_guest_key(identity.key):
        _check_guests_total(runs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if sum(1 for _ in folder.glob("*.npy")) >= MAX_DRAWINGS:
        raise CollectionError(f"you have kept {MAX_DRAWINGS:,} drawings, as many as one person may; delete some "
                              "in the gallery first")
    drawing_id = f"{label}-{datetime.now().strftime('%Y%m%dT%H%M%S%f')}-{secrets.token_hex(3)}"
    buffer = io.BytesIO()
    np.save(buffer, pixels, allow_pickle=False)
    replace_atomically(folder / f"{drawing_id}.npy", buffer.getvalue())  # a reader never sees half a file
    return KeptDrawing(drawing_id, label, pixels)


def _check_guests_total(runs_dir: Path) -> None:
    """Let go of the collections of guests gone a day (GUEST_KEEP_SECONDS), then refuse a guest's drawing past
    the total all guests may keep together."""
    kept, now = 0, time.time()
    try:
        guests = [entry for entry in collections_folder(runs_dir).iterdir() if entry.name.startswith(GUEST_PREFIX)]
    except OSError:  # nothing kept yet
        return
    for folder in guests:
        if now - _last_change(folder) > GUEST_KEEP_SECONDS:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            kept += sum(1 for _ in (folder / DRAWINGS_FOLDER).glob("*.npy"))
    if kept >= MAX_GUEST_DRAWINGS:
        raise CollectionError(f"guests have kept {kept:,} drawings together, as many as this server keeps from "
                              "guests; a guest's drawings are let go a day after they last changed, and with "
                              "sign-in (the operator configures it) each person keeps their own")


def _last_change(folder: Path) -> float:
    """When an owner's folder last changed: a drawing kept or deleted, a snapshot written (their folders' times)."""
    times = []
    for path in (folder, folder / DRAWINGS_FOLDER, folder / SNAPSHOTS_FOLDER):
        try:
            times.append(path.lstat().st_mtime)
        except OSError:
            continue
    return max(times, default=0.0)


def _read_drawing(path: Path) -> np.ndarray | None:
    """A kept drawing's image, None when the file is not one this module wrote (it is then left out)."""
    try:
        pixels = np.load(path, allow_pickle=False)
        return _checked_image(pixels)
    except (OSError, ValueError):
        return None


def list_drawings(runs_dir: Path, *, identity: Identity) -> list[KeptDrawing]:
    """`identity`'s kept drawings, by digit, each digit's in the order they were kept."""
    folder = owner_folder(runs_dir, identity.key) / DRAWINGS_FOLDER
    try:
        paths = sorted(path for path in folder.iterdir() if DRAWING_ID.fullmatch(path.stem) and path.suffix == ".npy")
    except OSError:  # nothing kept yet
        return []
    drawings = []
    for path in paths:
        image = _read_drawing(path)
        if image is not None:
            drawings.append(KeptDrawing(path.stem, int(path.stem[0]), image))
    return drawings


def delete_drawing(runs_dir: Path, drawing_id: str, *, identity: Identity) -> None:
    """Delete one of `identity`'s kept drawings; CollectionError when they have no drawing of that id."""
    check_keep(identity)
    shown = str(drawing_id)[:40]
    if not isinstance(drawing_id, str) or not DRAWING_ID.fullmatch(drawing_id):
        raise CollectionError(f"{shown!r} is not the id of a kept drawing; pick one in the gallery")
    path = owner_folder(runs_dir, identity.key) / DRAWINGS_FOLDER / f"{drawing_id}.npy"
    try:
        path.unlink()
    except FileNotFoundError:
        raise CollectionError(f"you have no kept drawing {shown}; it may have been deleted already") from None


def held_out_mask(labels: np.ndarray) -> np.ndarray:
    """Which drawings are held out: in each class, in the given order, every HOLD_OUT_EVERY-th one."""
    held_out = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        held_out[members[HOLD_OUT_EVERY - 1::HOLD_OUT_EVERY]] = True
    return held_out


def _content_hash(images: np.ndarray, labels: np.ndarray, held_out: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in (images, labels, held_out):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:20]


def gather(runs_dir: Path, *, identity: Identity) -> Collection:
    """`identity`'s collection as it is now, split into the drawings that train and those held out."""
    drawings = list_drawings(runs_dir, identity=identity)
    images = np.stack([d.image for d in drawings]) if drawings else np.zeros((0, *DIGIT_SHAPE), np.float32)
    labels = np.array([d.label for d in drawings], dtype=np.int32)
    held_out = held_out_mask(labels)
    return Collection(images, labels, held_out, _content_hash(images, labels, held_out))


def freeze(runs_dir: Path, *, identity: Identity) -> Collection:
    """Write `identity`'s collection as it is now into a snapshot named by its content hash (once: the same
    content is the same file), for a run to train on; CollectionError when there is nothing to fine-tune on."""
    check_keep(identity)
    collection = gather(runs_dir, identity=identity)
    if not collection.held_out.any() or collection.held_out.all():
        raise CollectionError(
            f"fine-tuning needs at least {HOLD_OUT_EVERY} kept drawings of one digit, so that one of every "
            f"{HOLD_OUT_EVERY} can be held out to measure it; you have {len(collection.labels)} "
            f"({_describe_counts(collection)}); keep some more")
    folder = owner_folder(runs_dir, identity.key) / SNAPSHOTS_FOLDER
    path = folder / f"{collection.snapshot_id}.npz"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, images=collection.images, labels=collection.labels, held_out=collection.held_out)
        replace_atomically(path, buffer.getvalue())
    return collection


def _describe_counts(collection: Collection) -> str:
    counts = collection.counts()
    return ", ".join(f"{count} of {digit}" for digit, count in counts.items()) if counts else "none yet"


def load_snapshot(runs_dir: Path, owner_key: str | None, snapshot_id: str) -> Collection:
    """A frozen collection of one owner by its hash (the `collection` setting); CollectionError when it is not
    there, or its content does not match its name."""
    if not isinstance(snapshot_id, str) or not SNAPSHOT_ID.fullmatch(snapshot_id):
        raise CollectionError(f"collection {str(snapshot_id)[:40]!r} is not a snapshot id (20 hexadecimal digits); "
                              "fine-tune from the Draw page, which freezes your drawings and sets it")
    path = owner_folder(runs_dir, owner_key or OPERATOR_KEY) / SNAPSHOTS_FOLDER / f"{snapshot_id}.npz"
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, labels, held_out = (np.asarray(archive[name]) for name in ("images", "labels", "held_out"))
    except FileNotFoundError:
        raise CollectionError(f"there is no snapshot {snapshot_id} among the drawings of who started this run; "
                              "fine-tune from the Draw page, which makes one") from None
    except (OSError, ValueError, KeyError):
        raise CollectionError(f"snapshot {snapshot_id} cannot be read; fine-tune again from the Draw page") from None
    if images.dtype != np.float32 or _content_hash(images, labels, held_out) != snapshot_id:
        raise CollectionError(f"snapshot {snapshot_id} does not hold what its name says (changed since it was "
                              "written); fine-tune again from the Draw page")
    return Collection(images, labels.astype(np.int32), held_out.astype(bool), snapshot_id)


def keras_npz(collection: Collection) -> bytes:
    """The collection as an mnist.npz in Keras' layout (uint8 images 0-255, uint8 labels), the held-out
    drawings as the test split: a file the lab can take back as a dataset."""
    def as_bytes(images: np.ndarray) -> np.ndarray:
        return np.round(images * 255).astype(np.uint8)

    buffer = io.BytesIO()
    np.savez_compressed(buffer, x_train=as_bytes(collection.train_images),
                        y_train=collection.train_labels.astype(np.uint8),
                        x_test=as_bytes(collection.test_images), y_test=collection.test_labels.astype(np.uint8))
    return buffer.getvalue()
