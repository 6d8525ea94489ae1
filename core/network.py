"""The network, defined once: the layers every engine builds, their names, the shared initial weights, and
the exported Keras model.

Both engines and the export call `make_layers` with their own Keras (`keras.layers` for the function engine
and the export, `tf_keras.layers` for the session engine): the two packages take the same constructor
arguments, so one list of layer specs gives the same network in each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_PIXELS = 784
IMAGE_SHAPE = (28, 28)
CLASSES = 10
OUTPUT_LAYER = "probabilities"
WEIGHT_PARTS = ("kernel", "bias")
EXPORT_NAME = "hybrid_mlp"


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the network: a Dense layer (units, activation) or a Dropout layer (rate, seed)."""

    kind: str  # "dense" or "dropout"
    name: str
    units: int = 0
    activation: str | None = None
    rate: float = 0.0
    seed: int | None = None


def layer_specs(config) -> list[LayerSpec]:
    """784 -> hidden_1 (-> dropout_1) -> ... -> probabilities (softmax): the article's stack of Dense layers."""
    specs = []
    for index, units in enumerate(config.hidden_units, start=1):
        specs.append(LayerSpec("dense", f"hidden_{index}", units, config.activation))
        if config.dropout_rate > 0:
            specs.append(LayerSpec("dropout", f"dropout_{index}", rate=config.dropout_rate,
                                   seed=config.seed + index - 1))
    specs.append(LayerSpec("dense", OUTPUT_LAYER, CLASSES, "softmax"))
    return specs


def dense_specs(config) -> list[LayerSpec]:
    """Only the Dense layers, in order: the ones with weights."""
    return [spec for spec in layer_specs(config) if spec.kind == "dense"]


def layer_sizes(config) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every Dense layer: 784 -> hidden... -> 10."""
    widths = [IMAGE_PIXELS, *config.hidden_units, CLASSES]
    return list(zip(widths[:-1], widths[1:]))


def weight_names(config) -> list[str]:
    """A name per weight array, in the order engines return them: hidden_1/kernel, hidden_1/bias, ..."""
    return [f"{spec.name}/{part}" for spec in dense_specs(config) for part in WEIGHT_PARTS]


def initial_weights(config) -> list[np.ndarray]:
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


def make_layers(config, layers_module) -> list:
    """The network's layers from `layers_module` (keras.layers or tf_keras.layers), not yet built."""
    made = []
    for spec in layer_specs(config):
        if spec.kind == "dense":
            made.append(layers_module.Dense(spec.units, activation=spec.activation, name=spec.name))
        else:
            made.append(layers_module.Dropout(spec.rate, seed=spec.seed, name=spec.name))
    return made


def build_export_model(config, weights: list[np.ndarray]):
    """The Keras 3 model saved as model.keras: float32 (N, 28, 28) in [0, 1] -> (N, 10) probabilities."""
    import keras  # deferred: importing Keras pulls in TensorFlow

    model = keras.Sequential([keras.Input(IMAGE_SHAPE, name="image"), keras.layers.Flatten(name="flatten"),
                              *make_layers(config, keras.layers)], name=EXPORT_NAME)
    model.set_weights(weights)
    return model


class ModelError(ValueError):
    """A model.keras that cannot be loaded, or that does not keep the contract; the message says which."""


def load_model(path):
    """Load a run's model.keras and check its contract: (N, 28, 28) float32 in [0, 1] -> (N, 10).

    Keras refuses files that name code to run (its safe mode); whatever it raises for a file that is not a
    model, or not ours, becomes a ModelError naming the file.
    """
    import zipfile

    path = Path(path)
    name = f"{path.parent.name}/{path.name}"  # the run and the file: enough to find it, and no server path
    if not path.is_file():
        raise ModelError(f"{name} is missing: the run saved no model")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{name} is not a Keras model file (a .keras file is a zip archive)")
    import keras  # deferred: importing Keras pulls in TensorFlow

    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file; all mean "cannot use it"
        logging.getLogger(__name__).warning("cannot load %s: %s: %s", path, type(error).__name__, error)
        raise ModelError(f"{name} cannot be loaded as a model: it is damaged or names code outside Keras, "
                         "which is never run") from None
    try:
        inputs, outputs = tuple(model.input_shape), tuple(model.output_shape)
    except (AttributeError, ValueError, TypeError):  # a model that was never built has no shapes
        raise ModelError(f"{name} has no defined input shape; expected (None, 28, 28) -> (None, 10)") from None
    if inputs[1:] != IMAGE_SHAPE or outputs[1:] != (CLASSES,):
        raise ModelError(f"{name} takes {inputs} and gives {outputs}; expected (None, 28, 28) -> (None, 10)")
    return model
