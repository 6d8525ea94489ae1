"""Fine-tuning: a run that starts from another run's weights (`init_from`) and mixes a frozen snapshot of kept
drawings into every batch (`collection`, `collection_share`; core/collection.py).

What a fine-tuning run trains on is the original training data and the snapshot's training drawings side by
side in one dataset: each batch takes `collection_share` of its images from the drawings and the rest from the
original data (MixedBatchSchedule), so the engines need nothing new and both train it, shifted and rotated by
the `augment` setting like any batch. It is measured twice, before its first step and after its last: on the
original test set, and on the snapshot's held-out drawings; both go in its summary.

Why the layers must match: the weights of `init_from` fill this run's variables one for one, so a run whose
layers differ could only start from fresh weights, which would not be what was asked for; it is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import collection as collections
from core.access import Identity, owner_of
from core.collection import Collection
from core.config import TrainConfig
from core.data import Dataset
from core.network import describe_layers, weight_shapes
from core.records import SUCCESSFUL_STATES, RunNotFound
from core.run_folder import Run
from core.store import load_run

# The Draw page's recipe (fine_tune_config): a few hundred augmented steps at a fifth of the run's learning rate,
# a quarter of each batch from the drawings. Measured on a slashed zero (tests/test_fine_tune.py): enough to read
# the new style while the original test accuracy moves by less than a point.
FINE_TUNE_STEPS = 300
FINE_TUNE_EVAL_EVERY = 100
LEARNING_RATE_FACTOR = 0.2
FINE_TUNE_SHARE = 0.25
# What must be the same for one run's weights to fill another's network, besides the weights' shapes (which the
# hidden layers, or a CNN's filters, decide).
SAME_SETTINGS = ("architecture", "activation")


class FineTuneError(ValueError):
    """A fine-tuning run that cannot start as configured; the message says what and how to fix it."""


def check_same_layers(config: TrainConfig, source: TrainConfig, source_id: str) -> None:
    """Refuse a config whose layers are not those of the run it starts from."""
    if weight_shapes(config) == weight_shapes(source) and all(getattr(config, name) == getattr(source, name)
                                                              for name in SAME_SETTINGS):
        return
    raise FineTuneError(f"init_from run {source_id} has the layers {describe_layers(source)} ({source.architecture}, "
                        f"{source.activation}) and this run {describe_layers(config)} ({config.architecture}, "
                        f"{config.activation}); a run starts from another's weights only with the same layers: set "
                        f"the layers, {' and '.join(SAME_SETTINGS)} as that run has them")


def source_run(config: TrainConfig, runs_dir: Path) -> Run | None:
    """The run `init_from` names, checked: it ended with a model and has this config's layers. None without it."""
    if not config.init_from:
        return None
    try:
        source = load_run(config.init_from, runs_dir)
    except RunNotFound as error:
        raise FineTuneError(f"init_from: {error}; give the id of a run that ended with a model") from None
    if source.damaged or source.state not in SUCCESSFUL_STATES or not source.has_model:
        raise FineTuneError(f"init_from: run {source.run_id} is {source.state} and has no model to start from; give "
                            "the id of a completed or stopped run")
    check_same_layers(config, source.config, source.run_id)
    return source


def check(config: TrainConfig, runs_dir: Path, identity: Identity) -> None:
    """Everything a fine-tuning run needs before it is queued: the run it starts from, and the snapshot it
    trains on among who asks' own drawings."""
    source_run(config, runs_dir)
    if config.collection:
        collections.load_snapshot(runs_dir, identity.key, config.collection)


def fine_tune_config(source: Run, snapshot_id: str | None) -> TrainConfig:
    """The Draw page's fine-tuning run: the source run's settings, from its weights, on its data mixed with the
    snapshot, augmented, for FINE_TUNE_STEPS at a fifth of its learning rate (a fine-tuned run's own rate: that
    is already the fifth), on one device."""
    config = source.config
    rate = config.learning_rate if config.init_from \
        else max(1e-5, round(config.learning_rate * LEARNING_RATE_FACTOR, 10))
    return config.replace(init_from=source.run_id, collection=snapshot_id, collection_share=FINE_TUNE_SHARE,
                          augment=True, xla=None, distribute="none", steps=FINE_TUNE_STEPS,
                          eval_every=FINE_TUNE_EVAL_EVERY, learning_rate=rate)


class MixedBatchSchedule:
    """Batches that take a fixed number of images from the drawings (indices after the original data's) and the
    rest from the original data, each part in shuffled epochs of its own drawn from the seed."""

    def __init__(self, original_size: int, drawings_size: int, batch_size: int, share: float, seed: int):
        from core.training import BatchSchedule  # deferred: core.training imports this module

        self.from_drawings = min(batch_size, max(1, round(batch_size * share)))
        self.original_size = original_size
        self.original = BatchSchedule(original_size, batch_size - self.from_drawings, seed)
        self.drawings = BatchSchedule(drawings_size, self.from_drawings, seed + 1)

    def take(self, steps: int) -> np.ndarray:
        """The next `steps` batches as int32 indices (steps, batch_size): original images first, drawings last."""
        return np.concatenate([self.original.take(steps), self.drawings.take(steps) + self.original_size], axis=1)


@dataclass(frozen=True)
class FineTuning:
    """What a run trains on and starts from: the dataset (mixed with the drawings' training part), the
    snapshot (None without a collection) and the weights of `init_from` (None without it)."""

    dataset: Dataset
    collection: Collection | None
    initial_weights: list[np.ndarray] | None

    def schedule(self, config: TrainConfig):
        """The batches' order: mixed with the drawings when there are some, else the plain BatchSchedule."""
        from core.training import BatchSchedule

        if self.collection is None:
            return BatchSchedule(len(self.dataset.y_train), config.batch_size, config.seed)
        drawings = len(self.collection.train_labels)
        return MixedBatchSchedule(len(self.dataset.y_train) - drawings, drawings, config.batch_size,
                                  config.collection_share, config.seed)

    def measure_start(self, engine, evaluate) -> dict:
        """The summary's figures before the first step (`evaluate`: core.training's); none for other runs."""
        if self.initial_weights is None and self.collection is None:
            return {}
        return {"initial_test_accuracy": evaluate(engine, self.dataset)[1],
                "initial_collection_accuracy": self.collection_accuracy(engine)}

    def measure_end(self, engine) -> dict:
        """The summary's figures on the drawings after the last step; none without a collection."""
        if self.collection is None:
            return {}
        return {"collection_accuracy": self.collection_accuracy(engine),
                "collection_held_out": int(len(self.collection.test_labels))}

    def collection_accuracy(self, engine) -> float | None:
        """The engine's accuracy on the snapshot's held-out drawings; None without a collection."""
        if self.collection is None:
            return None
        predicted = engine.predict(self.collection.test_images).argmax(axis=1)
        return float(np.mean(predicted == self.collection.test_labels))


def prepare(config: TrainConfig, run: Run, dataset: Dataset) -> FineTuning:
    """Read what a run needs beyond its data: the snapshot of its owner's drawings, mixed into the dataset, and
    the weights of the run it starts from."""
    runs_dir = run.path.parent
    source = source_run(config, runs_dir)
    weights = initial_weights_of(source, config) if source else None
    if not config.collection:
        return FineTuning(dataset, None, weights)
    snapshot = collections.load_snapshot(runs_dir, owner_of(run.status), config.collection)
    drawings = len(snapshot.train_labels)
    mixed = dataclasses.replace(
        dataset, x_train=np.concatenate([dataset.x_train, snapshot.train_images]),
        y_train=np.concatenate([dataset.y_train, snapshot.train_labels.astype(dataset.y_train.dtype)]),
        description=f"{dataset.description} + {drawings} of your drawings (snapshot {snapshot.snapshot_id})")
    return FineTuning(mixed, snapshot, weights)


def initial_weights_of(source: Run, config: TrainConfig) -> list[np.ndarray]:
    """The trained weights of a run's model.keras, in core.network's order (Keras' safe mode loads it)."""
    from core.network import load_model

    weights = [np.asarray(w, np.float32) for w in load_model(source.model_path).get_weights()]
    if [w.shape for w in weights] != [tuple(s) for s in weight_shapes(config)]:
        raise FineTuneError(f"init_from: the model of run {source.run_id} does not have the weights its config "
                            "describes; start from another run")
    return weights


def engine_cache(config: TrainConfig, networks):
    """The compiled networks a run may use: the worker's own, except for a run mixed with drawings, whose dataset
    no other run shares; it gets a cache of its own that goes with it, so a worker does not keep its tensors."""
    if not config.collection or config.engine != "function":
        return networks
    from core.engines.function import NetworkCache

    return NetworkCache(size=1)
