"""Tests for core.insight (first-layer images, saliency, top units) and the run store's first_layer.npy.

Saliency and top units are checked on the model.keras of a real tiny run against what they claim to be:
the gradient of the predicted probability (by finite differences), and the layers' activations (by numpy
from the model's own weights, and by a Keras sub-model for a convolutional network).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import keras
import numpy as np
import pytest

from core import insight
from core.data import load_dataset
from core.network import load_model
from core.records import FIRST_LAYER_FILE, RunState
from core.store import load_run
from core.training import train
from tests.factories import TINY, make_run
from tests.tensorboard_events import RunEvents


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train(TINY, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def model(tiny_run):
    return load_model(tiny_run.model_path)


@pytest.fixture(scope="module")
def digit():
    """A real test digit: the first of the offline sample's test split."""
    return load_dataset("mnist", "offline").x_test[0]


def border_mask(width: int = 4) -> np.ndarray:
    """The outer frame of a 28 x 28 image: MNIST centres its digits in the middle 20 x 20, so no ink there."""
    mask = np.ones((28, 28), bool)
    mask[width:-width, width:-width] = False
    return mask


# --- first_layer_images -------------------------------------------------------------------------------


def test_first_layer_images_of_a_dense_kernel_are_each_units_weights_over_the_pixels():
    kernel = np.random.default_rng(0).normal(size=(784, 16)).astype(np.float64)

    images = insight.first_layer_images(kernel)

    assert images.shape == (16, 28, 28) and images.dtype == np.float32
    for unit in (0, 7, 15):
        np.testing.assert_array_equal(images[unit], kernel[:, unit].reshape(28, 28).astype(np.float32))
    assert images[3, 2, 5] == np.float32(kernel[2 * 28 + 5, 3])  # row 2, column 5 is pixel 61: raw, not rescaled


def test_first_layer_images_of_a_conv_kernel_are_each_filters_k_by_k_weights():
    kernel = np.random.default_rng(1).normal(size=(5, 5, 1, 32)).astype(np.float32)

    images = insight.first_layer_images(kernel)

    assert images.shape == (32, 5, 5) and images.dtype == np.float32
    for channel in (0, 31):
        np.testing.assert_array_equal(images[channel], kernel[:, :, 0, channel])
    assert images[4, 1, 3] == kernel[1, 3, 0, 4]


@pytest.mark.parametrize("shape", [(100, 16), (5, 5, 3, 8), (784,), (5, 4, 1, 8)])
def test_first_layer_images_refuses_what_is_not_a_first_layer_kernel(shape):
    with pytest.raises(ValueError, match="first-layer kernel"):
        insight.first_layer_images(np.zeros(shape, np.float32))


def test_a_trained_run_keeps_its_final_first_layer_next_to_its_model(tiny_run, model):
    images = load_run(tiny_run.run_id, tiny_run.path.parent).read_first_layer()

    # The last evaluation is at the last step, so the file holds the weights the model was saved with.
    assert images is not None and images.shape == (16, 28, 28)
    np.testing.assert_array_equal(images, insight.first_layer_images(model.get_layer("hidden_1").get_weights()[0]))


# --- saliency -----------------------------------------------------------------------------------------


def test_saliency_is_a_non_negative_map_brightest_on_the_ink(model, digit):
    saliency = insight.saliency(model, digit)

    assert saliency.shape == (28, 28)
    assert (saliency >= 0).all() and saliency.max() > 0
    ink = digit > 0.5
    assert ink.sum() > 50  # a real digit, not an empty image
    # Pixels of the stroke move the answer more than the empty frame around the digit.
    assert saliency[ink].mean() > 1.2 * saliency[border_mask()].mean()


def test_saliency_is_the_gradient_of_the_predicted_probability(model, digit):
    saliency = insight.saliency(model, digit)
    predicted = int(np.argmax(model(digit[np.newaxis], training=False)[0]))
    epsilon = 1e-3

    def probability(image):
        return float(np.asarray(model(image[np.newaxis].astype(np.float32), training=False))[0, predicted])

    for row, column in [np.unravel_index(np.argmax(saliency), saliency.shape), (14, 14), (10, 17)]:
        nudge = np.zeros_like(digit)
        nudge[row, column] = epsilon
        finite_difference = (probability(digit + nudge) - probability(digit - nudge)) / (2 * epsilon)
        assert saliency[row, column] == pytest.approx(abs(finite_difference), rel=0.05, abs=1e-4)


def test_saliency_refuses_an_image_that_is_not_28_by_28(model):
    with pytest.raises(ValueError, match="28, 28"):
        insight.saliency(model, np.zeros((28, 27), np.float32))


# --- top units ----------------------------------------------------------------------------------------


def test_top_units_of_the_mlp_are_its_most_active_hidden_units(model, digit):
    kernel, bias = model.get_layer("hidden_1").get_weights()
    activations = np.maximum(digit.reshape(784) @ kernel + bias, 0)  # relu(x W + b), by hand

    top = insight.top_units(model, digit, count=5)

    assert [name for name, _ in top] == ["hidden_1"]  # the output layer is not a hidden layer
    units = top[0][1]
    assert len(units) == 5
    values = [value for _, value in units]
    assert values == sorted(values, reverse=True)
    assert values[0] == pytest.approx(activations.max(), rel=1e-5)
    for index, value in units:
        assert value == pytest.approx(activations[index], rel=1e-5, abs=1e-6)
    listed = {index for index, _ in units}
    assert len(listed) == 5
    assert all(activations[other] <= values[-1] for other in set(range(16)) - listed)  # none left out is higher
    assert values[0] > 0  # the digit excites some unit: the check above is not about a dead layer


def test_top_units_of_a_deeper_mlp_list_each_hidden_layer(tmp_path, digit):
    run = train(TINY.replace(hidden_units=[16, 32], steps=5, eval_every=5), tmp_path)
    model = load_model(run.model_path)
    sub_model = keras.Model(model.inputs[0], [model.get_layer("hidden_1").output, model.get_layer("hidden_2").output])
    expected = [np.asarray(output)[0] for output in sub_model(digit[np.newaxis], training=False)]

    top = insight.top_units(model, digit, count=3)

    assert [name for name, _ in top] == ["hidden_1", "hidden_2"]
    for (_, units), activations in zip(top, expected):
        assert [index for index, _ in units] == list(np.argsort(-activations, kind="stable")[:3])
        np.testing.assert_allclose([value for _, value in units], np.sort(activations)[::-1][:3], rtol=1e-6)


def convolutional_model() -> keras.Model:
    """A small CNN keeping the model.keras contract, named as core.network names its layers."""
    model = keras.Sequential([
        keras.Input((28, 28), name="image"),
        keras.layers.Reshape((28, 28, 1), name="reshape"),
        keras.layers.Conv2D(8, 5, padding="same", activation="relu", name="conv_1"),
        keras.layers.MaxPooling2D(2, name="pool_1"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(12, activation="relu", name="hidden_1"),
        keras.layers.Dense(10, activation="softmax", name="probabilities"),
    ])
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.3, size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def test_top_units_of_a_conv_layer_are_its_filters_averaged_over_space(digit):
    model = convolutional_model()
    sub_model = keras.Model(model.inputs[0], [model.get_layer("conv_1").output, model.get_layer("hidden_1").output])
    feature_maps, hidden = (np.asarray(output)[0] for output in sub_model(digit[np.newaxis], training=False))
    filters = feature_maps.mean(axis=(0, 1))

    top = insight.top_units(model, digit, count=4)

    assert [name for name, _ in top] == ["conv_1", "hidden_1"]  # layers without weights are skipped
    conv_units, hidden_units = top[0][1], top[1][1]
    assert [index for index, _ in conv_units] == list(np.argsort(-filters, kind="stable")[:4])
    np.testing.assert_allclose([value for _, value in conv_units], np.sort(filters)[::-1][:4], rtol=1e-5)
    assert [index for index, _ in hidden_units] == list(np.argsort(-hidden, kind="stable")[:4])
    saliency = insight.saliency(model, digit)
    assert saliency.shape == (28, 28) and saliency.max() > 0


def test_a_cnn_run_draws_its_first_convolutions_filters(tmp_path, digit):
    run = train(TINY.replace(architecture="cnn", steps=6, eval_every=3), tmp_path)
    model = load_model(run.model_path)

    images = run.read_first_layer()

    assert run.state is RunState.COMPLETED, run.message
    assert images.shape == (32, 5, 5)
    np.testing.assert_array_equal(images, insight.first_layer_images(model.get_layer("conv_1").get_weights()[0]))
    events = RunEvents(run.path)
    assert events.steps("first_layer_weights") == [3, 6]
    width, height = events.values("first_layer_weights")[-1][:2]
    assert (int(width), int(height)) == (6 * 5 + 5, 6 * 5 + 5)  # 32 filters in a 6 x 6 grid, 1 px apart
    assert [name for name, _ in insight.top_units(model, digit, count=2)] == ["conv_1", "conv_2", "hidden_1"]


def test_top_units_count_larger_than_the_layer_gives_every_unit(model, digit):
    top = insight.top_units(model, digit, count=100)

    assert sorted(index for index, _ in top[0][1]) == list(range(16))


# --- first_layer.npy in the run store -------------------------------------------------------------------


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path)


def test_first_layer_round_trip(run):
    images = np.random.default_rng(4).normal(size=(16, 28, 28)).astype(np.float32)

    run.write_first_layer(images)
    read = load_run(run.run_id, run.path.parent).read_first_layer()

    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, images)
    assert sorted(path.name for path in run.path.iterdir() if "first_layer" in path.name) == [FIRST_LAYER_FILE]


def test_first_layer_is_replaced_at_each_write(run):
    run.write_first_layer(np.zeros((4, 5, 5), np.float32))
    run.write_first_layer(np.ones((32, 5, 5), np.float32))

    np.testing.assert_array_equal(run.read_first_layer(), np.ones((32, 5, 5), np.float32))


def test_first_layer_absent_reads_as_none(run):
    assert not (run.path / FIRST_LAYER_FILE).exists()
    assert run.read_first_layer() is None


@pytest.mark.parametrize("content", [b"", b"not a numpy file at all", b"\x93NUMPY\x01\x00garbage", bytes(range(256))])
def test_first_layer_garbage_reads_as_none_and_leaves_the_run_readable(run, content):
    (run.path / FIRST_LAYER_FILE).write_bytes(content)

    reread = load_run(run.run_id, run.path.parent)

    assert reread.read_first_layer() is None
    assert reread.damaged is None and reread.state is RunState.COMPLETED  # a view, not the truth


@pytest.mark.parametrize("array", [
    np.zeros((28, 28), np.float32),  # one image, not a stack
    np.zeros((2, 28, 28, 1), np.float32),
    np.zeros((2, 29, 28), np.float32),  # larger than an MNIST image
    np.zeros((1025, 5, 5), np.float32),  # more units than a layer may have
    np.zeros((0, 28, 28), np.float32),
    np.zeros((4, 28, 28), np.int32),  # not weights
    np.array([[["x"]]]),
], ids=["2d", "4d", "too-tall", "too-many", "empty", "integers", "text"])
def test_first_layer_of_the_wrong_kind_reads_as_none(run, array):
    np.save(run.path / FIRST_LAYER_FILE, array)

    assert run.read_first_layer() is None


def test_first_layer_with_pickled_objects_is_never_unpickled(run):
    unpickled = []

    class Marker:
        def __reduce__(self):
            return (unpickled.append, ("ran",))

    np.save(run.path / FIRST_LAYER_FILE, np.array([[[Marker()]]], dtype=object), allow_pickle=True)

    assert run.read_first_layer() is None
    assert unpickled == []


def test_first_layer_that_is_cut_short_reads_as_none(run):
    run.write_first_layer(np.ones((16, 28, 28), np.float32))
    path = run.path / FIRST_LAYER_FILE
    path.write_bytes(path.read_bytes()[:1000])  # the header says 16 x 28 x 28; the data stops early

    assert run.read_first_layer() is None


def test_first_layer_that_is_a_folder_reads_as_none(run):
    (run.path / FIRST_LAYER_FILE).mkdir()

    assert run.read_first_layer() is None
    assert load_run(run.run_id, run.path.parent).damaged is None


@pytest.mark.parametrize("shape", [(28, 28), (1025, 5, 5), (2, 29, 29)])
def test_write_first_layer_refuses_what_read_first_layer_would(run, shape):
    with pytest.raises(ValueError, match="units, height, width"):
        run.write_first_layer(np.zeros(shape, np.float32))
    assert not (run.path / FIRST_LAYER_FILE).exists()


def test_a_failed_first_layer_write_leaves_the_previous_file_and_no_temp_file(run, monkeypatch):
    before = set(os.listdir(run.path))
    previous = np.full((3, 5, 5), 7.0, np.float32)
    run.write_first_layer(previous)
    real_write_bytes = Path.write_bytes

    def disk_full(path, data):
        real_write_bytes(path, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OSError, match="No space left") as raised:
        run.write_first_layer(np.zeros((3, 5, 5), np.float32))
    monkeypatch.undo()

    assert raised.value.errno == errno.ENOSPC and Path(raised.value.filename).name == FIRST_LAYER_FILE
    assert set(os.listdir(run.path)) == before | {FIRST_LAYER_FILE}
    np.testing.assert_array_equal(run.read_first_layer(), previous)


def test_a_failed_rename_leaves_no_temp_file(run, monkeypatch):
    before = set(os.listdir(run.path))

    def refuse(source, destination):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        run.write_first_layer(np.zeros((3, 5, 5), np.float32))
    monkeypatch.undo()

    assert set(os.listdir(run.path)) == before
