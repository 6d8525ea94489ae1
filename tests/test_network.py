"""Tests for core.network: one network definition (the article's MLP or the CNN) that both engines and the
exported model.keras follow, and a model loader that refuses files that are missing, not models, not ours, or
that name code to run."""

from __future__ import annotations

import json
import warnings
import zipfile

import numpy as np
import pytest

from core.config import TrainConfig
from core.engines import engine_class, named_weights
from core.network import (
    ModelError,
    build_export_model,
    first_kernel_name,
    initial_weights,
    layer_sizes,
    layer_specs,
    load_model,
    make_layers,
    multiply_adds,
    weight_names,
    weight_shapes,
)
from tests.factories import TINY, small_offline_dataset

ARTICLE = TrainConfig()  # 784-128-128-10, relu, no dropout
# Two hidden layers with dropout between them: the names must skip the weightless dropout layers.
WITH_DROPOUT = TrainConfig(hidden_units=[32, 16], dropout_rate=0.25, steps=10, eval_every=10, source="offline")
CNN = TrainConfig(architecture="cnn", steps=10, eval_every=10, source="offline")
CNN_NAMES = ["reshape", "conv_1", "pool_1", "conv_2", "pool_2", "flatten", "hidden_1", "probabilities"]
CNN_WEIGHT_NAMES = ["conv_1/kernel", "conv_1/bias", "conv_2/kernel", "conv_2/bias", "hidden_1/kernel", "hidden_1/bias",
                    "probabilities/kernel", "probabilities/bias"]
CNN_WEIGHT_SHAPES = [(5, 5, 1, 32), (32,), (5, 5, 32, 64), (64,), (7 * 7 * 64, 128), (128,), (128, 10), (10,)]


# --- the layers, their names and sizes --------------------------------------------------------------


def test_article_layers_are_two_hidden_relu_layers_and_a_softmax_output():
    specs = layer_specs(ARTICLE)

    assert [spec.name for spec in specs] == ["hidden_1", "hidden_2", "probabilities"]
    assert [spec.kind for spec in specs] == ["dense", "dense", "dense"]
    assert [spec.units for spec in specs] == [128, 128, 10]
    assert [spec.activation for spec in specs] == ["relu", "relu", "softmax"]
    assert layer_sizes(ARTICLE) == [(784, 128), (128, 128), (128, 10)]


def test_dropout_follows_every_hidden_layer_when_the_rate_is_above_zero():
    specs = layer_specs(WITH_DROPOUT)

    assert [spec.name for spec in specs] == ["hidden_1", "dropout_1", "hidden_2", "dropout_2", "probabilities"]
    dropouts = [spec for spec in specs if spec.kind == "dropout"]
    assert [spec.rate for spec in dropouts] == [0.25, 0.25]
    assert len({spec.seed for spec in dropouts}) == 2  # each layer its own mask
    assert [spec.name for spec in layer_specs(WITH_DROPOUT.replace(dropout_rate=0.0))] == [
        "hidden_1", "hidden_2", "probabilities"]


def test_weight_names_are_kernel_and_bias_of_each_dense_layer_in_order():
    assert weight_names(ARTICLE) == ["hidden_1/kernel", "hidden_1/bias", "hidden_2/kernel", "hidden_2/bias",
                                     "probabilities/kernel", "probabilities/bias"]
    assert weight_names(WITH_DROPOUT) == weight_names(ARTICLE)  # dropout has no weights


def test_the_cnn_is_two_convolutions_with_pooling_then_a_dense_layer_and_the_softmax():
    specs = layer_specs(CNN)

    assert [spec.name for spec in specs] == CNN_NAMES
    assert [spec.kind for spec in specs] == ["reshape", "conv", "pool", "conv", "pool", "flatten", "dense", "dense"]
    assert specs[0].target_shape == (28, 28, 1)
    convolutions = [spec for spec in specs if spec.kind == "conv"]
    assert [(spec.units, spec.kernel_size, spec.activation) for spec in convolutions] == [(32, 5, "relu"), (64, 5, "relu")]
    assert [spec.pool_size for spec in specs if spec.kind == "pool"] == [2, 2]
    assert [(spec.units, spec.activation) for spec in specs if spec.kind == "dense"] == [(128, "relu"), (10, "softmax")]
    # The activation setting reaches every hidden layer; the MLP's hidden_units do not matter to the CNN.
    assert {spec.activation for spec in layer_specs(CNN.replace(activation="tanh")) if spec.kind == "conv"} == {"tanh"}
    assert layer_specs(CNN.replace(hidden_units=[16, 16])) == specs


def test_the_cnn_gets_one_dropout_layer_after_its_dense_layer():
    names = [spec.name for spec in layer_specs(CNN.replace(dropout_rate=0.5))]

    assert names == [*CNN_NAMES[:-1], "dropout_1", "probabilities"]
    assert weight_names(CNN.replace(dropout_rate=0.5)) == CNN_WEIGHT_NAMES


def test_cnn_weight_names_shapes_and_sizes_cover_convolutions_and_dense_layers_in_order():
    assert weight_names(CNN) == CNN_WEIGHT_NAMES
    assert weight_shapes(CNN) == CNN_WEIGHT_SHAPES
    # A convolution's kernel seen as a matrix: k*k*in rows, one column per filter.
    assert layer_sizes(CNN) == [(25, 32), (800, 64), (3136, 128), (128, 10)]


def test_the_first_kernel_is_the_first_layer_with_weights():
    assert first_kernel_name(ARTICLE) == "hidden_1/kernel"
    assert first_kernel_name(CNN) == "conv_1/kernel"
    assert first_kernel_name(CNN) in weight_names(CNN) and first_kernel_name(ARTICLE) in weight_names(ARTICLE)


def test_multiply_adds_count_a_weight_per_image_for_dense_layers_and_every_position_for_convolutions():
    assert multiply_adds(ARTICLE) == 784 * 128 + 128 * 128 + 128 * 10
    by_hand = 28 * 28 * 5 * 5 * 1 * 32 + 14 * 14 * 5 * 5 * 32 * 64 + 3136 * 128 + 128 * 10
    assert multiply_adds(CNN) == by_hand


def test_cnn_initial_weights_are_glorot_with_the_receptive_field_in_both_fans():
    weights = initial_weights(CNN)

    assert [w.shape for w in weights] == CNN_WEIGHT_SHAPES
    assert all(w.dtype == np.float32 for w in weights)
    assert all((bias == 0).all() for bias in weights[1::2])
    for kernel, (fan_in, fan_out) in zip(weights[0::2], [(25 * 1, 25 * 32), (25 * 32, 25 * 64), (3136, 128),
                                                          (128, 10)]):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        assert 0.9 * limit < np.abs(kernel).max() <= limit  # uniform up to the limit: the largest comes close
    assert not np.array_equal(weights[0], initial_weights(CNN.replace(seed=1))[0])


def test_the_mlp_initial_weights_are_unchanged_by_the_cnn():
    """The MLP's arrays are drawn as before the CNN existed: the first kernel's first values, pinned."""
    rng = np.random.default_rng(ARTICLE.seed)
    limit = np.sqrt(6.0 / (784 + 128))
    expected = rng.uniform(-limit, limit, size=(784, 128)).astype(np.float32)

    np.testing.assert_array_equal(initial_weights(ARTICLE)[0], expected)


@pytest.mark.parametrize("package", ["keras", "tf_keras"])
def test_both_keras_packages_make_the_same_cnn_layers(package):
    import importlib

    layers = make_layers(CNN, importlib.import_module(package).layers)

    assert [layer.name for layer in layers] == CNN_NAMES
    assert [type(layer).__name__ for layer in layers] == ["Reshape", "Conv2D", "MaxPooling2D", "Conv2D",
                                                          "MaxPooling2D", "Flatten", "Dense", "Dense"]
    conv = layers[1].get_config()
    assert (conv["filters"], tuple(conv["kernel_size"]), conv["padding"], conv["activation"]) == (32, (5, 5), "same",
                                                                                                  "relu")
    assert tuple(layers[2].get_config()["pool_size"]) == (2, 2)


def test_initial_weights_have_the_layer_sizes_and_follow_the_seed():
    weights = initial_weights(WITH_DROPOUT)

    assert [w.shape for w in weights] == [(784, 32), (32,), (32, 16), (16,), (16, 10), (10,)]
    assert all(w.dtype == np.float32 for w in weights)
    assert all((bias == 0).all() for bias in weights[1::2])
    limit = np.sqrt(6.0 / (784 + 32))  # Glorot uniform
    assert 0 < np.abs(weights[0]).max() <= limit
    again = initial_weights(WITH_DROPOUT)
    other = initial_weights(WITH_DROPOUT.replace(seed=WITH_DROPOUT.seed + 1))
    assert all(np.array_equal(a, b) for a, b in zip(weights, again))
    assert not np.array_equal(weights[0], other[0])


# --- both engines build that network ---------------------------------------------------------------


@pytest.fixture(scope="module")
def small_dataset():
    return small_offline_dataset(test=100)


@pytest.mark.parametrize("engine_name", ["function", "session"])
@pytest.mark.parametrize("config", [WITH_DROPOUT, CNN.replace(dropout_rate=0.25)], ids=["mlp", "cnn"])
def test_each_engines_weights_carry_the_network_names_and_sizes(engine_name, config, small_dataset, tmp_path):
    config = config.replace(engine=engine_name)
    engine = engine_class(engine_name)(config, small_dataset, tmp_path)
    try:
        weights = named_weights(engine, config)
        probabilities = engine.predict(small_dataset.x_test[:3])
    finally:
        engine.close()

    assert list(weights) == weight_names(config)
    assert [value.shape for value in weights.values()] == weight_shapes(config)
    if config.architecture == "mlp":
        expected_shapes = [shape for fan_in, fan_out in layer_sizes(config) for shape in ((fan_in, fan_out), (fan_out,))]
        assert weight_shapes(config) == expected_shapes
    # Both engines start from the shared initial weights, in the same order as the names.
    for value, initial in zip(weights.values(), initial_weights(config)):
        np.testing.assert_array_equal(value, initial)
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("engine_name", ["function", "session"])
def test_the_exported_cnn_predicts_what_the_engine_predicts(engine_name, small_dataset, tmp_path):
    """The engines feed flat images to the CNN's reshape layer, the export 28x28 images: the same pixels must land
    in the same places, or the saved model would disagree with the run that trained it."""
    config = CNN.replace(engine=engine_name, steps=20)
    engine = engine_class(engine_name)(config, small_dataset, tmp_path)
    try:
        engine.train_chunk(np.arange(20 * config.batch_size, dtype=np.int32).reshape(20, config.batch_size) % 500, 0)
        trained = engine.weights()
        from_engine = engine.predict(small_dataset.x_test)
    finally:
        engine.close()
    assert not np.array_equal(trained[0], initial_weights(config)[0])  # the steps moved the weights

    exported = np.asarray(build_export_model(config, trained)(small_dataset.x_test, training=False))

    np.testing.assert_allclose(exported, from_engine, atol=1e-5)
    assert (exported.argmax(axis=1) == from_engine.argmax(axis=1)).all()


# --- the exported model --------------------------------------------------------------------------


def test_exported_model_layers_are_named_as_the_specs_and_hold_the_weights():
    weights = initial_weights(WITH_DROPOUT)

    model = build_export_model(WITH_DROPOUT, weights)

    assert [layer.name for layer in model.layers] == ["flatten", *(spec.name for spec in layer_specs(WITH_DROPOUT))]
    kernel, bias = model.get_layer("hidden_2").get_weights()
    np.testing.assert_array_equal(kernel, weights[2])
    np.testing.assert_array_equal(bias, weights[3])
    assert model.get_layer("probabilities").get_config()["activation"] == "softmax"


def test_the_exported_cnn_takes_28x28_images_with_its_layers_named_as_the_specs():
    weights = initial_weights(CNN)

    model = build_export_model(CNN, weights)

    assert [layer.name for layer in model.layers] == CNN_NAMES  # its own reshape takes the image: no extra flatten
    assert tuple(model.input_shape) == (None, 28, 28) and tuple(model.output_shape) == (None, 10)
    kernel, bias = model.get_layer("conv_2").get_weights()
    np.testing.assert_array_equal(kernel, weights[2])
    np.testing.assert_array_equal(bias, weights[3])


def test_a_saved_cnn_keeps_the_model_keras_contract(tmp_path):
    path = tmp_path / "model.keras"
    build_export_model(CNN, initial_weights(CNN)).save(path)

    model = load_model(path)
    images = np.random.default_rng(0).random((2, 28, 28), dtype=np.float32)
    probabilities = np.asarray(model(images, training=False))

    assert probabilities.shape == (2, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert [layer.name for layer in model.layers] == CNN_NAMES


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A valid model.keras of the TINY network, saved as the trainer saves one."""
    path = tmp_path_factory.mktemp("model") / "model.keras"
    build_export_model(TINY, initial_weights(TINY)).save(path)
    return path


def test_a_saved_model_loads_and_maps_digits_to_ten_probabilities(saved_model):
    model = load_model(saved_model)
    images = np.random.default_rng(0).random((2, 28, 28), dtype=np.float32)

    probabilities = np.asarray(model(images, training=False))

    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert [layer.name for layer in model.layers] == ["flatten", "hidden_1", "probabilities"]


# --- load_model refuses what it cannot use, naming the file ------------------------------------------


def refused(path) -> str:
    """The ModelError message load_model gives for `path` (failing the test if it loads)."""
    with pytest.raises(ModelError) as raised:
        load_model(path)
    assert isinstance(raised.value, ValueError)
    message = str(raised.value)
    assert f"{path.parent.name}/{path.name}" in message  # the run and the file...
    assert str(path.parent.parent) not in message  # ...but not where the server keeps them
    return message


def test_a_missing_file_is_a_model_error(tmp_path):
    assert "missing" in refused(tmp_path / "model.keras")


def test_random_bytes_are_a_model_error(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(np.random.default_rng(1).bytes(4096))

    assert "not a Keras model file" in refused(path)


def test_a_zip_that_is_not_a_keras_model_is_a_model_error(tmp_path):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "a zip archive, but no model in it")

    assert "cannot be loaded" in refused(path)


def test_a_model_with_the_wrong_shapes_is_a_model_error(tmp_path):
    import keras

    path = tmp_path / "model.keras"
    keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")]).save(path)

    assert "expected (None, 28, 28) -> (None, 10)" in refused(path)


def tampered_copy(original, target, marker):
    """`original` with its first Dense layer's config.json entry renamed to os.system(touch marker)."""
    with zipfile.ZipFile(original) as source:
        members = {name: source.read(name) for name in source.namelist()}
    config = json.loads(members["config.json"])
    layers = config["config"]["layers"]
    dense = next(layer for layer in layers if layer["class_name"] == "Dense")
    dense.update({"module": "os", "class_name": "system", "registered_name": None,
                  "config": {"command": f"touch {marker}"}})
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_a_model_naming_arbitrary_code_is_refused_without_running_it(saved_model, tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.keras"
    tampered_copy(saved_model, path, marker)
    # The edit is really in the file: the layer now names os.system.
    with zipfile.ZipFile(path) as archive:
        assert '"module": "os", "class_name": "system"' in archive.read("config.json").decode()

    message = refused(path)

    assert "cannot be loaded" in message
    assert not marker.exists(), "loading the model ran the command it named"


def test_a_model_without_an_input_shape_is_a_model_error(tmp_path):
    import keras

    path = tmp_path / "model.keras"
    # A valid Keras file, but of a Sequential that was never built: it has no input shape to check.
    unbuilt = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras warns that the model was never built
        unbuilt.save(path)

    refused(path)
