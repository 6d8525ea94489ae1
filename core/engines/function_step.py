"""The `function` engine's training step, the article's graph in today's TensorFlow: Keras 3 layers called on a
raw TensorFlow tensor, the loss a TF op over their output, a GradientTape and the optimizer updating the weights.

Name scopes follow the article's TensorBoard graph: `input` (the batch gathered from the resident training data,
the stand-in for its placeholders, and augmented there), `NN` (the layers), `loss`, `train`, `accuracy`.
core/engines/function.py runs this step in chunks and keeps it compiled between runs; each chunk's losses and
accuracies go to TensorBoard from inside the graph (write_step_summaries).
"""

from __future__ import annotations

import tensorflow as tf
import keras
from tensorboard.plugins.scalar import metadata as scalar_metadata

from core.engines import augment_images
from core.network import CLASSES, IMAGE_PIXELS, initial_weights, layer_shapes, make_layers, weighted_layers

SCALAR_METADATA = scalar_metadata.create_summary_metadata(display_name=None, description=None).SerializeToString()

# One entry per choice of the optimizer setting (core.config.OPTIMIZERS), from the learning rate to a Keras 3
# optimizer; the session engine has the same table for TF1 (tests/test_settings_as_data.py checks both).
KERAS_OPTIMIZERS = {
    "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate),
    "momentum": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=0.9),
    "adam": lambda learning_rate: keras.optimizers.Adam(learning_rate),
    "rmsprop": lambda learning_rate: keras.optimizers.RMSprop(learning_rate),
}


def make_optimizer(config):
    """The optimizer the config names, at its learning rate; ValueError if this engine has none of that name."""
    if config.optimizer not in KERAS_OPTIMIZERS:
        raise ValueError(f"the function engine has no optimizer {config.optimizer!r}: it has "
                         f"{', '.join(KERAS_OPTIMIZERS)}; add it to KERAS_OPTIMIZERS in core/engines/function_step.py")
    return KERAS_OPTIMIZERS[config.optimizer](config.learning_rate)


def build_layers(config) -> list:
    """The network's Keras 3 layers (core.network), built and set to the shared initial weights."""
    layers = make_layers(config, keras.layers)
    for layer, (_, input_shape, _) in zip(layers, layer_shapes(config)):
        layer.build((None, *input_shape))
    weights = initial_weights(config)
    for layer, kernel, bias in zip(weighted_layers(config, layers), weights[0::2], weights[1::2]):
        layer.set_weights([kernel, bias])
    return layers


def apply_layers(layers: list, images: tf.Tensor, training: bool) -> tf.Tensor:
    """Call the Keras layers on a raw TF tensor of flat images: the heart of the article (the CNN's first
    layer reshapes them to 28x28x1)."""
    x = images
    for layer in layers:
        x = layer(x, training=training) if isinstance(layer, keras.layers.Dropout) else layer(x)
    return x


def make_train_step(layers: list, optimizer, x_train: tf.Tensor, y_train: tf.Tensor, augment: bool = False,
                    strategy=None, batch_size: int | None = None):
    """One training step on the batch at `batch_indices`: tape, loss, gradients, apply, batch accuracy.

    With `augment`, the batch is shifted and rotated first (core.engines.augment_images), drawn from the
    run's seed and the step's number, exactly as the session engine does.

    With a `strategy`, each replica runs the step on its share of the `batch_size` images (replica r of R takes
    images r*B//R to (r+1)*B//R, so any batch splits), its loss is its images' losses summed over the whole
    batch's size, and the optimizer sums the gradients of all replicas: the step a single device would make.
    The returned loss and accuracy are the replicas' parts summed, i.e. the whole batch's.
    """
    variables = [v for layer in layers for v in layer.trainable_variables]

    def replica_step(batch_indices, step, seed):
        with tf.name_scope("input"):
            if strategy is None:
                mine = batch_indices
            else:
                context = tf.distribute.get_replica_context()
                replica, replicas = context.replica_id_in_sync_group, context.num_replicas_in_sync
                first = batch_size * replica // replicas
                mine = batch_indices[first:batch_size * (replica + 1) // replicas]
            images = tf.reshape(tf.gather(x_train, mine), (-1, IMAGE_PIXELS))
            if augment:
                images = (augment_images(images, seed, step) if strategy is None
                          else augment_images(images, seed, step, first, batch_size))
            labels = tf.one_hot(tf.gather(y_train, mine), CLASSES)
        with tf.GradientTape() as tape:
            with tf.name_scope("NN"):
                predictions = apply_layers(layers, images, training=True)
            with tf.name_scope("loss"):
                per_image = keras.losses.categorical_crossentropy(labels, predictions)
                loss = (tf.reduce_mean(per_image) if strategy is None
                        else tf.nn.compute_average_loss(per_image, global_batch_size=batch_size))
        with tf.name_scope("train"):
            gradients = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(gradients, variables))
        with tf.name_scope("accuracy"):
            correct = tf.cast(keras.metrics.categorical_accuracy(labels, predictions), tf.float32)
            accuracy = tf.reduce_mean(correct) if strategy is None else tf.reduce_sum(correct) / batch_size
        return loss, accuracy

    if strategy is None:
        return replica_step

    def train_step(batch_indices, step, seed):
        losses, accuracies = strategy.run(replica_step, args=(batch_indices, step, seed))
        total = tf.distribute.ReduceOp.SUM
        return strategy.reduce(total, losses, axis=None), strategy.reduce(total, accuracies, axis=None)

    return train_step


# TensorBoard's scalar summaries for every step, written from inside one graph call. The run's writer comes
# in as an argument, so one traced function serves every run (a writer captured by closure would mean a
# new trace per run).
@tf.function(input_signature=[tf.TensorSpec((), tf.resource), tf.TensorSpec((None,), tf.float32),
                              tf.TensorSpec((None,), tf.float32), tf.TensorSpec((), tf.int64)])
def write_step_summaries(writer, losses, accuracies, first_step):
    for i in tf.range(tf.shape(losses)[0]):
        step = first_step + tf.cast(i, tf.int64)
        tf.raw_ops.WriteSummary(writer=writer, step=step, tensor=losses[i], tag="loss",
                                summary_metadata=SCALAR_METADATA)
        tf.raw_ops.WriteSummary(writer=writer, step=step, tensor=accuracies[i], tag="batch_accuracy",
                                summary_metadata=SCALAR_METADATA)
    return tf.constant(True)
