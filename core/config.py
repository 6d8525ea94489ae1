"""Every setting of a run, declared once as data: validation, the CLI's flags and the Train page's widgets
are all derived from `SETTINGS`; `TrainConfig` holds one run's values, one plain field per setting.

Adding a setting takes its `Setting(...)` in SETTINGS and a field of the same name, type and default in
`TrainConfig` (plus the engine code that honours it): its flag, its widget, its check and its place in
config.json follow from the Setting. tests/test_settings_as_data.py compares the two, so a setting added in
one place and not the other fails there. (Why a field written out rather than a class generated from
SETTINGS: a generated class shows readers and editors no fields at all, and a generated .pyi stub would be a
second file to keep in step that readers of this module never see.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from core.network import describe_layers

ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu")
OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
ENGINES = ("function", "session")
ARCHITECTURES = ("mlp", "cnn")
DISTRIBUTES = ("none", "mirrored", "multi-worker")
MAX_CPU_REPLICAS = 8
DATASETS = ("mnist", "fashion_mnist")
# Where the images come from. "auto" tries Keras' download (or its cache), then the offline sample.
SOURCES = ("auto", "keras", "offline", "path", "uploaded")
# An upload is named by the SHA-256 of its checked arrays (core/uploads.py): a run's config.json says exactly what it
# trained on, even after the upload is deleted.
UPLOAD_DIGEST = (r"[0-9a-f]{64}", "the SHA-256 of an upload, 64 hexadecimal digits")
SNAPSHOT_DIGEST = (r"[0-9a-f]{20}", "a snapshot of kept drawings, 20 hexadecimal digits")

# The article's network: 784 -> 128 -> 128 -> 10.
ARTICLE_HIDDEN_UNITS = (128, 128)
MAX_HIDDEN_LAYERS = 4
MAX_STEPS = 200_000

# What a widget shows, by kind: "layers" (a count and one width per layer), "stops" (a slider over
# suggested values, which also takes any valid value a loaded config holds), "select", "slider",
# "number" and "text".
# "upload" is a select over the uploads of who asks, which the page passes in.
WIDGETS = ("layers", "stops", "select", "slider", "number", "text", "upload")


@dataclass(frozen=True)
class Setting:
    """One setting of a run: its type, default, allowed values, and the words a person sees."""

    name: str
    kind: type  # int, float, str, bool, or list (of ints, for the hidden layers)
    default: Any
    label: str
    help: str
    widget: str
    low: float | None = None  # inclusive range for numbers (for lists: each item)
    high: float | None = None
    choices: tuple = ()  # the allowed values, for choice settings
    choice_labels: dict = field(default_factory=dict)  # how a choice reads on the page
    stops: tuple = ()  # the values a "stops" slider offers
    log_scale: bool = False  # a "stops" slider over a log scale (only changes the label)
    max_items: int = 1  # for lists: at most this many items (at least one)
    nullable: bool = False  # None is allowed (it means "the engine decides")
    # (other setting, its values) for which this one applies; values None: whenever the other has a value
    only_with: tuple[str, tuple | None] | None = None
    flag: str | None = None  # the CLI flag, if not --name-with-dashes
    step: float | None = None  # a number box's or slider's increment
    pattern: tuple[str, str] | None = None  # for text: (regular expression a value must match, it in words)

    @property
    def cli_flag(self) -> str:
        """The command-line flag: `--learning-rate` for learning_rate, unless the setting names another."""
        return self.flag or "--" + self.name.replace("_", "-")

    def applies(self, values: dict) -> bool:
        """Whether this setting means anything with these other values (XLA only for the function engine)."""
        if self.only_with is None:
            return True
        other, allowed = self.only_with
        return values.get(other) is not None if allowed is None else values.get(other) in allowed

    def describe_range(self) -> str:
        """The allowed values in words: 'from 1 to 200,000', 'one of relu, tanh ...'."""
        if self.choices:
            return "one of " + ", ".join("null" if c is None else str(c).lower() if isinstance(c, bool) else str(c)
                                         for c in self.choices)
        if self.low is None or self.high is None:
            return "any text" if self.kind is str else f"any {self.kind.__name__}"
        return f"from {_number(self.low)} to {_number(self.high)}"

    @property
    def has_limits(self) -> bool:
        """True when the setting allows only some values (a range or a list of choices)."""
        return bool(self.choices) or self.low is not None

    def check(self, value) -> None:
        """Raise ValueError naming the setting, the value and what is allowed, if `value` is not allowed."""
        if value is None and self.nullable:
            return
        if self.kind is list:
            if not isinstance(value, list) or not 1 <= len(value) <= self.max_items:
                raise ValueError(f"{self.name} must list 1 to {self.max_items} layers; got {value!r}")
            for index, item in enumerate(value):
                _check_number(f"{self.name}[{index}]", item, int, self.low, self.high)
        elif self.choices:
            if value not in self.choices or type(value) is not type(next(c for c in self.choices if c == value)):
                raise ValueError(f"{self.name} must be {self.describe_range()}; got {value!r}")
        elif self.kind in (int, float):
            _check_number(self.name, value, self.kind, self.low, self.high)
        elif not isinstance(value, self.kind):
            raise ValueError(f"{self.name} must be a {self.kind.__name__}; got {value!r}")
        elif self.pattern and not re.fullmatch(self.pattern[0], value):
            shown = value if len(value) <= 80 else f"{value[:80]}…"
            raise ValueError(f"{self.name} must be {self.pattern[1]}; got {shown!r}")


def _number(value) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _check_number(name: str, value, kind: type, low, high) -> None:
    whole = kind is int
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) \
            or (not whole and not math.isfinite(value)):
        noun = "a whole number" if whole else "a number"
        raise ValueError(f"{name} must be {noun} from {_number(low)} to {_number(high)}; got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {_number(low)} to {_number(high)}; got {_number(value)}")


def _log_stops(low_exponent: int, high_exponent: int) -> tuple[float, ...]:
    """1-2-5 steps over the decades, and the top: 1e-5, 2e-5, 5e-5 ... 5, 10."""
    return tuple(round(mantissa * 10.0**exponent, 10) for exponent in range(low_exponent, high_exponent)
                 for mantissa in (1, 2, 5)) + (10.0**high_exponent,)


SETTINGS: tuple[Setting, ...] = (
    Setting("architecture", str, "mlp", "Architecture",
            "mlp: the article's stack of Dense layers (the hidden layers below). cnn: two 5x5 convolutions (32 and "
            "64 filters) with 2x2 max pooling, a Dense layer of 128 and the softmax; Keras layers on raw tensors too.",
            "select", choices=ARCHITECTURES, choice_labels={"mlp": "MLP (the article's)", "cnn": "CNN (convolutions)"}),
    Setting("hidden_units", list, list(ARTICLE_HIDDEN_UNITS), "Hidden layers",
            "Units per hidden layer, 1 to 4 layers of 16 to 1,024 units (the article: 128, 128); MLP only.", "layers",
            low=16, high=1024, max_items=MAX_HIDDEN_LAYERS, stops=(16, 32, 64, 128, 256, 512, 1024),
            only_with=("architecture", ("mlp",))),
    Setting("activation", str, "relu", "Activation", "Activation of every hidden layer; the output is softmax.",
            "select", choices=ACTIVATIONS),
    Setting("dropout_rate", float, 0.0, "Dropout",
            "Share of hidden units dropped at each training step; 0 (none) in the article.", "slider",
            low=0.0, high=0.8, step=0.05),
    Setting("augment", bool, False, "Augment",
            "Shift (up to 2 pixels) and rotate (up to 10 degrees) every training digit at random, inside the graph, "
            "the same way in both engines; test digits are never changed.", "select",
            choices=(False, True), choice_labels={False: "off", True: "on"}),
    Setting("optimizer", str, "sgd", "Optimizer", "How the gradients update the weights.", "select",
            choices=OPTIMIZERS, choice_labels={"sgd": "SGD (the article's)", "momentum": "SGD with momentum 0.9",
                                               "adam": "Adam", "rmsprop": "RMSprop"}),
    Setting("learning_rate", float, 0.5, "Learning rate",
            "Size of each optimizer step (the article: 0.5 with plain SGD).", "stops",
            low=1e-5, high=10.0, stops=_log_stops(-5, 1), log_scale=True),
    Setting("batch_size", int, 50, "Batch size", "Images per training step.", "stops", low=1, high=4096,
            stops=(1, 8, 16, 32, 50, 64, 100, 128, 256, 512, 1024, 2048, 4096)),
    Setting("steps", int, 1000, "Steps", "Training steps (batches), not epochs.", "number",
            low=1, high=MAX_STEPS, step=100),
    Setting("eval_every", int, 100, "Evaluate every",
            "Steps between two measures of test accuracy (there is always one at the end).", "number",
            low=1, high=MAX_STEPS, step=50),
    Setting("seed", int, 42, "Seed", "Fixes the initial weights, the batch order and dropout: same seed, same run.",
            "number", low=0, high=2**31 - 1),
    Setting("dataset", str, "mnist", "Dataset", "Handwritten digits, or Zalando's clothes in the same format.",
            "select", choices=DATASETS, choice_labels={"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}),
    Setting("source", str, "auto", "Source",
            "auto: the full download if it is here, else the offline sample; my own files: an mnist.npz or an IDX "
            "folder on the server (offered only when the app runs on this machine); uploaded: a dataset you uploaded "
            "(Your own data, on the Train page).", "select",
            choices=SOURCES, choice_labels={"auto": "auto (full if available)", "keras": "keras (full download)",
                                            "offline": "offline sample", "path": "my own files",
                                            "uploaded": "uploaded (your own data)"}),
    Setting("data_path", str, None, "Data path", "An mnist.npz file or a folder with the four IDX files.", "text",
            nullable=True, only_with=("source", ("path",)), flag="--data"),
    Setting("upload", str, None, "Upload",
            "Which of your uploads to train on. A run records it by the SHA-256 of its images and labels, so its "
            "folder says what it trained on even after the upload is deleted.", "upload",
            nullable=True, only_with=("source", ("uploaded",)), pattern=UPLOAD_DIGEST),
    Setting("engine", str, "function", "Engine",
            "function: Keras 3 layers in a tf.function step with GradientTape. session: the article's own form, "
            "a TF1 graph with placeholders run in a Session.", "select", choices=ENGINES,
            choice_labels={"function": "function (TF2 tf.function)", "session": "session (TF1, the article's)"}),
    Setting("xla", bool, None, "XLA",
            "function engine: compile each chunk of steps with XLA. Compiling takes about a second and then runs "
            "steps about twice as fast, so auto uses it from 5,000 steps on. Never for the CNN or with augmentation: "
            "XLA runs convolutions far slower on CPU and cannot compile the image transform.", "select",
            choices=(None, True, False), choice_labels={None: "auto", True: "on", False: "off"}, nullable=True,
            only_with=("engine", ("function",))),
    Setting("distribute", str, "none", "Distribute",
            "function engine, on tf.distribute: none trains on one device. mirrored keeps one replica of the network "
            "per GPU, or per logical CPU device (the CPU split in CPU replicas), each taking its share of the batch, "
            "gradients summed across them: the same steps as on one device. multi-worker does the same across "
            "machines (TF_CONFIG, the command line on each; see the README).", "select",
            choices=DISTRIBUTES, choice_labels={"none": "none (one device)",
                                                "mirrored": "mirrored (one replica per device)",
                                                "multi-worker": "multi-worker (TF_CONFIG, command line)"},
            only_with=("engine", ("function",))),
    Setting("cpu_replicas", int, 2, "CPU replicas",
            f"mirrored without a GPU: split the CPU into this many logical devices, one replica each (1 to "
            f"{MAX_CPU_REPLICAS}). They share the same cores, so this shows the strategy at work rather than "
            "speeding it up.", "number", low=1, high=MAX_CPU_REPLICAS, step=1,
            only_with=("distribute", ("mirrored",))),
    Setting("init_from", str, None, "Start from run",
            "A run id: start from that run's trained weights instead of fresh ones (fine-tuning). The layers must "
            "be that run's (architecture, hidden layers, activation); the optimizer starts afresh.", "text",
            nullable=True),
    Setting("collection", str, None, "Your drawings",
            "A snapshot of the drawings you kept on the Draw page, by its content hash (Fine-tune on my drawings "
            "sets it): every fifth drawing of each digit is held out and measured, the others are mixed into every "
            "batch.", "text", nullable=True, pattern=SNAPSHOT_DIGEST),
    Setting("collection_share", float, 0.25, "Share of your drawings",
            "With your drawings: the share of every batch drawn from them (the rest from the training data), "
            "shifted and rotated like the rest of the batch when augment is on.", "slider",
            low=0.05, high=0.9, step=0.05, only_with=("collection", None)),
)
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


def _cross_checks(values: dict) -> None:
    """Rules between settings: options an engine cannot honour are refused by name, never ignored."""
    if values.get("engine") == "session" and values.get("xla"):
        raise ValueError("xla=True is a function-engine option: the session engine runs its TF1 graph as "
                         "built; leave xla unset or false with engine 'session'")
    if values.get("xla") and (values.get("architecture") == "cnn" or values.get("augment")):
        raise ValueError("xla=True is for the MLP without augmentation: XLA compiles convolutions on CPU into code "
                         "tens of times slower and cannot compile the augmentation's image transform; leave xla "
                         "unset or false with architecture 'cnn' or augment on")
    distribute = values.get("distribute", "none")
    if distribute != "none":
        if values.get("engine") == "session":
            raise ValueError(f"distribute={distribute!r} needs the function engine: the session engine runs the "
                             "article's TF1 graph in one Session on one device; use engine 'function' or distribute "
                             "'none'")
        if values.get("xla"):
            raise ValueError(f"xla=True is for one device: a {distribute} run's steps cross devices, which XLA does "
                             "not compile here; leave xla unset or false with distribute "
                             f"{distribute!r}")
    if distribute == "mirrored" and values.get("batch_size", 1) < values.get("cpu_replicas", 1):
        raise ValueError(f"batch_size {values['batch_size']} cannot be shared by {values['cpu_replicas']} CPU "
                         "replicas: each needs at least one image a step; use a bigger batch or fewer replicas")
    if values.get("source") == "path" and not values.get("data_path"):
        raise ValueError("source 'path' needs data_path: an mnist.npz file or a folder with the four IDX files")
    if values.get("source") == "uploaded" and not values.get("upload"):
        raise ValueError("source 'uploaded' needs upload: choose one of your uploads, or upload a dataset first")


def validate(config) -> None:
    """Raise ValueError naming the setting, the value and the allowed range for the first bad setting."""
    values = {setting.name: getattr(config, setting.name) for setting in config.SETTINGS}
    for setting in config.SETTINGS:
        setting.check(values[setting.name])
    _cross_checks(values)


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as config.json in the run folder.

    One field per setting of SETTINGS, in the same order, with the same type and default: the settings say
    what each value may be, the fields let a reader (and an editor) see them. tests/test_settings_as_data.py
    fails when the two disagree.
    """

    SETTINGS: ClassVar[tuple[Setting, ...]] = SETTINGS

    architecture: str = "mlp"
    hidden_units: list[int] = field(default_factory=lambda: list(ARTICLE_HIDDEN_UNITS))
    activation: str = "relu"
    dropout_rate: float = 0.0
    augment: bool = False
    optimizer: str = "sgd"
    learning_rate: float = 0.5
    batch_size: int = 50
    steps: int = 1000
    eval_every: int = 100
    seed: int = 42
    dataset: str = "mnist"
    source: str = "auto"
    data_path: str | None = None
    upload: str | None = None
    engine: str = "function"
    xla: bool | None = None
    distribute: str = "none"
    cpu_replicas: int = 2
    init_from: str | None = None
    collection: str | None = None
    collection_share: float = 0.25

    def __post_init__(self) -> None:
        for setting in self.SETTINGS:
            value = getattr(self, setting.name)
            if setting.kind is list and isinstance(value, tuple):
                setattr(self, setting.name, list(value))
        validate(self)

    def to_dict(self) -> dict:
        """A JSON-ready dict of every setting."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        """Build a config from a dict, rejecting unknown settings by name."""
        if not isinstance(values, dict):
            raise ValueError(f"a config is an object of settings; got {type(values).__name__}")
        known = {setting.name for setting in cls.SETTINGS}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; expected some of {sorted(known)}")
        return cls(**values)

    def replace(self, **changes):
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def save(self, path: Path) -> None:
        """Write the config as pretty JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path):
        """Read a config.json written by save()."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def describe_layers(self) -> str:
        """The layers in short: '784-128-128-10' as the article writes them, or '32C5-P2-64C5-P2-128-10'."""
        return describe_layers(self)


# Named starting points: the settings each sets (the others keep their defaults). "cnn" is tuned so that the
# offline sample (4,000 training digits) reads the real MNIST test set at 0.977 or better
# (bench/cnn_accuracy.py).
PRESETS: dict[str, dict[str, Any]] = {
    "article": {"architecture": "mlp", "hidden_units": ARTICLE_HIDDEN_UNITS, "activation": "relu",
                "dropout_rate": 0.0, "augment": False, "optimizer": "sgd", "learning_rate": 0.5, "batch_size": 50,
                "steps": 1000},
    "cnn": {"architecture": "cnn", "activation": "relu", "dropout_rate": 0.3, "augment": True, "optimizer": "adam",
            "learning_rate": 0.001, "batch_size": 50, "steps": 1000},
}
PRESET_HELP = {
    "article": "the article's MLP: 784-128-128-10, relu, SGD at 0.5, batch 50, 1,000 steps",
    "cnn": "a small CNN (32C5-P2-64C5-P2-128-10) with dropout 0.3, Adam at 0.001 and shift/rotate augmentation, "
           "1,000 steps of batch 50",
}


def config_from_preset(name: str, **overrides):
    """The TrainConfig a preset describes, with some settings changed (validated like any config)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")
    return TrainConfig(**{**PRESETS[name], **overrides})
