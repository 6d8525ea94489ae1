"""The `function` engine: Keras 3 layers called on raw TensorFlow tensors, TensorFlow owning the training.

This is the article's idea in today's TensorFlow. No Keras `Model` is trained and `fit` is never called:
the Dense layers are applied to a TF tensor gathered from the resident training data (name scope `input`,
the stand-in for the article's placeholders), the loss is a TF op over their output (`loss`), and a
GradientTape with the optimizer updates the weights (`train`). Steps are grouped into one `tf.function`
call per chunk, because at batch 50 a step costs less than TensorFlow's per-call overhead.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

from tensorboard.plugins.scalar import metadata as scalar_metadata

from core.data import Dataset
from core.engines import chunk_steps_for
from core.network import CLASSES, IMAGE_PIXELS, initial_weights, make_layers

SCALAR_METADATA = scalar_metadata.create_summary_metadata(display_name=None, description=None).SerializeToString()
XLA_MIN_STEPS = 5000  # measured crossover: 3,000 steps run faster without XLA, 10,000 much faster with it


def make_optimizer(config):
    """The optimizer the config names, at its learning rate."""
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(config.learning_rate)
    if config.optimizer == "momentum":
        return keras.optimizers.SGD(config.learning_rate, momentum=0.9)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(config.learning_rate)
    return keras.optimizers.RMSprop(config.learning_rate)


def build_layers(config) -> list:
    """The network's Keras 3 layers (core.network), built and set to the shared initial weights."""
    layers = make_layers(config, keras.layers)
    width = IMAGE_PIXELS
    for layer in layers:
        layer.build((None, width))
        width = getattr(layer, "units", width)
    dense = [layer for layer in layers if isinstance(layer, keras.layers.Dense)]
    weights = initial_weights(config)
    for layer, kernel, bias in zip(dense, weights[0::2], weights[1::2]):
        layer.set_weights([kernel, bias])
    return layers


def apply_layers(layers: list, images: tf.Tensor, training: bool) -> tf.Tensor:
    """Call the Keras layers on a raw TF tensor of flat images: the heart of the article."""
    x = images
    for layer in layers:
        x = layer(x, training=training) if isinstance(layer, keras.layers.Dropout) else layer(x)
    return x


def make_train_step(layers: list, optimizer, x_train: tf.Tensor, y_train: tf.Tensor):
    """One training step on the batch at `batch_indices`: tape, loss, gradients, apply, batch accuracy."""
    variables = [v for layer in layers for v in layer.trainable_variables]

    def train_step(batch_indices):
        with tf.name_scope("input"):
            images = tf.reshape(tf.gather(x_train, batch_indices), (-1, IMAGE_PIXELS))
            labels = tf.one_hot(tf.gather(y_train, batch_indices), CLASSES)
        with tf.GradientTape() as tape:
            with tf.name_scope("NN"):
                predictions = apply_layers(layers, images, training=True)
            with tf.name_scope("loss"):
                loss = tf.reduce_mean(keras.losses.categorical_crossentropy(labels, predictions))
        with tf.name_scope("train"):
            gradients = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(gradients, variables))
        with tf.name_scope("accuracy"):
            accuracy = tf.reduce_mean(tf.cast(keras.metrics.categorical_accuracy(labels, predictions), tf.float32))
        return loss, accuracy

    return train_step


def uses_xla(config) -> bool:
    """Whether full chunks go through XLA: as the config says, or by default only for runs long enough.

    Compiling costs about a second here and then saves about a quarter of a millisecond per step, so it
    pays off from a few thousand steps on; a short run (the article's 1,000 steps) is done sooner without.
    """
    return config.xla if config.xla is not None else config.steps >= XLA_MIN_STEPS


class FunctionEngine:
    """Trains a config on a dataset in chunks of steps, writing TensorBoard summaries as it goes."""

    name = "function"

    def __init__(self, config, dataset: Dataset, log_dir):
        self.config = config
        self.writer = writer = tf.summary.create_file_writer(str(log_dir))
        self.x_train = tf.constant(dataset.x_train)
        self.y_train = tf.constant(dataset.y_train)
        self.layers = build_layers(config)
        self.optimizer = make_optimizer(config)
        self.optimizer.build([v for layer in self.layers for v in layer.trainable_variables])
        train_step = make_train_step(self.layers, self.optimizer, self.x_train, self.y_train)
        self.chunk_steps = chunk_steps_for(config)
        self.use_xla = uses_xla(config)

        def run_steps(chunk_indices):
            steps = tf.shape(chunk_indices)[0]
            losses = tf.TensorArray(tf.float32, size=steps)
            accuracies = tf.TensorArray(tf.float32, size=steps)
            for i in tf.range(steps):
                loss, accuracy = train_step(chunk_indices[i])
                losses = losses.write(i, loss)
                accuracies = accuracies.write(i, accuracy)
            return losses.stack(), accuracies.stack()

        # Several steps run inside one graph call, because at batch 50 a step costs less than TensorFlow's
        # per-call overhead. Full chunks have one fixed shape and go through XLA, which fuses the whole
        # loop (about twice as fast here); XLA compiles once per shape, so the odd-sized chunks before an
        # evaluation or at the end take the plain graph instead.
        batch = config.batch_size
        self._full_chunk = tf.function(run_steps, jit_compile=True,
                                       input_signature=[tf.TensorSpec((self.chunk_steps, batch), tf.int32)])
        self._any_chunk = tf.function(run_steps, input_signature=[tf.TensorSpec((None, batch), tf.int32)])

        # XLA cannot hold summary ops, so the losses come out of the chunk and a second graph call writes
        # them: still one TensorBoard point per step, as in the article.
        @tf.function(input_signature=[tf.TensorSpec((None,), tf.float32), tf.TensorSpec((None,), tf.float32),
                                      tf.TensorSpec((), tf.int64)])
        def write_step_summaries(losses, accuracies, first_step):
            with writer.as_default():
                for i in tf.range(tf.shape(losses)[0]):
                    step = first_step + tf.cast(i, tf.int64)
                    # tf.summary.scalar would prefix the loop's name scope ("while/loss"); write the tag as is.
                    tf.summary.write("loss", losses[i], step=step, metadata=SCALAR_METADATA)
                    tf.summary.write("batch_accuracy", accuracies[i], step=step, metadata=SCALAR_METADATA)

        self._write_step_summaries = write_step_summaries
        self._predict = tf.function(lambda images: apply_layers(self.layers, images, training=False))

    def train_chunk(self, chunk_indices: np.ndarray, first_step: int) -> tuple[np.ndarray, np.ndarray]:
        """Run len(chunk_indices) steps and log them; returns their losses and batch accuracies."""
        use_xla = self.use_xla and len(chunk_indices) == self.chunk_steps
        run = self._full_chunk if use_xla else self._any_chunk
        losses, accuracies = run(tf.constant(chunk_indices, tf.int32))
        self._write_step_summaries(losses, accuracies, tf.constant(first_step, tf.int64))
        return losses.numpy(), accuracies.numpy()

    def trace_graph(self, chunk_indices: np.ndarray, first_step: int) -> tuple[np.ndarray, np.ndarray]:
        """Run the first chunk while recording the graph of the training step for TensorBoard's Graphs tab."""
        # Through the plain graph: an XLA-compiled call records no ops, so the Graphs tab would be empty.
        tf.summary.trace_on(graph=True)
        try:
            losses, accuracies = self._any_chunk(tf.constant(chunk_indices, tf.int32))
        finally:
            with self.writer.as_default():
                tf.summary.trace_export("train_step", step=first_step)
        self._write_step_summaries(losses, accuracies, tf.constant(first_step, tf.int64))
        return losses.numpy(), accuracies.numpy()

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) for float32 images (N, 28, 28)."""
        flat = tf.constant(images.reshape(len(images), IMAGE_PIXELS), tf.float32)
        return self._predict(flat).numpy()

    def weights(self) -> list[np.ndarray]:
        """Kernels and biases of the Dense layers, in order."""
        return [w for layer in self.layers if isinstance(layer, keras.layers.Dense) for w in layer.get_weights()]

    def write_summaries(self, step: int, protos: list) -> None:
        """Write ready-made summary protos (see core/tensorboard_summaries.py) at `step`."""
        with self.writer.as_default():
            for proto in protos:
                tf.summary.experimental.write_raw_pb(proto.SerializeToString(), step=step)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


ENGINE = FunctionEngine
