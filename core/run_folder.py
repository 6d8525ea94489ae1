"""One run folder: the Run a folder describes (its paths, its records, what it logged), written by the
trainer and read by everyone.

The trainer's side writes status.json atomically, appends metrics.csv and evaluations.csv a few rows at a
time so another process can follow them, and replaces the first layer's images; `read_folder` checks every
file through the typed records (core/records.py) and turns bad content into a *damaged* run with the reason
in words. How each file is encoded is core/run_files.py's; which runs exist, and whether a running one is
still alive, is the store's (core/store.py). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from core.config import TrainConfig
from core.records import (
    CONFIG_FILE, ENDING_FIELD_STATES, ERROR_FILE, EVALUATION_FIELDS, EVALUATIONS_FILE, EVENT_FILE_GLOB,
    FIRST_LAYER_FILE, METRICS_FIELDS, METRICS_FILE, MODEL_FILE, RESERVE_FILE, STATUS_FILE, STOP_FILE, SUMMARY_FILE,
    RunFormatError, RunState, Status, Summary, timestamp,
)
from core.run_files import (
    CsvFollower, append_csv, check_csv_header, is_regular_file, read_images, read_json, read_regular_file,
    write_images_atomic, write_json_atomic,
)

RESERVE_BYTES = 64 * 1024  # the size of RESERVE_FILE: room for the last status and error.txt on a full disk


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
    def has_model(self) -> bool:
        """True once model.keras has been saved (as a file of the folder: never a link to elsewhere)."""
        return is_regular_file(self.model_path)

    @property
    def has_config(self) -> bool:
        """True when config.json is a file of the folder (a damaged run's too: it can be downloaded to look at)."""
        return is_regular_file(self.config_path)

    def model_bytes(self) -> bytes:
        """model.keras as downloaded; never through a link out of the run folder (RunFormatError)."""
        return read_regular_file(self.model_path)

    def config_bytes(self) -> bytes:
        """config.json as downloaded; never through a link out of the run folder (RunFormatError)."""
        return read_regular_file(self.config_path)

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
        now = timestamp()
        finished_at = current.finished_at or (now if state.finished else None)
        # How a run ended belongs to the state written with it: a new state starts without the old one's.
        ending = {name: None for name in ENDING_FIELD_STATES}
        self.status = replace(current, **{**ending, **changes}, state=state, message=message, updated_at=now,
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

    def keep_reserve(self) -> None:
        """Set aside the space that recording the end of the run needs (see RESERVE_FILE)."""
        (self.path / RESERVE_FILE).write_bytes(bytes(RESERVE_BYTES))

    def release_reserve(self) -> None:
        """Give back the space kept aside for recording the end of the run (see RESERVE_FILE)."""
        (self.path / RESERVE_FILE).unlink(missing_ok=True)

    def write_first_layer(self, images: np.ndarray) -> None:
        """Replace first_layer.npy atomically with float32 (units, h, w) images (ValueError for other shapes)."""
        write_images_atomic(self.path / FIRST_LAYER_FILE, images)

    def append_metrics(self, rows: list[tuple]) -> None:
        """Append (step, loss, batch_accuracy) rows to metrics.csv."""
        append_csv(self.path / METRICS_FILE, METRICS_FIELDS, rows)

    def append_evaluation(self, step: int, test_loss: float, test_accuracy: float) -> None:
        """Append one evaluation row to evaluations.csv."""
        append_csv(self.path / EVALUATIONS_FILE, EVALUATION_FIELDS, [(step, test_loss, test_accuracy)])

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
        return read_images(self.path / FIRST_LAYER_FILE)

    def first_layer_version(self) -> int | None:
        """first_layer.npy's mtime in ns (a new one at each evaluation), None while there is none: a page redraws
        the weights only when it changed."""
        try:
            return (self.path / FIRST_LAYER_FILE).stat().st_mtime_ns
        except OSError:
            return None

    def stop_requested(self) -> bool:
        """True once someone asked this run to stop."""
        return (self.path / STOP_FILE).exists()

    def request_stop(self) -> None:
        """Ask the training of this run to stop after its current chunk of steps."""
        (self.path / STOP_FILE).touch()


def read_folder(path: Path) -> Run:
    """Read a run folder as it is on disk; any bad content makes the run damaged, with the reason, rather than
    an exception. Whether a running run's process is still alive is not looked at (core/store.py: read_run)."""
    path = Path(path)
    run = Run(path.name, path)
    try:
        try:
            run.config = TrainConfig.from_dict(read_json(path / CONFIG_FILE))
        except (TypeError, ValueError) as error:
            if isinstance(error, RunFormatError):
                raise
            raise RunFormatError(f"{CONFIG_FILE}: {error}") from None
        run.status = Status.from_json(read_json(path / STATUS_FILE))
        if (path / SUMMARY_FILE).exists():
            run.summary = Summary.from_json(read_json(path / SUMMARY_FILE))
        check_csv_header(path / METRICS_FILE, METRICS_FIELDS)
        check_csv_header(path / EVALUATIONS_FILE, EVALUATION_FIELDS)
        if os.path.lexists(path / MODEL_FILE) and not is_regular_file(path / MODEL_FILE):
            raise RunFormatError(f"{MODEL_FILE} is a link, not a file this store wrote"
                                 if (path / MODEL_FILE).is_symlink() else f"{MODEL_FILE} is not a file")
    except RunFormatError as error:
        run.damaged = str(error)
    except OSError as error:  # a folder this user may not enter, say
        run.damaged = f"the run folder cannot be read ({error.strerror or error})"
    return run
