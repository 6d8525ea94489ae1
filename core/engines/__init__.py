"""The engines side by side: what every engine does (`Engine`), and how a config's `engine` picks one.

`function` (engines/function.py) is today's TensorFlow: Keras 3 layers in a tf.function step that a
GradientTape trains. `session` (engines/session.py) is the article's own TF1 graph, fed by placeholders and
run by a Session. Both build the network from core.network, start from its shared initial weights and
take the batches core.training gives them, which is what makes their runs comparable step for step.
Both import TensorFlow, so they are imported only when a run needs one.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from core.config import ENGINES
from core.network import IMAGE_PIXELS, IMAGE_SHAPE, multiply_adds, weight_names

if TYPE_CHECKING:
    from core.engines.distribute import Placement

MAX_CHUNK_STEPS = 100
ASSUMED_FLOPS_PER_SECOND = 60e9
# On-the-fly augmentation (the `augment` setting): every training digit shifted by up to this many pixels
# along each axis and rotated by up to this many degrees, drawn uniformly.
MAX_SHIFT_PIXELS = 2.0
MAX_ROTATION_DEGREES = 10.0


class Engine(Protocol):
    """What the training loop asks of an engine; everything else (batches, evaluation, stop) is the loop's."""

    name: str
    chunk_steps: int  # how many steps one call of train_chunk should take at most
    placement: Placement  # where it trains: one device, or a tf.distribute strategy's replicas

    def __init__(self, config, dataset, log_dir: Path) -> None:
        """Build (or reuse) the network for `config` at its initial weights; write its graph to `log_dir`."""

    def train_chunk(self, chunk_indices: np.ndarray, first_step: int) -> tuple[np.ndarray, np.ndarray]:
        """Run one step per row of batch indices, logging each; returns their losses and batch accuracies."""

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) for float32 images (N, 28, 28)."""

    def weights(self) -> list[np.ndarray]:
        """Kernel and bias of every layer with weights (Dense, Conv2D), in core.network's order."""

    def load_weights(self, weights: list[np.ndarray]) -> None:
        """Set every layer's kernel and bias (core.network's order): a fine-tuning run starts from another's."""

    def stop_together(self, stop: bool) -> bool:
        """Whether the run stops now, given whether this process wants to (all workers of a run agree)."""

    def write_summaries(self, step: int, protos: list) -> None:
        """Write ready-made TensorBoard summary protos (core/tensorboard_summaries.py) at `step`."""

    def close(self) -> None:
        """Flush the event files and release what the engine holds."""


def engine_class(name: str) -> type[Engine]:
    """The engine class for a config's `engine` setting (imported on demand: engines import TensorFlow)."""
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {name!r}")
    module = importlib.import_module(f"core.engines.{name}")
    return module.ENGINE


def named_weights(engine: Engine, config) -> dict[str, np.ndarray]:
    """An engine's weights by their network name (hidden_1/kernel ...), for histograms."""
    return dict(zip(weight_names(config), engine.weights()))


def chunk_steps_for(config) -> int:
    """How many steps one graph call runs: about 0.2 s of work, at most 100.

    The estimate counts the FLOPs of forward and backward passes, 6 per multiply-add of the forward pass and
    image (core.network.multiply_adds: a weight for a Dense layer, height x width x k^2 x in x out for a
    convolution), against a conservative 60 GFLOP/s for these CPUs, so that progress reports stay frequent
    even for the largest networks, where a single step may take longer than that.
    """
    flops_per_step = 6 * config.batch_size * multiply_adds(config)
    return int(min(MAX_CHUNK_STEPS, max(1, 0.2 * ASSUMED_FLOPS_PER_SECOND // flops_per_step)))


def augment_images(images, seed, step, first=0, batch=None):
    """Training images shifted and rotated at random, by TensorFlow ops in the caller's graph.

    `images` is a float32 tensor of flat images (N, 784); `seed` (the config's) and `step` (the global step)
    are scalars. Each image gets a shift of up to MAX_SHIFT_PIXELS along each axis and a rotation of up to
    MAX_ROTATION_DEGREES about its centre, drawn by a stateless random op from (seed, step): the same step
    gets the same transforms in both engines, in any process, whatever ran before. Pixels that come from
    outside the image are black; the result is bilinear and stays in [0, 1].

    A replica of a distributed run holds images `first` to `first + N` of a step's `batch`: it draws the
    whole batch's transforms and keeps its share, so its images move as they would on one device.

    TensorFlow is imported here, not with this module: the engines package must stay light to import.
    """
    import tensorflow as tf

    with tf.name_scope("augment"):
        count = tf.shape(images)[0]
        key = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
        drawn = count if batch is None else batch
        draws = tf.random.stateless_uniform(tf.stack([drawn, 3]), seed=key, minval=-1.0, maxval=1.0, alg="philox")
        if batch is not None:
            draws = draws[first:first + count]
        angle = draws[:, 0] * (MAX_ROTATION_DEGREES * np.pi / 180.0)
        shift_x, shift_y = draws[:, 1] * MAX_SHIFT_PIXELS, draws[:, 2] * MAX_SHIFT_PIXELS
        cos, sin = tf.cos(angle), tf.sin(angle)
        centre_y, centre_x = (IMAGE_SHAPE[0] - 1) / 2.0, (IMAGE_SHAPE[1] - 1) / 2.0
        # The op maps each output pixel (x, y) back to where it is read in the input: undo the shift, then
        # rotate back about the centre. Rows are [a0 a1 a2 b0 b1 b2 c0 c1]: x_in = a0 x + a1 y + a2, y_in = ...
        moved_x, moved_y = centre_x + shift_x, centre_y + shift_y
        zeros = tf.zeros_like(angle)
        transforms = tf.stack([cos, sin, centre_x - cos * moved_x - sin * moved_y,
                               -sin, cos, centre_y + sin * moved_x - cos * moved_y, zeros, zeros], axis=1)
        moved = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.reshape(images, (-1, *IMAGE_SHAPE, 1)), transforms=transforms,
            output_shape=tf.constant(IMAGE_SHAPE, tf.int32), fill_value=tf.constant(0.0),
            interpolation="BILINEAR", fill_mode="CONSTANT")
        return tf.reshape(moved, (-1, IMAGE_PIXELS))
