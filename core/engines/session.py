"""The `session` engine: the article's own code path, a TF1 graph run by a Session, fed by placeholders.

The same network as the function engine (core.network: the article's Dense layers or the CNN), built from
tf_keras layers called on the placeholders, with the same name scopes (input, NN, loss, train), the same
initial weights and, with augmentation, the same shifted and rotated batches.

Why tf_keras: Keras 3 has no Session and no TF1 graph mode (its layers run eagerly or inside tf.function),
so the article's `K.set_session(sess)` and layers called on a `tf.placeholder` only exist in the Keras 2
package, tf_keras. Each run builds its own `tf.Graph` and `Session` instead of calling
`disable_eager_execution()`, which would switch the whole process (and the Streamlit server's other runs)
to graph mode.
"""

from __future__ import annotations

import threading

import numpy as np
import tensorflow as tf
import tf_keras
from tf_keras.api._v1.keras import backend as K  # the TF1 API of tf_keras: where set_session lives

from core.data import Dataset
from core.engines import augment_images, chunk_steps_for, distribute
from core.network import CLASSES, IMAGE_PIXELS, PREDICT_BATCH, initial_weights, make_layers, weighted_layers

v1 = tf.compat.v1
# tf_keras keeps one global session; registering ours (as the article does) and building the layers must
# not interleave with another run doing the same in another thread of the same process (the app trains
# each run in its own worker process, but core.training.train may be called from threads).
_set_session_lock = threading.Lock()


# One entry per choice of the optimizer setting (core.config.OPTIMIZERS), from the learning rate to a TF1
# optimizer with Keras 3's constants (epsilon 1e-7, RMSprop's decay 0.9), so both engines make the same steps;
# tests/test_settings_as_data.py checks that both engines' tables are complete.
V1_OPTIMIZERS = {
    "sgd": lambda learning_rate: v1.train.GradientDescentOptimizer(learning_rate),
    "momentum": lambda learning_rate: v1.train.MomentumOptimizer(learning_rate, momentum=0.9),
    "adam": lambda learning_rate: v1.train.AdamOptimizer(learning_rate, epsilon=1e-7),
    "rmsprop": lambda learning_rate: v1.train.RMSPropOptimizer(learning_rate, decay=0.9, epsilon=1e-7),
}


def make_v1_optimizer(config):
    """The tf.compat.v1.train optimizer the config names; ValueError if this engine has none of that name."""
    if config.optimizer not in V1_OPTIMIZERS:
        raise ValueError(f"the session engine has no optimizer {config.optimizer!r}: it has "
                         f"{', '.join(V1_OPTIMIZERS)}; add it to V1_OPTIMIZERS in core/engines/session.py")
    return V1_OPTIMIZERS[config.optimizer](config.learning_rate)


class SessionEngine:
    """The article's graph: placeholders -> tf_keras layers -> loss -> optimizer.minimize, sess.run per step."""

    name = "session"
    placement = distribute.SINGLE  # the article's graph runs in one Session on one device

    def __init__(self, config, dataset: Dataset, log_dir):
        self.config = config
        self.chunk_steps = chunk_steps_for(config)
        self.x_train = dataset.x_train.reshape(len(dataset.x_train), IMAGE_PIXELS)
        self.y_train = np.eye(CLASSES, dtype=np.float32)[dataset.y_train]
        self.graph = tf.Graph()
        with self.graph.as_default(), _set_session_lock:
            v1.set_random_seed(config.seed)  # the graph-level seed: dropout masks repeat from run to run
            self.sess = v1.Session(graph=self.graph)
            K.set_session(self.sess)  # the article's K.set_session(sess)
            self._build_graph()
            # The FileWriter gets the graph, so TensorBoard's Graphs tab shows the article's name scopes.
            self.writer = v1.summary.FileWriter(str(log_dir), graph=self.graph)
            self.sess.run(v1.global_variables_initializer())
            self._load_weights(initial_weights(config))
        self.graph.finalize()  # nothing may add ops while training, as in TF1 best practice

    def _build_graph(self) -> None:
        with tf.name_scope("input"):
            # These placeholders are the same as Keras' input layer (the article's words).
            self.images = v1.placeholder(tf.float32, shape=(None, IMAGE_PIXELS), name="img")
            self.labels = v1.placeholder(tf.float32, shape=(None, CLASSES), name="labels")
            self.training = v1.placeholder_with_default(False, shape=(), name="training")
            x = self.images
            if self.config.augment:
                # Training batches are shifted and rotated in the graph, from the run's seed and the step's
                # number (fed with each batch), exactly as the function engine does. Predictions feed the
                # network's input tensor itself, which TF1 allows, so the augmentation never runs for them.
                self.step = v1.placeholder_with_default(tf.constant(0, tf.int64), shape=(), name="step")
                seed = tf.constant(self.config.seed, tf.int64, name="seed")
                x = augment_images(self.images, seed, self.step)
            self.network_input = x
        # Keras layers can be called on TensorFlow tensors.
        layers = make_layers(self.config, tf_keras.layers)
        with tf.name_scope("NN"):
            for layer in layers:
                x = layer(x, training=self.training) if isinstance(layer, tf_keras.layers.Dropout) else layer(x)
            self.predictions = x
        self.weighted_layers = weighted_layers(self.config, layers)
        with tf.name_scope("loss"):
            self.loss = tf.reduce_mean(tf_keras.losses.categorical_crossentropy(self.labels, self.predictions))
        with tf.name_scope("accuracy"):
            self.accuracy = tf.reduce_mean(tf_keras.metrics.categorical_accuracy(self.labels, self.predictions))
        # The article's tf.summary.scalar('loss', loss), merged. Its tag would come out as "loss_1", since
        # the name scope "loss" is taken; the raw op takes the tag as given, like the function engine's.
        self.merged = v1.summary.merge([
            tf.raw_ops.ScalarSummary(tags="loss", values=self.loss, name="loss_summary"),
            tf.raw_ops.ScalarSummary(tags="batch_accuracy", values=self.accuracy, name="accuracy_summary"),
        ])
        with tf.name_scope("train"):
            # No gating: TF1's default (GATE_OP) puts an identity between each op's gradients and their users,
            # which stops oneDNN from computing a convolution's bias gradient with its kernel gradient, as
            # it does in the function engine; the sums then differ in the last bits, and training amplifies
            # that into losses that differ by percents within a hundred steps.
            self.train_step = make_v1_optimizer(self.config).minimize(self.loss, gate_gradients=v1.train.Optimizer.GATE_NONE)
        self.variables = [v for layer in self.weighted_layers for v in (layer.kernel, layer.bias)]
        self._weight_inputs = [v1.placeholder(v.dtype.base_dtype, v.shape) for v in self.variables]
        self._assign_weights = [v.assign(p) for v, p in zip(self.variables, self._weight_inputs)]

    def _load_weights(self, weights: list[np.ndarray]) -> None:
        self.sess.run(self._assign_weights, feed_dict=dict(zip(self._weight_inputs, weights)))

    def train_chunk(self, chunk_indices: np.ndarray, first_step: int) -> tuple[np.ndarray, np.ndarray]:
        """One sess.run per step, as in the article, the merged loss summary written every step."""
        losses = np.empty(len(chunk_indices), np.float32)
        accuracies = np.empty(len(chunk_indices), np.float32)
        for i, batch in enumerate(chunk_indices):
            feed = {self.images: self.x_train[batch], self.labels: self.y_train[batch], self.training: True}
            if self.config.augment:
                feed[self.step] = first_step + i
            # The article wrote `summary, loss = sess.run([merged, train_step])`, rebinding `loss` to the
            # train op's None; fetch the loss tensor itself instead.
            summary, losses[i], accuracies[i], _ = self.sess.run(
                [self.merged, self.loss, self.accuracy, self.train_step], feed_dict=feed)
            self.writer.add_summary(summary, global_step=first_step + i)
        return losses, accuracies

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) for float32 images (N, 28, 28)."""
        flat = images.reshape(len(images), IMAGE_PIXELS)
        parts = [self.sess.run(self.predictions, {self.network_input: flat[i:i + PREDICT_BATCH]})
                 for i in range(0, len(flat), PREDICT_BATCH)]
        return np.concatenate(parts)

    def weights(self) -> list[np.ndarray]:
        """Kernel and bias of every layer with weights (Dense, Conv2D), in core.network's order."""
        return self.sess.run(self.variables)

    def load_weights(self, weights: list[np.ndarray]) -> None:
        """Start from these weights (another run's, in core.network's order) instead of the initial ones."""
        self._load_weights(weights)

    def stop_together(self, stop: bool) -> bool:
        """One Session on one device: nobody else to agree with."""
        return stop

    def write_summaries(self, step: int, protos: list) -> None:
        """Write ready-made summary protos (see core/tensorboard_summaries.py) through the run's FileWriter."""
        for proto in protos:
            self.writer.add_summary(proto.SerializeToString(), global_step=step)

    def close(self) -> None:
        """Flush the event file and release the session."""
        self.writer.close()
        self.sess.close()


ENGINE = SessionEngine
