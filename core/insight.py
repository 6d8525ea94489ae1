"""What a network learned and why it answers as it does: first-layer weights as images, saliency, top units.

`first_layer_images` needs only numpy (the trainer calls it at each evaluation); `saliency` and `top_units`
take a loaded model.keras (float32 (N, 28, 28) in [0, 1] -> (N, 10), see core.network.load_model) and import
TensorFlow and Keras only when called, so importing this module stays cheap.
"""

from __future__ import annotations

import weakref

import numpy as np

from core import network


def first_layer_images(kernel: np.ndarray) -> np.ndarray:
    """A first-layer kernel as one image per unit, float32 raw values (not rescaled).

    Dense kernel (784, units) -> (units, 28, 28): the weights each unit gives the input's pixels.
    Conv2D kernel (k, k, 1, filters) -> (filters, k, k).
    """
    kernel = np.asarray(kernel)
    if kernel.ndim == 2 and kernel.shape[0] == network.IMAGE_PIXELS:
        return np.ascontiguousarray(kernel.T.reshape(kernel.shape[1], *network.IMAGE_SHAPE), dtype=np.float32)
    if kernel.ndim == 4 and kernel.shape[0] == kernel.shape[1] and kernel.shape[2] == 1:
        return np.ascontiguousarray(kernel[:, :, 0, :].transpose(2, 0, 1), dtype=np.float32)
    raise ValueError(f"a first-layer kernel is (784, units) or (k, k, 1, filters); got shape {kernel.shape}")


def saliency(model, digit: np.ndarray) -> np.ndarray:
    """|d p_predicted / d input| as a (28, 28) float32 map: the pixels whose change moves the answer most."""
    gradient = _saliency_function(model)(_batch_of_one(digit))
    return np.abs(np.asarray(gradient)[0]).astype(np.float32)


def _per_model(build):
    """Keep what `build(model)` returns for as long as the model lives: the Draw page asks again for every
    stroke of the same model (an object that cannot be weakly referenced is built again each time)."""
    cache = weakref.WeakKeyDictionary()

    def cached(model):
        try:
            return cache[model]
        except (KeyError, TypeError):
            pass
        value = build(model)
        try:
            cache[model] = value
        except TypeError:
            pass
        return value

    return cached


# Traced once per model: run eagerly, the gradient costs ~20 ms after Streamlit clears Keras' session, traced
# about 1.5 ms, which keeps a stroke from waiting long behind the previous stroke's explanation.
@_per_model
def _saliency_function(model):
    import tensorflow as tf  # deferred: only the Draw page's explanations need TensorFlow here

    @tf.function(input_signature=[tf.TensorSpec((1, *network.IMAGE_SHAPE), tf.float32)])
    def gradient(image):
        with tf.GradientTape() as tape:
            tape.watch(image)
            probabilities = model(image, training=False)
            picked = tf.reduce_max(probabilities[0])  # the predicted class's probability
        return tape.gradient(picked, image)

    return gradient


def top_units(model, digit: np.ndarray, count: int = 5) -> list[tuple[str, list[tuple[int, float]]]]:
    """For each hidden layer with weights, its name and its `count` most active units as (index, activation).

    Hidden layers are the model's Dense and Conv2D layers before the output layer; a Conv2D filter's
    activation is its feature map averaged over space. Units are sorted by activation, highest first.
    """
    names, probe = _activation_probe(model)
    if not names:
        return []
    outputs = probe(_batch_of_one(digit), training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    result = []
    for name, output in zip(names, outputs):
        values = np.asarray(output)[0]
        if values.ndim == 3:  # a Conv2D feature map (height, width, filters): one number per filter
            values = values.mean(axis=(0, 1))
        order = np.argsort(-values, kind="stable")[:count]
        result.append((name, [(int(index), float(values[index])) for index in order]))
    return result


def hidden_layer_names(model) -> list[str]:
    """Names of the model's Dense and Conv2D layers except the output layer, in order."""
    import keras  # deferred: importing Keras pulls in TensorFlow

    last = model.layers[-1].name if model.layers else None
    return [layer.name for layer in model.layers
            if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))
            and layer.name not in (network.OUTPUT_LAYER, last)]


# A Keras sub-model costs a few milliseconds to build: each model keeps its probe.
@_per_model
def _activation_probe(model):
    """(hidden layer names, a Keras model from the model's input to those layers' outputs)."""
    import keras  # deferred: importing Keras pulls in TensorFlow

    names = hidden_layer_names(model)
    probe = keras.Model(model.inputs[0], [model.get_layer(name).output for name in names]) if names else None
    return names, probe


def _batch_of_one(digit: np.ndarray) -> np.ndarray:
    digit = np.asarray(digit, dtype=np.float32)
    if digit.shape != network.IMAGE_SHAPE:
        raise ValueError(f"a digit is a (28, 28) image; got shape {digit.shape}")
    return digit[np.newaxis]
