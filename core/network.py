"""The network, defined once: the layers every engine builds, their names, the shared initial weights, and
the exported Keras model.

Two architectures: "mlp", the article's stack of Dense layers, and "cnn", two convolutions with max pooling
before a Dense layer and the softmax. Both are Keras layers called on raw TensorFlow tensors. Both engines and
the export call `make_layers` with their own Keras (`keras.layers` for the function engine and the export,
`tf_keras.layers` for the session engine): the two packages take the same constructor arguments for every
layer used here (Reshape, Conv2D, MaxPooling2D, Flatten, Dense, Dropout), so one list of layer specs gives the
same network in each.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_PIXELS = 784
IMAGE_SHAPE = (28, 28)
CLASSES = 10
OUTPUT_LAYER = "probabilities"
WEIGHT_PARTS = ("kernel", "bias")
WEIGHTED_KINDS = ("conv", "dense")  # the layers with a kernel and a bias
EXPORT_NAMES = {"mlp": "hybrid_mlp", "cnn": "hybrid_cnn"}
EXPORT_NAME = EXPORT_NAMES["mlp"]
# Images per call when predicting, in every engine and on the Runs page: a CNN's activations for 10,000
# digits at once would take gigabytes.
PREDICT_BATCH = 1000

# The CNN: 28x28x1 -> conv 5x5 (32) -> pool 2 -> conv 5x5 (64) -> pool 2 -> Dense 128 -> softmax 10, the
# classic "deep MNIST" network of TensorFlow's early tutorials.
CNN_FILTERS = (32, 64)
CNN_KERNEL_SIZE = 5
CNN_POOL_SIZE = 2
CNN_DENSE_UNITS = 128
CNN_INPUT_SHAPE = (*IMAGE_SHAPE, 1)


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the network and what its constructor needs.

    kind is "dense" (units, activation), "dropout" (rate, seed), "reshape" (target_shape), "conv" (units =
    filters, kernel_size, activation; "same" padding), "pool" (pool_size; max pooling) or "flatten".
    """

    kind: str
    name: str
    units: int = 0
    activation: str | None = None
    rate: float = 0.0
    seed: int | None = None
    kernel_size: int = 0
    pool_size: int = 0
    target_shape: tuple = ()

    @property
    def has_weights(self) -> bool:
        """Whether the layer has a kernel and a bias (Dense and Conv2D)."""
        return self.kind in WEIGHTED_KINDS


def layer_specs(config) -> list[LayerSpec]:
    """The layers of the config's architecture, in order."""
    return _cnn_specs(config) if config.architecture == "cnn" else _mlp_specs(config)


def _mlp_specs(config) -> list[LayerSpec]:
    """784 -> hidden_1 (-> dropout_1) -> ... -> probabilities (softmax): the article's stack of Dense layers."""
    specs = []
    for index, units in enumerate(config.hidden_units, start=1):
        specs.append(LayerSpec("dense", f"hidden_{index}", units, config.activation))
        if config.dropout_rate > 0:
            specs.append(LayerSpec("dropout", f"dropout_{index}", rate=config.dropout_rate,
                                   seed=config.seed + index - 1))
    specs.append(LayerSpec("dense", OUTPUT_LAYER, CLASSES, "softmax"))
    return specs


def _cnn_specs(config) -> list[LayerSpec]:
    """784 -> reshape 28x28x1 -> conv_1, pool_1 -> conv_2, pool_2 -> flatten -> hidden_1 (-> dropout_1) -> softmax."""
    specs = [LayerSpec("reshape", "reshape", target_shape=CNN_INPUT_SHAPE)]
    for index, filters in enumerate(CNN_FILTERS, start=1):
        specs.append(LayerSpec("conv", f"conv_{index}", filters, config.activation, kernel_size=CNN_KERNEL_SIZE))
        specs.append(LayerSpec("pool", f"pool_{index}", pool_size=CNN_POOL_SIZE))
    specs.append(LayerSpec("flatten", "flatten"))
    specs.append(LayerSpec("dense", "hidden_1", CNN_DENSE_UNITS, config.activation))
    if config.dropout_rate > 0:
        specs.append(LayerSpec("dropout", "dropout_1", rate=config.dropout_rate, seed=config.seed))
    specs.append(LayerSpec("dense", OUTPUT_LAYER, CLASSES, "softmax"))
    return specs


def layer_shapes(config) -> list[tuple[LayerSpec, tuple, tuple]]:
    """Each layer with the shape it takes and the shape it gives, per image (no batch axis); input (784,)."""
    shapes, shape = [], (IMAGE_PIXELS,)
    for spec in layer_specs(config):
        if spec.kind == "reshape":
            out = spec.target_shape
        elif spec.kind == "conv":
            out = (*shape[:2], spec.units)  # "same" padding keeps height and width
        elif spec.kind == "pool":
            out = (shape[0] // spec.pool_size, shape[1] // spec.pool_size, shape[2])
        elif spec.kind == "flatten":
            out = (math.prod(shape),)
        elif spec.kind == "dense":
            out = (spec.units,)
        else:  # dropout
            out = shape
        shapes.append((spec, shape, out))
        shape = out
    return shapes


def weighted_specs(config) -> list[LayerSpec]:
    """The layers with weights (Dense and Conv2D), in order."""
    return [spec for spec in layer_specs(config) if spec.has_weights]


def weight_shapes(config) -> list[tuple[int, ...]]:
    """The shape of every weight array, in the order of weight_names: kernel then bias of each layer with weights."""
    shapes = []
    for spec, input_shape, _ in layer_shapes(config):
        if not spec.has_weights:
            continue
        channels = input_shape[-1]  # a Dense layer's inputs, a convolution's input channels
        if spec.kind == "conv":
            shapes.append((spec.kernel_size, spec.kernel_size, channels, spec.units))
        else:
            shapes.append((channels, spec.units))
        shapes.append((spec.units,))
    return shapes


def layer_sizes(config) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every layer with weights, its kernel seen as a matrix: 784 -> hidden... -> 10 for
    the MLP; a convolution's fan_in is kernel_size x kernel_size x input channels, its fan_out its filters."""
    return [(math.prod(kernel[:-1]), kernel[-1]) for kernel in weight_shapes(config)[0::2]]


def multiply_adds(config) -> int:
    """Multiply-adds of one image's forward pass: a weight per image for a Dense layer, and for a convolution
    its kernel at every output position (height x width x kernel_size^2 x in x out)."""
    total = 0
    for spec, shape, out in layer_shapes(config):
        if spec.kind == "conv":
            total += out[0] * out[1] * spec.kernel_size**2 * shape[2] * spec.units
        elif spec.kind == "dense":
            total += shape[0] * spec.units
    return total


def weight_names(config) -> list[str]:
    """A name per weight array, in the order engines return them: hidden_1/kernel, hidden_1/bias, ...
    (conv_1/kernel, conv_1/bias, conv_2/... first for the CNN)."""
    return [f"{spec.name}/{part}" for spec in weighted_specs(config) for part in WEIGHT_PARTS]


def first_kernel_name(config) -> str:
    """The name of the first layer's kernel, the one drawn as images: hidden_1/kernel or conv_1/kernel."""
    return f"{weighted_specs(config)[0].name}/{WEIGHT_PARTS[0]}"


def describe_layers(config) -> str:
    """The layers in short: '784-128-128-10' for the MLP (as the article writes it), and for the CNN
    '32C5-P2-64C5-P2-128-10' (filters C kernel size, P pool size, then the Dense widths)."""
    if config.architecture != "cnn":
        return "-".join(str(n) for n in [IMAGE_PIXELS, *config.hidden_units, CLASSES])
    parts = []
    for spec in layer_specs(config):
        if spec.kind == "conv":
            parts.append(f"{spec.units}C{spec.kernel_size}")
        elif spec.kind == "pool":
            parts.append(f"P{spec.pool_size}")
        elif spec.kind == "dense":
            parts.append(str(spec.units))
    return "-".join(parts)


def initial_weights(config) -> list[np.ndarray]:
    """Glorot-uniform kernels and zero biases drawn from the config's seed with numpy.

    Both engines start from these arrays rather than from their own initializers, because Keras 3 and
    tf_keras draw different numbers from the same seed; sharing them makes the two engines' runs
    comparable step for step. A convolution's fans count its receptive field, as Keras' own Glorot does:
    fan_in = k*k*in_channels, fan_out = k*k*out_channels.
    """
    rng = np.random.default_rng(config.seed)
    weights = []
    shapes = weight_shapes(config)
    for kernel_shape, bias_shape in zip(shapes[0::2], shapes[1::2]):
        receptive_field = math.prod(kernel_shape[:-2])  # 1 for a Dense kernel
        fan_in, fan_out = receptive_field * kernel_shape[-2], receptive_field * kernel_shape[-1]
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        weights.append(rng.uniform(-limit, limit, size=kernel_shape).astype(np.float32))
        weights.append(np.zeros(bias_shape, dtype=np.float32))
    return weights


def make_layers(config, layers_module) -> list:
    """The network's layers from `layers_module` (keras.layers or tf_keras.layers), not yet built."""
    made = []
    for spec in layer_specs(config):
        if spec.kind == "dense":
            made.append(layers_module.Dense(spec.units, activation=spec.activation, name=spec.name))
        elif spec.kind == "dropout":
            made.append(layers_module.Dropout(spec.rate, seed=spec.seed, name=spec.name))
        elif spec.kind == "reshape":
            made.append(layers_module.Reshape(spec.target_shape, name=spec.name))
        elif spec.kind == "conv":
            made.append(layers_module.Conv2D(spec.units, spec.kernel_size, padding="same", activation=spec.activation,
                                             name=spec.name))
        elif spec.kind == "pool":
            made.append(layers_module.MaxPooling2D(spec.pool_size, name=spec.name))
        else:
            made.append(layers_module.Flatten(name=spec.name))
    return made


def weighted_layers(config, layers: list) -> list:
    """The layers (made by make_layers) that have a kernel and a bias, in order."""
    return [layer for spec, layer in zip(layer_specs(config), layers) if spec.has_weights]


def build_export_model(config, weights: list[np.ndarray]):
    """The Keras 3 model saved as model.keras: float32 (N, 28, 28) in [0, 1] -> (N, 10) probabilities.

    The MLP's Dense layers take flat images, so a Flatten layer comes first; the CNN's first layer reshapes
    the image itself (28x28 -> 28x28x1).
    """
    import keras  # deferred: importing Keras pulls in TensorFlow

    layers = make_layers(config, keras.layers)
    front = [keras.Input(IMAGE_SHAPE, name="image")]
    if layer_specs(config)[0].kind != "reshape":
        front.append(keras.layers.Flatten(name="flatten"))
    model = keras.Sequential([*front, *layers], name=EXPORT_NAMES.get(config.architecture, EXPORT_NAME))
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
