"""The network: Keras layers for the hybrid graph, shared initial weights, and the exported Keras model."""

from __future__ import annotations

import numpy as np

from core.config import TrainConfig

IMAGE_PIXELS = 784
CLASSES = 10


def layer_sizes(config: TrainConfig) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every Dense layer: 784 -> hidden... -> 10."""
    widths = [IMAGE_PIXELS, *config.hidden_units, CLASSES]
    return list(zip(widths[:-1], widths[1:]))


def initial_weights(config: TrainConfig) -> list[np.ndarray]:
    """Glorot-uniform kernels and zero biases drawn from the config's seed with numpy.

    Both engines start from these arrays rather than from their own initializers, because Keras 3 and
    tf_keras draw different numbers from the same seed; sharing them makes the two engines' runs
    comparable step for step.
    """
    rng = np.random.default_rng(config.seed)
    weights = []
    for fan_in, fan_out in layer_sizes(config):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        weights.append(rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32))
        weights.append(np.zeros(fan_out, dtype=np.float32))
    return weights


def build_export_model(config: TrainConfig, weights: list[np.ndarray]):
    """The Keras 3 model saved as model.keras: float32 (N, 28, 28) in [0, 1] -> (N, 10) probabilities."""
    import keras  # deferred: importing Keras pulls in TensorFlow

    layers = [keras.Input((28, 28), name="image"), keras.layers.Flatten(name="flatten")]
    for index, units in enumerate(config.hidden_units):
        layers.append(keras.layers.Dense(units, activation=config.activation, name=f"hidden_{index + 1}"))
        if config.dropout_rate > 0:
            layers.append(keras.layers.Dropout(config.dropout_rate, name=f"dropout_{index + 1}"))
    layers.append(keras.layers.Dense(CLASSES, activation="softmax", name="probabilities"))
    model = keras.Sequential(layers, name="hybrid_mlp")
    model.set_weights(weights)
    return model


def load_model(path):
    """Load a run's model.keras (the contract: (N, 28, 28) float32 -> (N, 10) probabilities)."""
    import keras

    return keras.models.load_model(path, compile=False)
