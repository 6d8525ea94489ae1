"""The `function` engine: Keras 3 layers called on raw TensorFlow tensors, TensorFlow owning the training.

This is the article's idea in today's TensorFlow. No Keras `Model` is trained and `fit` is never called:
the network's layers (Dense, or Conv2D and pooling for the CNN) are applied to a TF tensor gathered from the
resident training data (name scope `input`, the stand-in for the article's placeholders, where augmentation
happens too), the loss is a TF op over their output (`loss`), and a GradientTape with the optimizer updates
the weights (`train`): that step is core/engines/function_step.py's. This module runs it: steps are grouped
into one `tf.function` call per chunk, because at batch 50 a step costs less than TensorFlow's per-call
overhead, and the traced (and XLA-compiled) chunks of each network shape are kept for the next run of that
shape (NetworkCache).

With the `distribute` setting the same step runs inside `strategy.run` (core/engines/distribute.py picks the
strategy): every replica takes its share of the batch, its loss is averaged over the whole batch
(`tf.nn.compute_average_loss`), the optimizer sums the replicas' gradients, and the chunk's loop stays in one
graph call. Only the chief writes summaries.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import numpy as np
import tensorflow as tf

from core.data import Dataset
from core.engines import chunk_steps_for, distribute
from core.engines.function_step import apply_layers, build_layers, make_optimizer, make_train_step, write_step_summaries
from core.network import CLASSES, IMAGE_PIXELS, PREDICT_BATCH, initial_weights, weighted_layers

XLA_MIN_STEPS = 5000  # measured crossover: 3,000 steps run faster without XLA, 10,000 much faster with it
# Compiled networks a cache keeps, least recently used out first (each holds its variables and traced graphs).
# Forgetting one does not give all its memory back: TensorFlow keeps part of every traced and compiled
# function for the life of the process, and what it captured (about 14 MB a shape here, bench/worker_memory.py),
# which is why the networks of one dataset share its training tensors, and a warm worker has a memory budget
# and makes way for a fresh one (core/worker.py).
CACHED_SHAPES = 4


def uses_xla(config, min_steps: int = XLA_MIN_STEPS) -> bool:
    """Whether full chunks go through XLA: as the config says, or by default only for runs long enough.

    Compiling costs about a second here and then saves about a quarter of a millisecond per step, so it
    pays off from a few thousand steps on; a short run (the article's 1,000 steps) is done sooner without.
    A warm worker, which compiles each shape once for many runs, passes min_steps=0. Never for the CNN
    (XLA's convolutions on CPU measured 20 to 50 times slower) nor with augmentation (XLA has no kernel for
    the image transform); nor for a distributed run, whose steps cross devices. The config refuses xla=True
    for those.
    """
    if config.architecture == "cnn" or config.augment or config.distribute != "none":
        return False
    return config.xla if config.xla is not None else config.steps >= min_steps


def shape_key(config, dataset: Dataset, use_xla: bool) -> tuple:
    """What a traced and compiled training step depends on; runs with the same key share one.

    The learning rate is not in it (it is a variable of the optimizer), nor the seed, except with dropout:
    the dropout layers' random state is built from it (augmentation takes the seed as an argument).
    """
    hidden_units = tuple(config.hidden_units) if config.architecture == "mlp" else None
    replicas = config.cpu_replicas if config.distribute == "mirrored" else None
    return (config.architecture, hidden_units, config.activation, config.dropout_rate, config.augment,
            config.optimizer, config.batch_size, chunk_steps_for(config), use_xla, dataset.name,
            dataset.description, config.seed if config.dropout_rate > 0 else None, config.distribute, replicas)


class CompiledNetwork:
    """The network, its optimizer and its traced (and XLA-compiled) chunk functions for one shape.

    A warm worker keeps these between runs: a new run of the same shape assigns its initial weights and
    learning rate into the existing variables and resets the optimizer, so it pays no tracing or compiling
    and trains exactly as a freshly built network would (tests/test_service.py compares the losses).
    """

    def __init__(self, config, dataset: Dataset, use_xla: bool, placement: distribute.Placement = distribute.SINGLE,
                 train_tensors: tuple | None = None):
        self.dataset = dataset
        self.placement = placement
        strategy = placement.strategy
        # The training split as tensors, shared by the cached networks of one dataset when given (full MNIST
        # is 188 MB a copy).
        self.x_train, self.y_train = train_tensors or (tf.constant(dataset.x_train), tf.constant(dataset.y_train))
        # Under a strategy, the variables (weights, optimizer slots) are mirrored: one copy per replica.
        with strategy.scope() if strategy else contextlib.nullcontext():
            self.layers = build_layers(config)
            self.optimizer = make_optimizer(config)
            self.optimizer.build([v for layer in self.layers for v in layer.trainable_variables])
        # Everything but the kernels, biases and learning rate goes back to how it was built: the
        # optimizer's step count and slots, the dropout layers' random state.
        self._state = [v for layer in self.layers for v in layer.non_trainable_variables] + list(self.optimizer.variables)
        self._fresh_state = [v.numpy() for v in self._state]
        self.weighted = weighted_layers(config, self.layers)
        train_step = make_train_step(self.layers, self.optimizer, self.x_train, self.y_train, config.augment,
                                     strategy, config.batch_size)
        self.chunk_steps = chunk_steps_for(config)
        self.use_xla = use_xla

        def run_steps(chunk_indices, first_step, seed):
            steps = tf.shape(chunk_indices)[0]
            losses = tf.TensorArray(tf.float32, size=steps)
            accuracies = tf.TensorArray(tf.float32, size=steps)
            for i in tf.range(steps):
                loss, accuracy = train_step(chunk_indices[i], first_step + tf.cast(i, tf.int64), seed)
                losses = losses.write(i, loss)
                accuracies = accuracies.write(i, accuracy)
            return losses.stack(), accuracies.stack()

        # Several steps run inside one graph call, because at batch 50 a step costs less than TensorFlow's
        # per-call overhead. Full chunks have one fixed shape and go through XLA, which fuses the whole
        # loop (about twice as fast here); XLA compiles once per shape, so the odd-sized chunks before an
        # evaluation or at the end take the plain graph instead.
        # The first step's number and the run's seed come in as arguments (they only matter with
        # augmentation), so runs of every seed share the traced functions.
        batch = config.batch_size
        numbers = [tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.int64)]
        self.full_chunk = tf.function(run_steps, jit_compile=True,
                                      input_signature=[tf.TensorSpec((self.chunk_steps, batch), tf.int32), *numbers])
        self.any_chunk = tf.function(run_steps, input_signature=[tf.TensorSpec((None, batch), tf.int32), *numbers])
        self.predict = tf.function(lambda images: apply_layers(self.layers, images, training=False),
                                   input_signature=[tf.TensorSpec((None, IMAGE_PIXELS), tf.float32)])
        self._graph_def = None
        if strategy is not None:
            self.votes = tf.function(lambda vote: strategy.reduce(
                tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(vote)), axis=None),
                input_signature=[tf.TensorSpec((), tf.float32)])

    @property
    def graph_def(self):
        """The op graph of a chunk of training steps (name scopes input, NN, loss, train), for TensorBoard."""
        if self._graph_def is None:
            self._graph_def = self.any_chunk.get_concrete_function().graph.as_graph_def()
        return self._graph_def

    def reset(self, config) -> None:
        """Start over for a run: its initial weights and learning rate, a fresh optimizer and dropout state."""
        weights = initial_weights(config)
        for layer, kernel, bias in zip(self.weighted, weights[0::2], weights[1::2]):
            layer.kernel.assign(kernel)
            layer.bias.assign(bias)
        for variable, value in zip(self._state, self._fresh_state):
            variable.assign(value)
        self.optimizer.learning_rate.assign(config.learning_rate)


class NetworkCache:
    """Compiled networks kept between runs, the most recently used first; a few shapes at most.

    Whoever trains many runs owns one and hands it down (a warm worker: core/worker.py); NETWORKS serves the rest.
    A warm worker's cache compiles with XLA later (`compile_later`): a run that leaves XLA to the engine trains
    at once on the plain graph when its shape has no XLA-compiled network yet, and the shape waits in `pending`
    until the worker is idle and calls `compile_pending`; the next run of that shape then uses XLA. So nobody's
    press waits for a compiler (about a second a shape here) that only pays off over later runs.
    """

    def __init__(self, size: int = CACHED_SHAPES, xla_min_steps: int = XLA_MIN_STEPS, compile_later: bool = False):
        self.size, self.xla_min_steps, self.compile_later = size, xla_min_steps, compile_later
        self.networks: OrderedDict[tuple, CompiledNetwork] = OrderedDict()
        self.pending: OrderedDict[tuple, tuple] = OrderedDict()  # XLA shapes to compile when idle: (config, dataset)

    def get(self, config, dataset: Dataset) -> CompiledNetwork:
        """The compiled network for this config's shape on this dataset, built (and traced later) if new."""
        use_xla = uses_xla(config, self.xla_min_steps)
        if use_xla and self.compile_later and config.xla is None:
            compiled = shape_key(config, dataset, True)
            if compiled not in self.networks or self.networks[compiled].dataset is not dataset:
                self.pending[compiled] = (config, dataset)
                use_xla = False
        network = self._network(config, dataset, use_xla)
        network.reset(config)
        return network

    def _network(self, config, dataset: Dataset, use_xla: bool) -> CompiledNetwork:
        key = shape_key(config, dataset, use_xla)
        network = self.networks.get(key)
        if network is None or network.dataset is not dataset:
            network = CompiledNetwork(config, dataset, use_xla, distribute.prepare(config),
                                      self._train_tensors(dataset))
            self.networks[key] = network
            while len(self.networks) > self.size:
                self.networks.popitem(last=False)
        self.networks.move_to_end(key)
        return network

    def want(self, config, dataset: Dataset) -> None:
        """Note a shape to compile with XLA when idle (a warm worker's guess at the next run: the article's)."""
        if uses_xla(config, self.xla_min_steps):
            key = shape_key(config, dataset, True)
            if key not in self.networks:
                self.pending[key] = (config, dataset)

    def compile_pending(self) -> bool:
        """Compile the oldest shape waiting for XLA: build it and run a chunk of each kind through it on
        throwaway batches (the next run resets the weights). Returns False when nothing waits."""
        if not self.pending:
            return False
        key, (config, dataset) = self.pending.popitem(last=False)
        network = self._network(config, dataset, True)
        batches = np.zeros((network.chunk_steps, config.batch_size), np.int32)
        seed = tf.constant(config.seed, tf.int64)
        network.full_chunk(tf.constant(batches), tf.constant(0, tf.int64), seed)
        network.any_chunk(tf.constant(batches[:3]), tf.constant(0, tf.int64), seed)
        network.predict(tf.constant(dataset.x_test[:10].reshape(-1, IMAGE_PIXELS).astype(np.float32)))
        self.networks.pop(shape_key(config, dataset, False), None)  # the plain graph served until now: replaced
        return True

    def _train_tensors(self, dataset: Dataset) -> tuple | None:
        """The training split's tensors of a cached network on the same dataset, if there is one."""
        return next(((network.x_train, network.y_train) for network in self.networks.values()
                     if network.dataset is dataset), None)

    def clear(self) -> None:
        """Forget every compiled network: the next run of any shape is built and traced afresh."""
        self.networks.clear()
        self.pending.clear()


# The cache of a process that owns none: the CLI's one run, tests training in line. Nothing changes its settings.
NETWORKS = NetworkCache()


class FunctionEngine:
    """Trains a config on a dataset in chunks of steps, writing TensorBoard summaries as it goes."""

    name = "function"

    def __init__(self, config, dataset: Dataset, log_dir, cache: NetworkCache = NETWORKS):
        self.config = config
        self.network = cache.get(config, dataset)
        self.placement = self.network.placement
        # Only the chief writes TensorBoard's summaries: the other workers of a multi-worker run compute the
        # same steps and would only write them again.
        self.writer = tf.summary.create_file_writer(str(log_dir)) if self.placement.is_chief else None
        self.chunk_steps = self.network.chunk_steps
        self.use_xla = self.network.use_xla
        self.layers = self.network.layers
        self.seed = tf.constant(config.seed, tf.int64)
        # The graph goes to TensorBoard's Graphs tab from the compiled network, so no chunk needs tracing
        # again to record it (an XLA-compiled call records no ops anyway).
        if self.writer is not None:
            with self.writer.as_default():
                tf.summary.graph(self.network.graph_def)

    def train_chunk(self, chunk_indices: np.ndarray, first_step: int) -> tuple[np.ndarray, np.ndarray]:
        """Run len(chunk_indices) steps and log them; returns their losses and batch accuracies."""
        use_xla = self.use_xla and len(chunk_indices) == self.chunk_steps
        run = self.network.full_chunk if use_xla else self.network.any_chunk
        losses, accuracies = run(tf.constant(chunk_indices, tf.int32), tf.constant(first_step, tf.int64), self.seed)
        self._write_steps(losses, accuracies, first_step)
        return losses.numpy(), accuracies.numpy()

    def _write_steps(self, losses, accuracies, first_step: int) -> None:
        # XLA cannot hold summary ops, so the losses come out of the chunk and a second graph call writes
        # them: still one TensorBoard point per step, as in the article.
        if self.writer is None:
            return
        write_step_summaries(self.writer._resource, losses, accuracies, tf.constant(first_step, tf.int64))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) for float32 images (N, 28, 28)."""
        flat = images.reshape(len(images), IMAGE_PIXELS).astype(np.float32, copy=False)
        parts = [self.network.predict(tf.constant(flat[start:start + PREDICT_BATCH])).numpy()
                 for start in range(0, len(flat), PREDICT_BATCH)]
        return np.concatenate(parts) if parts else np.empty((0, CLASSES), np.float32)

    def weights(self) -> list[np.ndarray]:
        """Kernel and bias of every layer with weights (Dense, Conv2D), in core.network's order."""
        return [w for layer in self.network.weighted for w in layer.get_weights()]

    def load_weights(self, weights: list[np.ndarray]) -> None:
        """Start from these weights (another run's, in core.network's order) instead of the initial ones."""
        for layer, kernel, bias in zip(self.network.weighted, weights[0::2], weights[1::2]):
            layer.kernel.assign(kernel)
            layer.bias.assign(bias)

    def stop_together(self, stop: bool) -> bool:
        """Whether the run stops now: `stop` on one process; on a multi-worker run, True on every worker as soon
        as one of them wants to stop, so that none is left waiting for the others' next step."""
        if self.placement.distribute != "multi-worker":
            return stop
        return bool(self.network.votes(tf.constant(1.0 if stop else 0.0)).numpy() > 0)

    def write_summaries(self, step: int, protos: list) -> None:
        """Write ready-made summary protos (see core/tensorboard_summaries.py) at `step`."""
        if self.writer is None:
            return
        with self.writer.as_default():
            for proto in protos:
                tf.summary.experimental.write_raw_pb(proto.SerializeToString(), step=step)

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()


ENGINE = FunctionEngine
