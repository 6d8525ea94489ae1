"""What the pages say about runs, in plain words: labels, table rows, progress, config diffs.

Text only: nothing here draws, and nothing imports streamlit or TensorFlow, so the home page can use it
before its first paint. Everything about a run comes from the run store's typed records; how a run ended is
worded in ui/outcomes.py.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime

from core import uploads
from core.access import OPERATOR_KEY, owner_name_of, owner_of
from core.config import SETTINGS, SETTINGS_BY_NAME, TrainConfig
from core.data import DATASET_TITLES
from core.engines.distribute import gpus_present
from core.records import RunState, Status
from core.run_folder import Run

# Plain words in the runs table: they sort, they read aloud, and they need no emoji font.
STATE_LABELS = {
    RunState.QUEUED: "queued",
    RunState.RUNNING: "running",
    RunState.COMPLETED: "completed",
    RunState.STOPPED: "stopped",
    RunState.DIVERGED: "diverged (loss blew up)",
    RunState.FAILED: "failed",
    RunState.INTERRUPTED: "interrupted",
    RunState.DAMAGED: "damaged (unreadable)",
}
FULL_MNIST_HINT = (
    "To train on full MNIST (70,000 digits), run once on a machine with network access: "
    "`python -c \"import keras; keras.datasets.mnist.load_data()\"` (it saves `~/.keras/datasets/mnist.npz`), "
    "or pick the source *path* and give an `mnist.npz` or a folder of the four IDX files."
)
TRAIN_FIRST = "Train your first model on the Train page"
SCRIPT_HELP = ("This run as one Python file in the article's style, its settings at the top: it trains the same "
               "network from the same weights on the same batches, given the same data (--data mnist.npz), and "
               "needs only tensorflow, keras and numpy (tf_keras for the session engine).")
SOURCE_KINDS = {"offline": "offline sample", "keras": "full", "debian": "full", "path": "own files",
                "uploaded": "upload"}
UPLOAD_GONE = "the upload has since been deleted"

def choice_label(setting_name: str, value) -> str:
    """How a setting's value reads on a page: 'SGD (the article's)' for optimizer 'sgd'."""
    return SETTINGS_BY_NAME[setting_name].choice_labels.get(value, str(value))


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


def data_label(run: Run) -> str:
    """Which data a run trained on, as its folder tells it: the loaded source if known, else the request; and
    whether the upload it trained on is gone."""
    if run.data_description:
        label = run.data_description
    elif run.config is None:
        return "unknown data"
    else:
        label = f"{DATASET_TITLES[run.config.dataset]}, source {run.config.source} (not loaded yet)"
    return label + (f" ({UPLOAD_GONE})" if upload_gone(run) else "")


def upload_gone(run: Run) -> bool:
    """True for a run on an upload that is no longer in the data area (its config.json still names it)."""
    config = run.config
    return bool(config and config.source == "uploaded" and not uploads.is_stored(run.path.parent, config.upload))


def short_data_label(run: Run) -> str:
    """A table-sized version of data_label: 'MNIST · offline sample (5,000)'."""
    if run.config is None:
        return "—"
    if run.summary is not None:
        kind = SOURCE_KINDS[run.summary.source]
        count = f" ({sum(run.summary.data_sizes.values()):,})"
    else:  # a run still training: only its description is known, which starts with the kind
        described = run.data_description or ""
        kind = ("offline sample" if described.startswith("offline sample") else "full" if described.startswith("full ")
                else SOURCE_KINDS[run.config.source] if run.config.source in ("path", "uploaded")
                else f"source {run.config.source}")
        count = ""
    gone = " · deleted" if upload_gone(run) else ""
    return f"{DATASET_TITLES[run.config.dataset]} · {kind}{count}{gone}"


def describe_config(config: TrainConfig, with_engine: bool = True) -> str:
    """One line with the settings that matter most: '784-128-128-10 · relu · sgd at learning rate 0.5 · ...'."""
    line = (f"{config.describe_layers()} · {config.activation} · {config.optimizer} at learning rate "
            f"{config.learning_rate:g} · batch {config.batch_size} · {config.steps:,} steps")
    if not with_engine:
        return line
    line += f" · {config.engine} engine"
    if config.distribute == "mirrored":
        line += " · mirrored on every GPU" if gpus_present() else f" · mirrored on {config.cpu_replicas} CPU replicas"
    elif config.distribute == "multi-worker":
        line += " · multi-worker"
    return line


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


# ------------------------------------------------------------------------------------------- runs table


def distribute_caption(values: dict) -> str | None:
    """Under the Train page's Distribute select: which devices a mirrored run gets on this machine."""
    gpus = gpus_present()
    if values.get("distribute") == "mirrored":
        if gpus:
            return f"mirrored, here: one replica on each of this machine's {gpus} GPUs."
        return (f"mirrored, here: no GPU, so the CPU ({os.cpu_count()} cores) is split into "
                f"{values.get('cpu_replicas', 2)} logical devices. They share the cores: expect the same steps, "
                "more slowly (see the README's benchmarks).")
    if gpus > 1:
        return f"this machine has {gpus} GPUs: mirrored trains one replica on each."
    return None


def describe_devices(run: Run) -> str | None:
    """Where a run trains or trained: the summary's record once it has one, else what its config asks for."""
    if run.damaged:
        return None
    if run.summary is not None:
        return run.summary.placement
    config = run.config
    if config.distribute == "mirrored":
        return f"mirrored × {config.cpu_replicas} (planned)"
    return "one device" if config.distribute == "none" else "multi-worker"


NODE_ID_SHOWN = 8  # hex digits of a Ray node id: enough to tell a cluster's nodes apart, as `ray status` does


def describe_node(status: Status | None) -> str | None:
    """Which machine trains or trained a run: its host name, and the Ray node (the first digits of its id) when
    a Ray actor trains it; None while queued and for folders from before runs recorded it."""
    if status is None or status.host is None:
        return None
    if status.node_id is None:
        return status.host
    return f"{status.host} · Ray node {status.node_id[:NODE_ID_SHOWN]}"


def run_row(run: Run) -> dict:
    """One row of the runs table; a damaged run gets a row too, with what is wrong in `problem`."""
    config = run.config if not run.damaged else None
    state = run.state
    problem = run.damaged or ("" if state in (RunState.COMPLETED, RunState.RUNNING, RunState.QUEUED)
                              else run.message)
    status = run.status
    return {
        "run": run.run_id,
        "started": datetime.fromisoformat(status.started_at) if status and status.started_at else None,
        "status": STATE_LABELS[state],
        "test_accuracy": run.test_accuracy,
        "engine": config.engine if config else None,
        "devices": describe_devices(run),
        "node": None if run.damaged else describe_node(status),
        "data": short_data_label(run) if config else "—",
        "architecture": config.describe_layers() if config else None,
        "activation": config.activation if config else None,
        "optimizer": config.optimizer if config else None,
        "learning_rate": config.learning_rate if config else None,
        "batch_size": config.batch_size if config else None,
        "steps": run.step if status else None,
        "total_steps": config.steps if config else None,
        "seconds": run.seconds() if status else None,
        "problem": problem,
        "owner": owner_name_of(status),  # "operator" for the command line's runs and older ones
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


def recent_runs_markdown(runs: list[Run]) -> str:
    """A small Markdown table of runs for the home page (no dataframe: it paints without loading pandas)."""
    lines = ["| Started | Status | Test accuracy | Engine | Network | Optimizer | Steps | Time |",
             "|---|---|--:|---|---|---|--:|--:|"]
    for row in run_rows(runs):
        accuracy = f"{row['test_accuracy']:.4f}" if row["test_accuracy"] is not None else "—"
        optimizer = f"{row['optimizer']} at {row['learning_rate']:g}" if row["optimizer"] else "—"
        steps = f"{row['steps']:,}" if row["steps"] is not None else "—"
        started = row["started"].strftime("%b %d, %H:%M") if row["started"] else "—"
        lines.append(f"| {started} | {row['status']} | {accuracy} | {row['engine'] or '—'} | "
                     f"{row['architecture'] or '—'} | {optimizer} | "
                     f"{steps} | {format_seconds(row['seconds'])} |")
    return "\n".join(lines)


def damaged_count(runs: list[Run]) -> int:
    """How many run folders could not be read."""
    return sum(1 for run in runs if run.state is RunState.DAMAGED)


def config_diff(runs: list[Run]) -> list[dict]:
    """The settings whose values differ between runs: one row per setting, one column per run."""
    readable = [run for run in runs if run.config is not None and not run.damaged]
    if len(readable) < 2:
        return []
    rows = []
    for setting in SETTINGS:
        column = [getattr(run.config, setting.name) for run in readable]
        if any(value != column[0] for value in column[1:]):
            rows.append({"field": setting.name, **{run.run_id: _show(value) for run, value in zip(readable, column)}})
    return rows


def _show(value) -> str:
    if isinstance(value, list):
        return "-".join(str(item) for item in value)
    return "—" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------------- live state


@dataclass(frozen=True)
class ProgressView:
    """What a progress bar shows for a run: how full, a line of text, and whether its first steps (and so its
    curves) are still to come."""

    fraction: float
    text: str
    before_steps: bool = False


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th ... 11th, 12th, 13th, 21st."""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def progress_view(run: Run, queue_position: int | None = None) -> ProgressView:
    """Steps done, steps/s and time left for a running run; its place in the queue for a queued one; the
    phase a run is in before its first step."""
    status = run.status
    if run.state is RunState.QUEUED:
        if run.stop_requested():
            return ProgressView(0.0, "Leaving the queue…")
        place = f": {ordinal(queue_position)} in the queue" if queue_position else ""
        return ProgressView(0.0, f"Queued{place}. It starts when a worker is free (they train one run each).",
                            before_steps=True)
    step = status.step if status else 0
    total = max(status.total_steps if status and status.total_steps else run.total_steps, 1)
    speed = status.steps_per_second if status and status.steps_per_second else 0.0
    fraction = min(1.0, step / total)
    if run.stop_requested():
        return ProgressView(fraction, f"Stopping at step {step:,} of {total:,}…")
    if step == 0:
        phase = run.message or "starting"
        return ProgressView(0.0, f"{phase.capitalize()}…", before_steps=True)
    left = (total - step) / speed if speed > 0 else None
    return ProgressView(fraction,
                        f"Step {step:,} of {total:,} · {speed:,.0f} steps/s · about {format_seconds(left)} left")


# ------------------------------------------------------------------------------------------- sweeps


def sweep_progress(runs: list[Run]) -> str:
    """'4 runs: 1 done, 1 training, 2 queued' for a sweep's runs."""
    done = sum(1 for run in runs if run.state.finished)
    training = sum(1 for run in runs if run.state is RunState.RUNNING)
    queued = sum(1 for run in runs if run.state is RunState.QUEUED)
    return f"{len(runs)} runs: {done} done, {training} training, {queued} queued"


def settings_rows(runs: list[Run]) -> tuple[list[dict], list[str]]:
    """One row per readable run: the settings that vary among the runs (layer lists as '128-64'), its status and
    test accuracy; and the names of those settings. For the sweep table and the parallel-coordinates chart."""
    readable = [run for run in runs if run.config is not None and not run.damaged]
    varying = [row["field"] for row in config_diff(readable)]
    rows = []
    for run in readable:
        row = {}
        for name in varying:
            value = getattr(run.config, name)
            row[name] = "-".join(map(str, value)) if isinstance(value, list) else value
        row.update({"status": STATE_LABELS[run.state], "test_accuracy": run.test_accuracy, "run": run.run_id})
        rows.append(row)
    return rows, varying


# Characters that would make Markdown of a text written by someone else (a name from a sign-in provider):
# a link, an image, emphasis, HTML, a table cell or, in Streamlit, LaTeX.
MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]<>~$|])")


def plain(text: str) -> str:
    """Text shown as written inside Markdown (st.markdown, st.caption, st.error): its special characters escaped."""
    return MARKDOWN_SPECIALS.sub(r"\\\1", str(text))


def only_owner_can_stop(run: Run) -> str:
    """Where Stop would be, for those who may not: who can (Markdown)."""
    if owner_of(run.status) == OPERATOR_KEY:
        return "Only an operator can stop this run."
    return f"Only {plain(owner_name_of(run.status))} or an operator can stop this run."
