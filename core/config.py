"""The one configuration object: every hyperparameter of a run, its default, and its validation."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu")
OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
ENGINES = ("function", "session")
DATASETS = ("mnist", "fashion_mnist")
# Where the images come from. "auto" tries Keras' download (or its cache), then the offline sample.
SOURCES = ("auto", "keras", "offline", "path")

# The article's network: 784 -> 128 -> 128 -> 10.
ARTICLE_HIDDEN_UNITS = (128, 128)


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as config.json in the run folder."""

    hidden_units: list[int] = field(default_factory=lambda: list(ARTICLE_HIDDEN_UNITS))  # units per hidden layer
    activation: str = "relu"  # activation of every hidden layer; the output is always softmax
    dropout_rate: float = 0.0  # dropout after each hidden layer (0 = none, as in the article)
    optimizer: str = "sgd"  # sgd (the article's), momentum (SGD with 0.9), adam, rmsprop
    learning_rate: float = 0.5  # the article's GradientDescentOptimizer(0.5)
    batch_size: int = 50  # images per training step
    steps: int = 1000  # training steps (batches), not epochs
    eval_every: int = 100  # evaluate on the test split every this many steps (and at the end)
    seed: int = 42  # seeds the weights, the batch order and dropout: same seed, same run
    dataset: str = "mnist"  # mnist or fashion_mnist
    source: str = "auto"  # auto, keras, offline or path
    data_path: str | None = None  # mnist.npz or a folder of IDX files, used when source is "path"
    engine: str = "function"  # function (TF2 tf.function) or session (the article's TF1 Session)
    xla: bool | None = None  # function engine: compile chunks with XLA (None: from 5,000 steps on); not for session

    def __post_init__(self) -> None:
        if isinstance(self.hidden_units, (list, tuple)):
            self.hidden_units = list(self.hidden_units)
        validate(self)

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build a config from a dict, rejecting unknown fields by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; expected some of {sorted(known)}")
        return cls(**values)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def save(self, path: Path) -> None:
        """Write the config as pretty JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        """Read a config.json written by save()."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def architecture(self) -> str:
        """The layer sizes as the article writes them, e.g. '784-128-128-10'."""
        return "-".join(str(n) for n in [784, *self.hidden_units, 10])


def _check_int(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number from {low} to {high}; got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low} to {high}; got {value}")


def _check_float(name: str, value, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}; got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low:g} to {high:g}; got {value:g}")


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def validate(config: TrainConfig) -> None:
    """Raise ValueError naming the field, the value and the allowed range for the first bad field."""
    units = config.hidden_units
    if not isinstance(units, list) or not 1 <= len(units) <= 4:
        raise ValueError(f"hidden_units must list 1 to 4 layers; got {units!r}")
    for index, count in enumerate(units):
        _check_int(f"hidden_units[{index}]", count, 16, 1024)
    _check_choice("activation", config.activation, ACTIVATIONS)
    _check_float("dropout_rate", config.dropout_rate, 0.0, 0.8)
    _check_choice("optimizer", config.optimizer, OPTIMIZERS)
    _check_float("learning_rate", config.learning_rate, 1e-5, 10.0)
    _check_int("batch_size", config.batch_size, 1, 4096)
    _check_int("steps", config.steps, 1, 200_000)
    _check_int("eval_every", config.eval_every, 1, 200_000)
    _check_int("seed", config.seed, 0, 2**31 - 1)
    _check_choice("dataset", config.dataset, DATASETS)
    _check_choice("source", config.source, SOURCES)
    _check_choice("engine", config.engine, ENGINES)
    if config.xla is not None and not isinstance(config.xla, bool):
        raise ValueError(f"xla must be true, false or null (the engine's default); got {config.xla!r}")
    if config.engine == "session" and config.xla:
        # Options an engine cannot honour are refused by name, never silently ignored.
        raise ValueError("xla=True is a function-engine option: the session engine runs its TF1 graph as "
                         "built; leave xla unset or false with engine 'session'")
    if config.source == "path" and not config.data_path:
        raise ValueError("source 'path' needs data_path: an mnist.npz file or a folder with the four IDX files")
