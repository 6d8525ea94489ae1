"""Kept drawings: kept per owner, listed, deleted one by one by their owner, frozen, downloaded as mnist.npz."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from core import collection
from core.access import OPERATOR, PermissionRefused, new_guest, reader
from core.collection import CollectionError
from core.data import _as_dataset


def digit_image(value: float) -> np.ndarray:
    image = np.zeros((28, 28), np.float32)
    image[4:24, 10:18] = value
    return image


def keep(runs_dir, label, count, identity=OPERATOR, start=0.1):
    return [collection.keep_drawing(runs_dir, digit_image(start + index / 100), label, identity=identity)
            for index in range(count)]


def test_kept_drawings_belong_to_their_owner_and_are_listed_by_digit(tmp_path):
    guest = new_guest()
    keep(tmp_path, 7, 2)
    keep(tmp_path, 3, 1)
    keep(tmp_path, 1, 1, identity=guest)

    mine = collection.list_drawings(tmp_path, identity=OPERATOR)
    assert [d.label for d in mine] == [3, 7, 7]
    assert mine[1].image.dtype == np.float32 and mine[1].image.shape == (28, 28)
    assert [d.label for d in collection.list_drawings(tmp_path, identity=guest)] == [1]
    # Nothing a visitor sends becomes a path: the folder is a hash of the key.
    assert guest.key not in str(collection.owner_folder(tmp_path, guest.key))


def test_an_owner_deletes_their_drawings_one_by_one_and_never_anothers(tmp_path):
    guest = new_guest()
    first, second = keep(tmp_path, 5, 2)
    with pytest.raises(CollectionError, match="no kept drawing"):
        collection.delete_drawing(tmp_path, first.drawing_id, identity=guest)
    with pytest.raises(CollectionError, match="not the id of a kept drawing"):
        collection.delete_drawing(tmp_path, "../../config", identity=OPERATOR)

    collection.delete_drawing(tmp_path, first.drawing_id, identity=OPERATOR)

    assert [d.drawing_id for d in collection.list_drawings(tmp_path, identity=OPERATOR)] == [second.drawing_id]


def test_a_visitor_not_signed_in_keeps_nothing(tmp_path):
    with pytest.raises(PermissionRefused, match="sign in"):
        collection.keep_drawing(tmp_path, digit_image(0.5), 1, identity=reader())
    assert not (tmp_path / collection.DATA_FOLDER).exists()


@pytest.mark.parametrize("image, label, expected", [
    (np.zeros((28, 27), np.float32), 1, "float \\(28, 28\\)"),
    (np.full((28, 28), np.nan, np.float32), 1, "no NaN"),
    (digit_image(0.5), 10, "from 0 to 9"),
    (digit_image(0.5), True, "from 0 to 9"),
])
def test_what_is_not_a_preprocessed_digit_is_refused(tmp_path, image, label, expected):
    with pytest.raises(CollectionError, match=expected):
        collection.keep_drawing(tmp_path, image, label, identity=OPERATOR)


def test_every_fifth_drawing_of_each_digit_is_held_out_in_the_order_kept():
    labels = np.array([0] * 11 + [1] * 4 + [2] * 5)
    held_out = collection.held_out_mask(labels)
    assert list(np.flatnonzero(held_out)) == [4, 9, 19]


def test_freezing_names_the_snapshot_by_its_content_and_needs_a_held_out_drawing(tmp_path):
    keep(tmp_path, 0, 4)
    with pytest.raises(CollectionError, match="at least 5 kept drawings of one digit.*4 of 0"):
        collection.freeze(tmp_path, identity=OPERATOR)
    keep(tmp_path, 0, 1, start=0.9)
    keep(tmp_path, 8, 2)

    frozen = collection.freeze(tmp_path, identity=OPERATOR)
    again = collection.freeze(tmp_path, identity=OPERATOR)
    loaded = collection.load_snapshot(tmp_path, OPERATOR.key, frozen.snapshot_id)

    assert again.snapshot_id == frozen.snapshot_id
    assert loaded.counts() == {0: 5, 8: 2} and loaded.test_labels.tolist() == [0]
    np.testing.assert_array_equal(loaded.test_images[0], digit_image(0.9))
    # Keeping one more makes another snapshot; the frozen one stays as it was.
    keep(tmp_path, 8, 1)
    assert collection.freeze(tmp_path, identity=OPERATOR).snapshot_id != frozen.snapshot_id
    assert collection.load_snapshot(tmp_path, OPERATOR.key, frozen.snapshot_id).counts() == {0: 5, 8: 2}


def test_a_snapshot_is_found_only_among_its_owners_and_checked_against_its_name(tmp_path):
    keep(tmp_path, 4, 5)
    frozen = collection.freeze(tmp_path, identity=OPERATOR)
    with pytest.raises(CollectionError, match="no snapshot"):
        collection.load_snapshot(tmp_path, new_guest().key, frozen.snapshot_id)
    with pytest.raises(CollectionError, match="not a snapshot id"):
        collection.load_snapshot(tmp_path, OPERATOR.key, "../../x")
    path = collection.owner_folder(tmp_path, OPERATOR.key) / collection.SNAPSHOTS_FOLDER / f"{frozen.snapshot_id}.npz"
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["labels"][0] = 9
    np.savez(path, **arrays)
    with pytest.raises(CollectionError, match="does not hold what its name says"):
        collection.load_snapshot(tmp_path, OPERATOR.key, frozen.snapshot_id)


def test_the_download_is_an_mnist_npz_the_lab_reads_back_as_a_dataset(tmp_path):
    keep(tmp_path, 2, 6)
    keep(tmp_path, 6, 5)
    frozen = collection.freeze(tmp_path, identity=OPERATOR)

    with np.load(io.BytesIO(collection.keras_npz(frozen)), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in ("x_train", "y_train", "x_test", "y_test")}

    assert arrays["x_train"].dtype == np.uint8 and arrays["x_train"].shape == (9, 28, 28)
    assert arrays["y_test"].tolist() == [2, 6]
    dataset = _as_dataset(arrays, "mnist", "path", "my drawings", "my-drawings.npz")
    np.testing.assert_allclose(dataset.x_test, frozen.test_images, atol=0.5 / 255)


def test_guests_keep_drawings_within_one_total_for_all_of_them(tmp_path, monkeypatch):
    # A guest is one browser tab: a script opening tab after tab must not fill the disk 3 MB at a time.
    monkeypatch.setattr(collection, "MAX_GUEST_DRAWINGS", 3)
    keep(tmp_path, 1, 2, identity=new_guest())
    keep(tmp_path, 2, 1, identity=new_guest())

    with pytest.raises(CollectionError, match="guests have kept 3 drawings together"):
        keep(tmp_path, 3, 1, identity=new_guest())

    keep(tmp_path, 4, 1, identity=OPERATOR)  # people who are not guests keep theirs as before
    assert len(collection.list_drawings(tmp_path, identity=OPERATOR)) == 1


def test_a_guests_collection_untouched_for_a_day_is_let_go_when_a_guest_keeps_a_drawing(tmp_path, monkeypatch):
    monkeypatch.setattr(collection, "MAX_GUEST_DRAWINGS", 3)
    gone_tab, open_tab = new_guest(), new_guest()
    keep(tmp_path, 1, 2, identity=gone_tab)
    keep(tmp_path, 5, 1, identity=open_tab)
    keep(tmp_path, 7, 1, identity=OPERATOR)
    a_day_ago = collection.time.time() - collection.GUEST_KEEP_SECONDS - 60
    for owner in (gone_tab.key, OPERATOR.key):  # the operator's is as old: never let go
        folder = collection.owner_folder(tmp_path, owner)
        for path in (folder / collection.DRAWINGS_FOLDER, folder):
            os.utime(path, (a_day_ago, a_day_ago))

    keep(tmp_path, 9, 1, identity=new_guest())  # the total would be reached with the gone tab's two

    assert not collection.owner_folder(tmp_path, gone_tab.key).exists()
    assert [d.label for d in collection.list_drawings(tmp_path, identity=open_tab)] == [5]
    assert [d.label for d in collection.list_drawings(tmp_path, identity=OPERATOR)] == [7]


def test_a_guests_folder_is_told_from_a_persons_by_name_without_its_key(tmp_path):
    guest, person = new_guest(), OPERATOR
    assert collection.owner_folder(tmp_path, guest.key).name.startswith(collection.GUEST_PREFIX)
    assert not collection.owner_folder(tmp_path, person.key).name.startswith(collection.GUEST_PREFIX)
    assert guest.key.split(":")[-1] not in collection.owner_folder(tmp_path, guest.key).name
