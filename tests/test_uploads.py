"""Issue 18: datasets people upload. Every hostile file ends in one sentence naming it, with nothing kept; an
accepted one is stored once by content, owned, listed, deleted by its owners, and a run on it says what it
trained on after it is gone.

The hostile files are those of tests/test_hostile_inputs.py (the command line's), given as uploads, plus what
only an archive can carry: names that leave it, links, FIFOs and devices, and bombs. Uploads are bytes
made in memory, as the browser sends them.
"""

from __future__ import annotations

import gzip
import io
import json
import stat
import tarfile
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from core import service
from core.access import OPERATOR, PermissionRefused, member, new_guest, reader
from core.config import TrainConfig
from core.datafiles import IDX_FILES, DatasetError
from core.records import RunState
from core.uploads import (
    UploadGone,
    add_upload,
    content_digest,
    delete_upload,
    is_stored,
    list_uploads,
    read_upload_record,
    load_upload,
    uploads_folder,
)
from tests.factories import make_run
from tests.test_hostile_inputs import (
    BAD_CONTENT,
    idx_images,
    idx_labels,
    npy_header,
    small_arrays,
    write_npz,
    write_npz_with_member,
)

ALICE = member({"iss": "https://id.example.org", "sub": "alice", "name": "Alice Liddell"}, operators=frozenset())
BOB = member({"iss": "https://id.example.org", "sub": "bob", "name": "Bob"}, operators=frozenset())
LIMIT = 5_000_000  # bytes an upload may be in these tests (the unpacked limit is four times that)


@pytest.fixture(autouse=True)
def service_settings(monkeypatch):
    for setting in service.SERVICE_SETTINGS:
        monkeypatch.delenv(setting.variable, raising=False)


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


# --- making uploads ------------------------------------------------------------------------------------------


def npz_bytes(tmp_path, **changes) -> bytes:
    return write_npz(tmp_path / "made.npz", **changes).read_bytes()


def idx_members(arrays: dict | None = None, gzipped: bool = False) -> dict[str, bytes]:
    """The four IDX files of the small dataset (or of `arrays`), by file name."""
    arrays = arrays or small_arrays()
    members = {}
    for key, stem in IDX_FILES.items():
        content = (idx_images if key.startswith("x") else idx_labels)(arrays[key])
        members[stem + (".gz" if gzipped else "")] = gzip.compress(content) if gzipped else content
    return members


def zip_bytes(members: dict[str, bytes], modes: dict[str, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if modes and name in modes:
                info.create_system = 3  # Unix: the high bits of external_attr are a file mode
                info.external_attr = modes[name] << 16
            archive.writestr(info, content)
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes], specials: dict[str, bytes] | None = None, compressed: bool = True) -> bytes:
    """A .tar.gz (or .tar) of files, plus special members: name -> tarfile type (SYMTYPE, FIFOTYPE...)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compressed else "w") as archive:
        for name, kind in (specials or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            archive.addfile(info)
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def without(members: dict, stem: str) -> dict:
    return {name: content for name, content in members.items() if not name.startswith(stem)}


def deflated_zeros_member(name: str, count: int) -> bytes:
    """A zip whose member `name` is `count` zero bytes, deflated (a bomb when count is large), written in chunks."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open(name, "w", force_zip64=True) as member_file:
            chunk = bytes(1 << 22)
            for start in range(0, count, len(chunk)):
                member_file.write(chunk[: min(len(chunk), count - start)])
    return buffer.getvalue()


def tar_gz_of_zeros(name: str, count: int) -> bytes:
    class Zeros(io.RawIOBase):
        left = count

        def readable(self):
            return True

        def readinto(self, target):
            size = min(len(target), self.left)
            target[:size] = bytes(size)
            self.left -= size
            return size

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as archive:
        info = tarfile.TarInfo(name)
        info.size = count
        archive.addfile(info, io.BufferedReader(Zeros()))
    return buffer.getvalue()


def partly_random(count: int, random_share: float) -> bytes:
    """`count` bytes, a share of them random: compresses about 1/random_share times."""
    content = bytearray(count)
    step = int(1 / random_share)
    content[::step] = np.random.default_rng(0).integers(0, 256, len(content[::step]), dtype=np.uint8).tobytes()
    return bytes(content)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npz_member(tmp_path, key, header, **body) -> bytes:
    return write_npz_with_member(tmp_path / f"{key}-member.npz", key, header, **body).read_bytes()


def _idx_with(stem: str, name: str, content: bytes) -> dict:
    return {**without(idx_members(), stem), name: content}


TEN_MILLION_IMAGES = b"".join(n.to_bytes(4, "big") for n in (2051, 10_000_000, 28, 28)) + bytes(784)
OVER_LIMIT = LIMIT // 784 + 10  # images: an .npz of this many random ones is over LIMIT

# name -> (file name, maker of its bytes given tmp_path, words the refusal must hold)
HOSTILE = {
    "fifo_member": ("digits.tar.gz", lambda tmp: tar_bytes(
        without(idx_members(), "train-labels"), {"train-labels-idx1-ubyte": tarfile.FIFOTYPE}), ["FIFO"]),
    "character_device_member": ("digits.tar.gz", lambda tmp: tar_bytes(
        without(idx_members(), "t10k-images"), {"t10k-images-idx3-ubyte": tarfile.CHRTYPE}), ["character device"]),
    "socket_member": ("digits.zip", lambda tmp: zip_bytes(
        idx_members(), {"t10k-labels-idx1-ubyte": stat.S_IFSOCK | 0o644}), ["socket"]),
    "symbolic_link_in_a_tar": ("digits.tar", lambda tmp: tar_bytes(
        without(idx_members(), "train-images"), {"train-images-idx3-ubyte": tarfile.SYMTYPE}, compressed=False),
        ["symbolic link"]),
    "symbolic_link_in_a_zip": ("digits.zip", lambda tmp: zip_bytes(
        idx_members(), {"train-images-idx3-ubyte": stat.S_IFLNK | 0o777}), ["symbolic link"]),
    "hard_link_in_a_tar": ("digits.tar.gz", lambda tmp: tar_bytes(
        without(idx_members(), "train-labels"), {"train-labels-idx1-ubyte": tarfile.LNKTYPE}), ["hard link"]),
    "gzip_claiming_ten_million_images": ("digits.zip", lambda tmp: zip_bytes(_idx_with(
        "train-images", "train-images-idx3-ubyte.gz", gzip.compress(TEN_MILLION_IMAGES))), ["10,000,000"]),
    "header_claiming_200000_over_1000": ("digits.tar.gz", lambda tmp: tar_bytes(_idx_with(
        "train-images", "train-images-idx3-ubyte", idx_images(np.zeros((1000, 28, 28), np.uint8), count=200_000))),
        ["200,000"]),
    "more_data_than_its_header": ("digits.zip", lambda tmp: zip_bytes(_idx_with(
        "train-images", "train-images-idx3-ubyte", idx_images(np.zeros((11, 28, 28), np.uint8), count=10))),
        ["more data"]),
    "damaged_gzip": ("digits.zip", lambda tmp: zip_bytes(_idx_with(
        "train-labels", "train-labels-idx1-ubyte.gz",
        gzip.compress(idx_labels(np.arange(30) % 10))[:10] + b"\xff" * 2000)), ["cannot be decompressed"]),
    "npz_declaring_ten_million_images": ("digits.npz", lambda tmp: _npz_member(
        tmp, "x_train", npy_header((10_000_000, 28, 28), np.uint8), body=bytes(784)), ["x_train", "10,000,000"]),
    "npz_of_extra_dimensions_of_zeros": ("digits.npz", lambda tmp: _npz_member(
        tmp, "x_train", npy_header((1000, 28, 28, 200), np.uint8), zeros=1000 * 28 * 28 * 200), ["x_train"]),
    "npz_member_shorter_than_its_shape": ("digits.npz", lambda tmp: _npz_member(
        tmp, "x_test", npy_header((100, 28, 28), np.uint8), body=bytes(1000)), ["x_test"]),
    "npz_member_longer_than_its_shape": ("digits.npz", lambda tmp: _npz_member(
        tmp, "y_train", npy_header((30,), np.int64), body=bytes(30 * 8 + 100_000)), ["y_train"]),
    "truncated_npz": ("digits.npz", lambda tmp: npz_bytes(tmp)[:1500], ["truncated"]),
    "single_npy": ("x_train.npy", lambda tmp: _npy(small_arrays()["x_train"]), ["single"]),
    "not_an_archive": ("digits.csv", lambda tmp: b"label,pixel0\n5,0\n" * 40, [".npz"]),
    "empty_file": ("digits.npz", lambda tmp: b"", ["empty"]),
    "path_traversal_in_a_zip": ("digits.zip", lambda tmp: zip_bytes({**idx_members(), "../../x": b"owned"}),
                                ["../../x", "outside"]),
    "absolute_path_in_a_tar": ("digits.tar.gz", lambda tmp: tar_bytes({**idx_members(), "/etc/cron.d/x": b"owned"}),
                               ["outside"]),
    "traversal_named_like_an_idx_file": ("digits.zip", lambda tmp: zip_bytes(
        {("../" + name if name.startswith("train-labels") else name): content
         for name, content in idx_members().items()}), ["outside"]),
    "zip_bomb": ("digits.zip", lambda tmp: deflated_zeros_member("train-images-idx3-ubyte", 200_000_000),
                 ["zip bomb"]),
    "zip_unpacking_past_the_limit": ("digits.zip", lambda tmp: zip_bytes(
        {**idx_members(), "notes.bin": partly_random(4 * LIMIT + 1_000_000, 1 / 40)}), ["unpacks to more than"]),
    "tar_gz_bomb": ("digits.tar.gz", lambda tmp: tar_gz_of_zeros("train-images-idx3-ubyte", 100_000_000), ["bomb"]),
    "over_the_upload_limit": ("digits.npz", lambda tmp: npz_bytes(tmp, x_train=np.random.default_rng(1).integers(
        0, 256, (OVER_LIMIT, 28, 28), dtype=np.uint8), y_train=np.arange(OVER_LIMIT) % 10), ["HYBRID_LAB_MAX_UPLOAD"]),
    **{case: ("digits.npz", lambda tmp, key=key, make=make: npz_bytes(tmp, **{key: make()}), [key, *words])
       for case, (key, make, words, _) in BAD_CONTENT.items()},
}


def stored_files(runs_dir) -> list:
    """Every file in the data area (none for a refused upload, not even a temporary one)."""
    folder = uploads_folder(runs_dir).parent
    return sorted(path for path in folder.rglob("*") if not path.is_dir()) if folder.exists() else []


# --- hostile uploads ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_upload_is_one_sentence_naming_the_file_and_nothing_is_kept(tmp_path, runs_dir, case):
    file_name, make, words = HOSTILE[case]
    data = make(tmp_path)

    with pytest.raises(DatasetError) as raised:
        add_upload(data, file_name, runs_dir, identity=ALICE, max_upload=LIMIT)

    message = str(raised.value)
    assert message.startswith(file_name), message
    assert "\n" not in message and "Traceback" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert stored_files(runs_dir) == []
    assert list_uploads(runs_dir, OPERATOR) == []


def test_a_bomb_is_refused_before_it_is_unpacked(tmp_path, runs_dir):
    import tracemalloc

    data = deflated_zeros_member("train-images-idx3-ubyte", 200_000_000)
    tracemalloc.start()
    with pytest.raises(DatasetError):
        add_upload(data, "digits.zip", runs_dir, identity=ALICE, max_upload=LIMIT)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert peak < 20_000_000, f"refusing a 200 MB bomb took {peak:,} bytes"


# --- what is kept, and whose it is -----------------------------------------------------------------------


def test_an_accepted_upload_is_listed_with_its_name_counts_and_classes(tmp_path, runs_dir):
    arrays = small_arrays()
    arrays["y_test"] = np.array([0, 3, 3, 7, 7, 7, 0, 3, 7, 0, 0, 3])

    upload = add_upload(npz_bytes(tmp_path, y_test=arrays["y_test"]), "my digits.npz", runs_dir, identity=ALICE)

    [listed] = list_uploads(runs_dir, ALICE)
    assert listed == upload
    assert (listed.train, listed.test, listed.classes) == (30, 12, tuple(range(10)))
    assert listed.name_for(ALICE) == "my digits.npz"
    assert sorted(path.name for path in stored_files(runs_dir)) == [f"{upload.digest}.json", f"{upload.digest}.npz"]
    assert list_uploads(runs_dir, BOB) == []  # another person's uploads are theirs
    assert list_uploads(runs_dir, OPERATOR) == [upload]


@pytest.mark.parametrize("form", ["idx_zip", "idx_gz_tar_gz", "idx_tar"])
def test_the_same_data_as_npz_or_as_idx_files_is_one_upload_owned_by_both(tmp_path, runs_dir, form):
    data = {"idx_zip": lambda: zip_bytes(idx_members()),
            "idx_gz_tar_gz": lambda: tar_bytes({f"mnist/{n}": c for n, c in idx_members(gzipped=True).items()}),
            "idx_tar": lambda: tar_bytes(idx_members(), compressed=False)}[form]()

    first = add_upload(npz_bytes(tmp_path), "alice.npz", runs_dir, identity=ALICE)
    second = add_upload(data, "bob.zip", runs_dir, identity=BOB)

    assert second.digest == first.digest
    assert len([path for path in stored_files(runs_dir) if path.suffix == ".npz"]) == 1
    assert set(second.owners) == {ALICE.key, BOB.key}
    assert list_uploads(runs_dir, ALICE)[0].name_for(ALICE) == "alice.npz"
    assert list_uploads(runs_dir, BOB)[0].name_for(BOB) == "bob.zip"


def test_float_pixels_that_are_bytes_over_255_hash_as_the_bytes_do(tmp_path, runs_dir):
    arrays = small_arrays()
    as_floats = {key: (value.astype(np.float32) / np.float32(255) if key.startswith("x") else value)
                 for key, value in arrays.items()}

    one = add_upload(npz_bytes(tmp_path), "bytes.npz", runs_dir, identity=ALICE)
    other = add_upload(npz_bytes(tmp_path, **as_floats), "floats.npz", runs_dir, identity=BOB)

    assert one.digest == other.digest


def test_deleting_removes_only_the_deleters_ownership_and_the_files_go_with_the_last_owner(tmp_path, runs_dir):
    upload = add_upload(npz_bytes(tmp_path), "alice.npz", runs_dir, identity=ALICE)
    add_upload(zip_bytes(idx_members()), "bob.zip", runs_dir, identity=BOB)

    assert delete_upload(runs_dir, upload.digest, identity=ALICE) is False
    assert list_uploads(runs_dir, ALICE) == [] and is_stored(runs_dir, upload.digest)
    assert set(list_uploads(runs_dir, BOB)[0].owners) == {BOB.key}
    assert delete_upload(runs_dir, upload.digest, identity=BOB) is True
    assert not is_stored(runs_dir, upload.digest) and stored_files(runs_dir) == []


def test_only_owners_and_operators_delete_and_an_operator_deletes_for_everyone(tmp_path, runs_dir):
    upload = add_upload(npz_bytes(tmp_path), "alice.npz", runs_dir, identity=ALICE)

    with pytest.raises(PermissionRefused) as refused:
        delete_upload(runs_dir, upload.digest, identity=BOB)
    assert "not yours" in str(refused.value)
    assert delete_upload(runs_dir, upload.digest, identity=OPERATOR) is True
    assert stored_files(runs_dir) == []


def test_a_visitor_who_is_not_signed_in_uploads_nothing(tmp_path, runs_dir):
    with pytest.raises(PermissionRefused):
        add_upload(npz_bytes(tmp_path), "digits.npz", runs_dir, identity=reader())
    assert stored_files(runs_dir) == []


def test_an_upload_that_would_pass_the_owners_total_is_refused_and_nothing_more_is_kept(tmp_path, runs_dir):
    first = add_upload(npz_bytes(tmp_path), "first.npz", runs_dir, identity=ALICE)
    other = npz_bytes(tmp_path, y_test=(np.arange(12) + 1) % 10)
    before = stored_files(runs_dir)

    with pytest.raises(DatasetError) as refused:
        add_upload(other, "second.npz", runs_dir, identity=ALICE, per_owner=first.size + 1000)

    message = str(refused.value)
    assert message.startswith("second.npz") and "HYBRID_LAB_UPLOADS_PER_OWNER" in message, message
    assert stored_files(runs_dir) == before
    assert add_upload(other, "second.npz", runs_dir, identity=BOB, per_owner=first.size + 1000)  # Bob's own total


def test_guests_share_one_total_since_anyone_can_open_many_tabs(tmp_path, runs_dir):
    first = add_upload(npz_bytes(tmp_path), "first.npz", runs_dir, identity=new_guest())

    with pytest.raises(DatasetError) as refused:
        add_upload(npz_bytes(tmp_path, y_test=(np.arange(12) + 1) % 10), "second.npz", runs_dir,
                   identity=new_guest(), per_owner=first.size + 1000)

    assert "guests" in str(refused.value)


def made_days_ago(runs_dir, upload, days: float, owner: str | None = None) -> None:
    """As if an upload's ownerships (or `owner`'s) had been made `days` ago: its record edited as time would."""
    record_path = uploads_folder(runs_dir) / f"{upload.digest}.json"
    record = json.loads(record_path.read_text())
    for key, ownership in record["owners"].items():
        if owner is None or key == owner:
            ownership["uploaded_at"] = (datetime.now() - timedelta(days=days)).isoformat(timespec="seconds")
    record_path.write_text(json.dumps(record))


def test_uploads_of_guests_gone_a_day_are_let_go_so_new_guests_can_upload(tmp_path, runs_dir):
    gone_guest, visitor = new_guest(), new_guest()
    old = add_upload(npz_bytes(tmp_path), "old.npz", runs_dir, identity=gone_guest)
    shared = add_upload(npz_bytes(tmp_path), "shared.npz", runs_dir, identity=ALICE)  # the same data, Alice's too
    other = npz_bytes(tmp_path, y_test=(np.arange(12) + 1) % 10)
    with pytest.raises(DatasetError):  # the gone guest's upload still fills the guests' total
        add_upload(other, "new.npz", runs_dir, identity=visitor, per_owner=old.size + 1000)
    made_days_ago(runs_dir, old, 1.1, owner=gone_guest.key)

    new = add_upload(other, "new.npz", runs_dir, identity=visitor, per_owner=old.size + 1000)

    assert list_uploads(runs_dir, gone_guest) == []
    assert [upload.digest for upload in list_uploads(runs_dir, ALICE)] == [shared.digest]  # Alice keeps hers
    assert list_uploads(runs_dir, visitor) == [new]


def test_a_gone_guests_upload_goes_with_its_last_owner_unless_a_run_uses_it(tmp_path, runs_dir):
    guest = new_guest()
    used, unused = (add_upload(npz_bytes(tmp_path, y_test=(np.arange(12) + shift) % 10), f"{shift}.npz", runs_dir,
                               identity=guest) for shift in (0, 1))
    make_run(runs_dir, TrainConfig(source="uploaded", upload=used.digest), state=RunState.RUNNING,
                   owner=guest)  # trained by this process, which is alive
    for upload in (used, unused):
        made_days_ago(runs_dir, upload, 2)

    add_upload(npz_bytes(tmp_path, y_test=(np.arange(12) + 2) % 10), "new.npz", runs_dir, identity=new_guest())

    assert list_uploads(runs_dir, guest) == [read_upload_record(runs_dir, used.digest)]  # its run trains on
    assert not is_stored(runs_dir, unused.digest)
    assert not (uploads_folder(runs_dir) / f"{unused.digest}.json").exists()


def test_a_guests_ownership_whose_time_was_edited_to_nonsense_is_let_go(tmp_path, runs_dir):
    upload = add_upload(npz_bytes(tmp_path), "digits.npz", runs_dir, identity=new_guest())
    record_path = uploads_folder(runs_dir) / f"{upload.digest}.json"
    record = json.loads(record_path.read_text())
    next(iter(record["owners"].values()))["uploaded_at"] = "zzz"
    record_path.write_text(json.dumps(record))

    add_upload(npz_bytes(tmp_path, y_test=(np.arange(12) + 1) % 10), "new.npz", runs_dir, identity=new_guest())

    assert not is_stored(runs_dir, upload.digest)


def test_the_same_file_again_is_already_kept_and_costs_nothing_more(tmp_path, runs_dir):
    first = add_upload(npz_bytes(tmp_path), "digits.npz", runs_dir, identity=ALICE)

    again = add_upload(npz_bytes(tmp_path), "digits.npz", runs_dir, identity=ALICE, per_owner=first.size)

    assert again.digest == first.digest


def test_an_upload_in_use_by_a_training_run_is_not_deleted_under_it(tmp_path, runs_dir):
    upload = add_upload(npz_bytes(tmp_path), "digits.npz", runs_dir, identity=ALICE)
    run = make_run(runs_dir, TrainConfig(source="uploaded", upload=upload.digest), state=RunState.RUNNING,
                   owner=ALICE)  # trained by this process, which is alive

    with pytest.raises(ValueError) as refused:
        delete_upload(runs_dir, upload.digest, identity=ALICE)

    assert run.run_id in str(refused.value)
    assert is_stored(runs_dir, upload.digest)


# --- runs on uploads ------------------------------------------------------------------------------------------


def test_the_service_queues_runs_only_on_uploads_that_are_there_and_theirs(tmp_path, runs_dir, monkeypatch):
    monkeypatch.setattr(service, "ensure_pool", lambda runs_dir=None: None)
    upload = add_upload(npz_bytes(tmp_path), "digits.npz", runs_dir, identity=ALICE)
    config = TrainConfig(source="uploaded", upload=upload.digest, hidden_units=[16], steps=20)

    run = service.submit(config, runs_dir, identity=ALICE)
    with pytest.raises(PermissionRefused):
        service.submit(config, runs_dir, identity=BOB)
    with pytest.raises(UploadGone):
        service.submit(config.replace(upload="0" * 64), runs_dir, identity=ALICE)

    assert run.config.upload == upload.digest
    name, swept = service.submit_sweep(config, [service.sweeps.parse_axis("learning_rate", "0.1,0.5")], runs_dir,
                                       identity=ALICE)
    assert [each.config.upload for each in swept] == [upload.digest] * 2


def test_a_run_on_an_upload_records_its_hash_and_says_so_after_the_upload_is_gone(tmp_path, runs_dir):
    from core.evaluation import analyse_run
    from core.store import load_run
    from core.training import train
    from ui import texts

    upload = add_upload(zip_bytes(idx_members()), "my digits.zip", runs_dir, identity=ALICE)
    config = TrainConfig(source="uploaded", upload=upload.digest, hidden_units=[16], steps=20, eval_every=10)

    run = train(config, runs_dir)

    assert run.state is RunState.COMPLETED, run.message
    saved = (run.path / "config.json").read_text()
    assert upload.digest in saved and '"source": "uploaded"' in saved
    assert "my digits.zip" in run.summary.data_source and upload.digest[:12] in run.summary.data_source
    assert run.summary.data_sizes == {"train": 30, "test": 12}
    assert texts.data_label(run) == run.summary.data_source  # still there: nothing said about it

    delete_upload(runs_dir, upload.digest, identity=ALICE)
    run = load_run(run.run_id, runs_dir)

    assert run.config.upload == upload.digest  # the folder still says exactly what it trained on
    assert "my digits.zip" in texts.data_label(run) and texts.UPLOAD_GONE in texts.data_label(run)
    assert texts.short_data_label(run).endswith("· deleted")
    with pytest.raises(UploadGone) as gone:
        load_upload(runs_dir, upload.digest)
    assert upload.digest in str(gone.value)
    with pytest.raises(UploadGone):  # the Runs page's analysis says so too
        analyse_run(run.run_id, runs_dir)


def test_the_digest_is_of_the_content_not_of_the_file(tmp_path):
    arrays = small_arrays()
    canonical = {key: value.astype(np.uint8) for key, value in arrays.items()}
    changed = dict(canonical, y_test=(canonical["y_test"] + 1) % 10)

    assert content_digest(canonical) == content_digest({key: value.copy() for key, value in canonical.items()})
    assert content_digest(canonical) != content_digest(changed)


# --- the Train page ---------------------------------------------------------------------------------------------


def train_page(runs_dir, monkeypatch):
    """The Train page as the app serves it, at the machine (the operator), runs kept in `runs_dir`."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("HYBRID_LAB_RUNS", str(runs_dir))
    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "Home.py"), default_timeout=60)
    app.switch_page("pages/1_Train.py")
    return app.run()


def page_errors(app) -> list[str]:
    return [str(error.value).replace("\\", "") for error in app.error]


def test_the_train_page_says_why_an_upload_was_refused_in_one_sentence_and_keeps_nothing(runs_dir, monkeypatch):
    app = train_page(runs_dir, monkeypatch)

    app.file_uploader(key="upload_file").upload("digits.zip", zip_bytes({**idx_members(), "../../x": b"x"})).run()

    assert not app.exception, app.exception
    [error] = page_errors(app)
    assert error.startswith("Not uploaded: digits.zip: the member '../../x' points outside the archive"), error
    assert error.count(". ") == 0 and error.endswith(".")
    assert stored_files(runs_dir) == []
    assert app.selectbox(key="form_source").value == "auto"


def test_an_upload_on_the_train_page_is_kept_listed_chosen_and_deleted(runs_dir, monkeypatch, tmp_path):
    app = train_page(runs_dir, monkeypatch)

    app.file_uploader(key="upload_file").upload("my digits.npz", npz_bytes(tmp_path)).run()

    assert not app.exception, app.exception
    [upload] = list_uploads(runs_dir, OPERATOR)
    success = " ".join(str(box.value) for box in app.success).replace("\\", "")
    assert "Kept my digits.npz: 30 train + 12 test images, classes 0-9" in success
    assert app.selectbox(key="form_source").value == "uploaded"
    assert app.selectbox(key="form_upload").value == upload.digest  # chosen in the form at once
    assert not page_errors(app)  # the settings can train
    listed = " ".join(str(text.value) for text in app.markdown).replace("\\", "")
    assert "my digits.npz: 30 train + 12 test images" in listed

    app.button(key=f"upload_delete_{upload.digest}").click().run()

    assert stored_files(runs_dir) == []
    assert app.selectbox(key="form_upload").value is None
    assert any("needs upload" in error for error in page_errors(app))  # nothing to train on any more


@pytest.fixture
def served_to_guests(monkeypatch):
    """`--server.address 0.0.0.0`, opened from another machine: every tab a guest."""
    import streamlit.runtime.context
    from streamlit import config as streamlit_config

    class Handshake:
        headers = [("host", "192.168.1.20:8501"), ("origin", "http://192.168.1.20:8501")]
        cookies: dict = {}
        remote_ip = None

    monkeypatch.setattr(streamlit.runtime.context, "_get_client_context", lambda: Handshake())
    before = streamlit_config.get_option("server.address")
    streamlit_config.set_option("server.address", "0.0.0.0")
    yield
    streamlit_config.set_option("server.address", before)


def test_a_guest_uploads_within_the_total_all_guests_share(runs_dir, monkeypatch, served_to_guests):
    app = train_page(runs_dir, monkeypatch)
    assert "kept by all guests together" in " ".join(str(caption.value) for caption in app.caption)

    app.file_uploader(key="upload_file").upload("digits.zip", zip_bytes(idx_members())).run()

    assert not app.exception, app.exception
    [upload] = list_uploads(runs_dir, OPERATOR)
    [owner] = upload.owners
    assert owner.startswith("guest:")
    assert app.selectbox(key="form_upload").value == upload.digest


def test_the_runs_page_says_a_runs_upload_is_gone(tmp_path, runs_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from ui.texts import UPLOAD_GONE

    upload = add_upload(npz_bytes(tmp_path), "digits.npz", runs_dir, identity=OPERATOR)
    run = make_run(runs_dir, TrainConfig(source="uploaded", upload=upload.digest, hidden_units=[16], steps=20))
    delete_upload(runs_dir, upload.digest, identity=OPERATOR)
    monkeypatch.setenv("HYBRID_LAB_RUNS", str(runs_dir))
    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "Home.py"), default_timeout=60)
    app.switch_page("pages/2_Runs.py")
    app.query_params["run"] = run.run_id
    app.run()

    assert not app.exception, app.exception
    assert any(UPLOAD_GONE in str(caption.value) for caption in app.caption)
    [data] = app.dataframe[0].value["data"].tolist()
    assert data.endswith("· deleted"), data


def test_a_link_carries_an_upload_by_its_digest_and_names_a_bad_one():
    from core import links

    digest = "0123456789abcdef" * 4
    query = links.settings_query(TrainConfig(source="uploaded", upload=digest))

    assert query == {"source": "uploaded", "upload": digest}
    assert links.read_link(query).values["upload"] == digest
    [unused] = links.read_link({"source": "uploaded", "upload": "../../etc/passwd"}).unused
    assert unused.why is links.Unused.BAD_VALUE and "SHA-256" in unused.detail
    [withheld] = [param for param in links.read_link(query, withheld={"source": ("uploaded",)}).unused
                  if param.setting == "source"]
    assert withheld.why is links.Unused.NOT_OFFERED  # a reader of a sign-in server is offered no uploads


def test_a_bad_upload_limit_is_one_sentence_on_the_page_not_a_crash(runs_dir, monkeypatch):
    monkeypatch.setenv("HYBRID_LAB_MAX_UPLOAD", "a lot")

    app = train_page(runs_dir, monkeypatch)

    assert not app.exception, app.exception
    assert any("HYBRID_LAB_MAX_UPLOAD" in error for error in page_errors(app))
    assert not app.file_uploader


def test_kept_drawings_downloaded_as_mnist_npz_upload_again_as_a_dataset(runs_dir):
    from core import collection

    rng = np.random.default_rng(3)
    for label in [0] * 5 + [5] * 5:  # five of a digit: one of them held out
        collection.keep_drawing(runs_dir, rng.random((28, 28), dtype=np.float32), label, identity=ALICE)
    frozen = collection.freeze(runs_dir, identity=ALICE)

    upload = add_upload(collection.keras_npz(frozen), "my-drawings.npz", runs_dir, identity=ALICE)

    assert (upload.train + upload.test, upload.classes) == (10, (0, 5))
    assert upload.test == len(frozen.test_labels) > 0  # the held-out drawings are the test split
