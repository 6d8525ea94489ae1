"""The run store: one folder per training run, and the folder is the truth.

A run folder holds config.json, status.json (written atomically), metrics.csv (one row per step,
appended while training so another process can follow), evaluations.csv (one row per evaluation),
summary.json, model.keras and the run's TensorBoard event files. Pages, the CLI and TensorBoard all read
the same folder. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from core.config import TrainConfig

RUNS_DIR_ENV = "HYBRID_LAB_RUNS"
STATUSES = ("running", "completed", "stopped", "diverged", "failed", "interrupted")
FINISHED = ("completed", "stopped", "diverged", "failed", "interrupted")
METRICS_FIELDS = ("step", "loss", "batch_accuracy")
EVALUATION_FIELDS = ("step", "test_loss", "test_accuracy")
STOP_FILE = "STOP"  # its presence asks the training, in whatever process, to stop


class RunNotFound(ValueError):
    """No run with that id in the runs directory."""


def default_runs_dir() -> Path:
    """The runs directory: $HYBRID_LAB_RUNS, or ./runs."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs").expanduser()


def write_json_atomic(path: Path, values: dict) -> None:
    """Write JSON to a temp file and rename it over `path`, so readers never see half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    temporary.write_text(json.dumps(values, indent=2) + "\n")
    os.replace(temporary, path)


def _read_json(path: Path) -> dict:
    values = json.loads(path.read_text())
    if not isinstance(values, dict):
        raise ValueError(f"{path.name} holds {type(values).__name__}, expected an object")
    return values


def _pid_alive(pid) -> bool:
    """True while the process exists and has not exited (an exited, unreaped child is a zombie: dead)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # /proc/<pid>/stat: "pid (name) state ..."; the name may hold spaces, so split after its ")".
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): existence is all we can tell
    return state not in ("Z", "X")


@dataclass
class Run:
    """What a run folder says about one run; `damaged` explains a folder that could not be read."""

    run_id: str
    path: Path
    config: TrainConfig | None = None
    status: dict = field(default_factory=dict)
    summary: dict | None = None
    damaged: str | None = None

    @property
    def state(self) -> str:
        """running / completed / stopped / diverged / failed / interrupted, or damaged."""
        return "damaged" if self.damaged else self.status.get("status", "damaged")

    @property
    def model_path(self) -> Path:
        """Where the run's model.keras is (or will be)."""
        return self.path / "model.keras"

    @property
    def has_model(self) -> bool:
        """True once model.keras has been saved."""
        return self.model_path.is_file()

    @property
    def test_accuracy(self) -> float | None:
        """The final test accuracy from summary.json, None before the run ends (or if it diverged)."""
        return (self.summary or {}).get("test_accuracy")

    @property
    def started_at(self) -> str:
        """When the run was created, ISO 8601 to the second."""
        return self.status.get("started_at", "")

    def write_status(self, status: str, message: str = "", **extra) -> None:
        """Record the run's state atomically, keeping what was there (start time, progress)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}; got {status!r}")
        self.status = {**self.status, **extra, "status": status, "message": message, "updated_at": _now()}
        if status in FINISHED:
            self.status.setdefault("finished_at", _now())
        write_json_atomic(self.path / "status.json", self.status)

    def write_progress(self, step: int, total_steps: int, steps_per_second: float) -> None:
        """Record progress of a running run (called a few times a second)."""
        self.write_status("running", self.status.get("message", ""), step=step, total_steps=total_steps,
                          steps_per_second=steps_per_second)

    def write_summary(self, summary: dict) -> None:
        """Record the final figures of the run."""
        self.summary = summary
        write_json_atomic(self.path / "summary.json", summary)

    def append_metrics(self, rows: list[tuple]) -> None:
        """Append (step, loss, batch_accuracy) rows to metrics.csv."""
        _append_csv(self.path / "metrics.csv", METRICS_FIELDS, rows)

    def append_evaluation(self, step: int, test_loss: float, test_accuracy: float) -> None:
        """Append one evaluation row to evaluations.csv."""
        _append_csv(self.path / "evaluations.csv", EVALUATION_FIELDS, [(step, test_loss, test_accuracy)])

    def read_metrics(self) -> dict[str, list]:
        """Per-step columns: step, loss, batch_accuracy (empty lists before the first step)."""
        return _read_csv(self.path / "metrics.csv", METRICS_FIELDS)

    def read_evaluations(self) -> dict[str, list]:
        """Per-evaluation columns: step, test_loss, test_accuracy."""
        return _read_csv(self.path / "evaluations.csv", EVALUATION_FIELDS)

    def stop_requested(self) -> bool:
        """True once someone asked this run to stop."""
        return (self.path / STOP_FILE).exists()

    def request_stop(self) -> None:
        """Ask the training of this run to stop after its current chunk of steps."""
        (self.path / STOP_FILE).touch()


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def _append_csv(path: Path, fields: tuple, rows: list[tuple]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(fields)
        writer.writerows(rows)


def _read_csv(path: Path, fields: tuple) -> dict[str, list]:
    columns: dict[str, list] = {name: [] for name in fields}
    if not path.exists():
        return columns
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                values = [int(row["step"])] + [float(row[name]) for name in fields[1:]]
            except (TypeError, ValueError, KeyError):
                continue  # a row being written right now, or a damaged one: skip it
            for name, value in zip(fields, values):
                columns[name].append(value)
    return columns


def _slug(config: TrainConfig) -> str:
    units = "x".join(str(n) for n in config.hidden_units)
    return f"{config.engine[:4]}-{config.optimizer}-{units}"


def create_run(config: TrainConfig, runs_dir: Path | None = None) -> Run:
    """Make a new run folder with its config.json and a 'running' status."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_id = f"{stamp}-{secrets.token_hex(2)}-{_slug(config)}"
    path = runs_dir / run_id
    path.mkdir()
    config.save(path / "config.json")
    run = Run(run_id, path, config)
    run.write_status("running", "starting", pid=os.getpid(), started_at=_now(), step=0, total_steps=config.steps)
    return run


def read_run(path: Path) -> Run:
    """Read a run folder; problems make a run marked damaged rather than an exception."""
    path = Path(path)
    run = Run(path.name, path)
    try:
        run.config = TrainConfig.load(path / "config.json")
    except (OSError, ValueError, TypeError) as error:
        run.damaged = f"config.json unreadable: {type(error).__name__}: {error}"
        return run
    try:
        run.status = _read_json(path / "status.json")
    except (OSError, ValueError) as error:
        run.damaged = f"status.json unreadable: {type(error).__name__}: {error}"
        return run
    if (path / "summary.json").exists():
        try:
            run.summary = _read_json(path / "summary.json")
        except (OSError, ValueError) as error:
            run.damaged = f"summary.json unreadable: {error}"
    # A run whose training process died (server killed, machine restarted) would say "running" forever.
    if run.status.get("status") == "running" and not _pid_alive(run.status.get("pid")):
        run.status = {**run.status, "status": "interrupted",
                      "message": "the process training this run ended before it finished"}
    return run


def _age_key(path: Path) -> tuple[str, int]:
    """The id's stamp (to the second), then config.json's mtime in ns for runs created in the same second."""
    try:
        created = (path / "config.json").stat().st_mtime_ns
    except OSError:
        created = 0
    return path.name[:15], created


def list_runs(runs_dir: Path | None = None) -> list[Run]:
    """Every run in the runs directory, newest first; damaged folders are included and marked."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    if not runs_dir.is_dir():
        return []
    folders = [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return [read_run(p) for p in sorted(folders, key=_age_key, reverse=True)]


def load_run(run_id: str, runs_dir: Path | None = None) -> Run:
    """The run with this id; RunNotFound if there is none."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise RunNotFound(f"{run_id!r} is not a run id")
    path = runs_dir / run_id
    if not path.is_dir():
        raise RunNotFound(f"no run {run_id!r} in {runs_dir}")
    return read_run(path)


def delete_run(run_id: str, runs_dir: Path | None = None) -> None:
    """Delete a run folder and everything in it."""
    run = load_run(run_id, runs_dir)
    shutil.rmtree(run.path)


def best_run(runs_dir: Path | None = None, dataset: str | None = None, runs: list[Run] | None = None) -> Run | None:
    """The completed run with a model and the highest test accuracy (optionally for one dataset).

    Pass `runs` when the caller has just listed them, so the folders are not read a second time.
    """
    candidates = [
        run for run in (list_runs(runs_dir) if runs is None else runs)
        if run.state == "completed" and run.has_model and run.test_accuracy is not None
        and (dataset is None or run.config.dataset == dataset)
    ]
    return max(candidates, key=lambda run: run.test_accuracy, default=None)


def wait_for(run_id: str, runs_dir: Path | None = None, timeout: float = 600.0) -> Run:
    """Poll until the run has finished (for tests and scripts); returns the final Run."""
    deadline = time.monotonic() + timeout
    while True:
        run = load_run(run_id, runs_dir)
        if run.state != "running" or time.monotonic() > deadline:
            return run
        time.sleep(0.1)
