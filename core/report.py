"""What the pages say about runs, in plain words: table rows, progress, outcomes, config diffs, form values.

Everything here is about reading run folders and turning them into text or rows; nothing draws and nothing
imports streamlit or TensorFlow, so the home page can use it before its first paint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from core.config import TrainConfig
from core.data import DATASET_TITLES, keras_cache_dir
from core.training import CHANCE_LEVEL_ACCURACY
from core.runs import METRICS_FIELDS, Run, RunNotFound, delete_run, load_run

# Plain words in the runs table: they sort, they read aloud, and they need no emoji font.
STATE_LABELS = {
    "running": "running",
    "completed": "completed",
    "stopped": "stopped",
    "diverged": "diverged (loss blew up)",
    "failed": "failed",
    "interrupted": "interrupted",
    "damaged": "damaged (unreadable)",
}
FULL_MNIST_HINT = (
    "To train on full MNIST (70,000 digits), run once on a machine with network access: "
    "`python -c \"import keras; keras.datasets.mnist.load_data()\"` (it saves `~/.keras/datasets/mnist.npz`), "
    "or pick the source *path* and give an `mnist.npz` or a folder of the four IDX files."
)
# Below this a completed run has learned next to nothing: guessing one of ten classes scores 0.10.
# Exception names the trainer puts in front of a failure message; people do not need them.
_ERROR_PREFIXES = ("DatasetError: ", "ValueError: ", "RunNotFound: ")


# ------------------------------------------------------------------------------------------- formatting


def format_seconds(seconds: float | None) -> str:
    """'0.8 s', '42 s', '3 min 05 s', '1 h 02 min'; an em dash when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _parse_time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def plain_message(message: str) -> str:
    """A status message without the exception class name the trainer puts in front of it."""
    for prefix in _ERROR_PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


# ------------------------------------------------------------------------------------------- the data


def load_existing(run_ids: list[str], runs_dir: Path | None = None) -> list[Run]:
    """The readable runs among these ids (deleted or damaged ones left out), in the given order."""
    runs = []
    for run_id in run_ids:
        try:
            run = load_run(run_id, runs_dir)
        except RunNotFound:
            continue
        if not run.damaged:
            runs.append(run)
    return runs


def is_running(run_id: str, runs_dir: Path | None = None) -> bool:
    """True while the run exists and trains."""
    return any(run.state == "running" for run in load_existing([run_id], runs_dir))


def loss_series(run: Run) -> tuple[list, list]:
    """The run's steps and per-step losses, for a chart."""
    metrics = run.read_metrics()
    return metrics["step"], metrics["loss"]


def default_source_is_sample(dataset: str = "mnist") -> bool:
    """True when "auto" MNIST would fall back to the 5,000-digit offline sample (no full copy cached here)."""
    return dataset == "mnist" and not (keras_cache_dir() / "mnist.npz").is_file()


def data_label(run: Run) -> str:
    """Which data a run trained on, as its folder tells it: the loaded source if known, else the request."""
    described = (run.summary or {}).get("data_source") or run.status.get("data_source")
    if described:
        return described
    if run.config is None:
        return "unknown data"
    return f"{DATASET_TITLES[run.config.dataset]}, source {run.config.source} (not loaded yet)"


SOURCE_KINDS = {"offline": "offline sample", "keras": "full", "debian": "full", "path": "own files"}


def short_data_label(run: Run) -> str:
    """A table-sized version of data_label: 'MNIST · offline sample (5,000)'."""
    if run.config is None:
        return "—"
    source = (run.summary or {}).get("source")
    if source is None:  # a run still training: only its description is known, which starts with the kind
        described = run.status.get("data_source") or ""
        source = "offline" if described.startswith("offline sample") else "keras" if described.startswith("full ") else None
    kind = SOURCE_KINDS.get(source) or ("own files" if run.config.source == "path" else f"source {run.config.source}")
    sizes = (run.summary or {}).get("data_sizes") or {}
    count = f" ({sum(sizes.values()):,})" if sizes else ""
    return f"{DATASET_TITLES[run.config.dataset]} · {kind}{count}"


def describe_config(config: TrainConfig, with_engine: bool = True) -> str:
    """One line with the settings that matter most: '784-128-128-10 · relu · sgd at learning rate 0.5 · ...'."""
    line = (f"{config.architecture()} · {config.activation} · {config.optimizer} at learning rate "
            f"{config.learning_rate:g} · batch {config.batch_size} · {config.steps:,} steps")
    return f"{line} · {config.engine} engine" if with_engine else line


def loss_agreement(runs: list[Run]) -> str | None:
    """How closely the runs' per-step losses agree over the steps they share, in words (None: nothing shared)."""
    series = [run.read_metrics()["loss"] for run in runs]
    shared = min((len(losses) for losses in series), default=0)
    if len(series) < 2 or shared == 0:
        return None
    first = series[0][:shared]
    worst = max(abs(a - b) / max(abs(b), 1e-12) for other in series[1:] for a, b in zip(first, other[:shared]))
    if worst == 0:
        return f"The per-step losses are identical over all {shared:,} steps, so the lines lie on top of each other."
    return f"Largest relative difference of the per-step losses over {shared:,} steps: {worst:.2g}."


def has_tensorboard_logs(run: Run) -> bool:
    """True once the run has written TensorBoard event files (a run that failed early has none)."""
    return any(run.path.glob("**/events.out.tfevents*"))


# ------------------------------------------------------------------------------------------- runs table


def run_seconds(run: Run, now: datetime | None = None) -> float | None:
    """Training time of a finished run (from its summary), or time since start for a running one."""
    seconds = (run.summary or {}).get("seconds")
    if seconds is not None:
        return float(seconds)
    started = _parse_time(run.status.get("started_at"))
    ended = _parse_time(run.status.get("finished_at")) or (now or datetime.now())
    return (ended - started).total_seconds() if started else None


def run_row(run: Run) -> dict:
    """One row of the runs table; a damaged run gets a row too, with what is wrong in `problem`."""
    config = run.config
    state = run.state
    finished_badly = state not in ("completed", "running")
    problem = run.damaged or (plain_message(run.status.get("message", "")) if finished_badly else "")
    return {
        "run": run.run_id,
        "started": _parse_time(run.status.get("started_at")),
        "status": STATE_LABELS.get(state, state),
        "test_accuracy": run.test_accuracy,
        "engine": config.engine if config else None,
        "data": short_data_label(run),
        "architecture": config.architecture() if config else None,
        "activation": config.activation if config else None,
        "optimizer": config.optimizer if config else None,
        "learning_rate": config.learning_rate if config else None,
        "batch_size": config.batch_size if config else None,
        "steps": (run.summary or {}).get("steps", run.status.get("step")),
        "total_steps": config.steps if config else None,
        "seconds": run_seconds(run),
        "problem": problem,
    }


def run_rows(runs: list[Run]) -> list[dict]:
    """Rows for a list of runs, in the order given (list_runs gives newest first)."""
    return [run_row(run) for run in runs]


def runs_signature(runs: list[Run]) -> str:
    """A short fingerprint of which runs exist: a table selection by row position is only valid with it."""
    return hashlib.sha1("\n".join(run.run_id for run in runs).encode()).hexdigest()[:10]


def default_selection(runs: list[Run], wanted: str | None = None) -> list[int]:
    """Rows to select on arrival: the run asked for (?run=), else the newest run that has a model."""
    ids = [run.run_id for run in runs]
    if wanted in ids:
        return [ids.index(wanted)]
    return next(([index] for index, run in enumerate(runs) if run.has_model and not run.damaged), [])


def delete_finished_run(run_id: str, runs_dir: Path | None = None) -> None:
    """Delete a run folder, refusing while the run is still training (its trainer would write into nothing)."""
    run = load_run(run_id, runs_dir)
    if run.state == "running":
        raise ValueError(f"run {run_id} is still training; stop it on the Train page first, then delete it")
    delete_run(run_id, runs_dir)


def recent_runs_markdown(runs: list[Run]) -> str:
    """A small Markdown table of runs for the home page (no dataframe: it paints without loading pandas)."""
    lines = ["| Started | Status | Test accuracy | Engine | Network | Optimizer | Steps | Time |",
             "|---|---|--:|---|---|---|--:|--:|"]
    for row in run_rows(runs):
        started = row["started"].strftime("%b %d, %H:%M") if row["started"] else "—"
        accuracy = f"{row['test_accuracy']:.4f}" if row["test_accuracy"] is not None else "—"
        optimizer = f"{row['optimizer']} at {row['learning_rate']:g}" if row["optimizer"] else "—"
        steps = f"{row['steps']:,}" if row["steps"] is not None else "—"
        lines.append(f"| {started} | {row['status']} | {accuracy} | {row['engine'] or '—'} | "
                     f"{row['architecture'] or '—'} | {optimizer} | "
                     f"{steps} | {format_seconds(row['seconds'])} |")
    return "\n".join(lines)


def damaged_count(runs: list[Run]) -> int:
    """How many run folders could not be read."""
    return sum(1 for run in runs if run.state == "damaged")


def config_diff(runs: list[Run]) -> list[dict]:
    """The config fields whose values differ between runs: one row per field, one column per run."""
    readable = [run for run in runs if run.config is not None]
    if len(readable) < 2:
        return []
    values = {run.run_id: run.config.to_dict() for run in readable}
    rows = []
    for name in (f.name for f in dataclasses.fields(TrainConfig)):
        column = [values[run.run_id][name] for run in readable]
        if any(value != column[0] for value in column[1:]):
            rows.append({"field": name, **{run.run_id: _show(value) for run, value in zip(readable, column)}})
    return rows


def _show(value) -> str:
    if isinstance(value, list):
        return "-".join(str(item) for item in value)
    return "—" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------------- live state


@dataclass(frozen=True)
class ProgressView:
    """What a progress bar shows for a run: how full, and a line of text."""

    fraction: float
    text: str


def progress_view(run: Run) -> ProgressView:
    """Steps done, steps/s and time left for a running run; the phase it is in before the first step."""
    status = run.status
    step = int(status.get("step") or 0)
    total = int(status.get("total_steps") or (run.config.steps if run.config else 1))
    speed = status.get("steps_per_second") or 0.0
    fraction = min(1.0, step / max(total, 1))
    if run.stop_requested():
        return ProgressView(fraction, f"Stopping at step {step:,} of {total:,}…")
    if step == 0:
        phase = status.get("message") or "starting"
        hint = " (a new run's worker imports TensorFlow and builds its graph first: a few seconds)"
        return ProgressView(0.0, f"{phase.capitalize()}…{hint}")
    left = (total - step) / speed if speed > 0 else None
    return ProgressView(fraction,
                        f"Step {step:,} of {total:,} · {speed:,.0f} steps/s · about {format_seconds(left)} left")


@dataclass(frozen=True)
class Outcome:
    """How a finished run ended, for a page: `kind` picks the box (success, info, warning, error)."""

    kind: str
    headline: str
    details: str = ""


def outcome(run: Run) -> Outcome:
    """The end of a run in plain words; 'Test accuracy: 0.9412' for a completed one."""
    state = run.state
    summary = run.summary or {}
    message = plain_message(run.status.get("message", ""))
    steps, seconds, speed = summary.get("steps"), summary.get("seconds"), summary.get("steps_per_second")
    timing = f"{steps:,} steps in {format_seconds(seconds)} ({speed:,.0f} steps/s)" if steps and seconds and speed \
        else ""
    accuracy = run.test_accuracy
    if state == "completed" and accuracy is not None and accuracy <= CHANCE_LEVEL_ACCURACY:
        return Outcome("warning", f"Test accuracy: {accuracy:.4f}",
                       (f"{timing}. " if timing else "") + "That is chance level for ten classes: the network "
                       f"learned nothing. Check the learning rate ({run.config.learning_rate:g}): too large and the "
                       "steps overshoot, too small and the weights barely move.")
    if state == "completed":
        return Outcome("success", f"Test accuracy: {accuracy:.4f}", timing)
    if state == "stopped":
        scored = f" Test accuracy: {accuracy:.4f} for the model as it was." if accuracy is not None else ""
        return Outcome("info", f"Stopped at step {run.status.get('step', 0):,} of {run.config.steps:,}.{scored}",
                       timing)
    if state == "diverged":
        return Outcome("error", "The loss blew up, so training stopped. Try a smaller learning rate.",
                       f"What happened: {message}.")
    if state == "failed":
        return Outcome("error", f"Training failed: {message}",
                       f"The full error is in {run.path / 'error.txt'}.")
    if state == "interrupted":
        return Outcome("warning", "This run was interrupted: the process training it ended before it finished "
                                  "(was the server restarted?).", "What it logged until then is kept.")
    if state == "damaged":
        return Outcome("warning", f"This run folder cannot be read: {run.damaged}")
    return Outcome("info", f"Still training: step {run.status.get('step', 0):,} of {run.config.steps:,}.")


# ------------------------------------------------------------------------------------------- metrics


class MetricsFollower:
    """Reads a run's metrics.csv incrementally: each call parses only the lines added since the last one.

    A live page polls twice a second; re-reading a 200,000-step file each time would take about a second.
    Only complete lines are consumed, so a row being written right now is picked up on the next call.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.columns: dict[str, list] = {name: [] for name in METRICS_FIELDS}

    def read(self) -> dict[str, list]:
        """All rows so far, as columns: step, loss, batch_accuracy."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return self.columns
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode("utf-8", "replace").splitlines():
            parts = line.split(",")
            try:
                values = [int(parts[0]), *(float(part) for part in parts[1:len(METRICS_FIELDS)])]
            except (ValueError, IndexError):
                continue  # the header, or a damaged row
            if len(values) == len(METRICS_FIELDS):
                for name, value in zip(METRICS_FIELDS, values):
                    self.columns[name].append(value)
        return self.columns
