"""The run store: the runs directory, one folder per run, and the folder is the truth.

This module knows which runs exist: it makes new ones (a fresh id, built under a hidden name and renamed into
place, or queued with its entry in `.queue/`), lists and loads them by id, tells a running run from one
whose process died, deletes finished ones and finds the best. What one folder holds is core/run_folder.py's,
the records in it core/records.py's. Pages, the CLI and the trainer reach runs only through these modules.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from core import queue_files
from core.access import OPERATOR, Identity, check_delete
from core.config import TrainConfig
from core.processes import pid_alive, this_host, trainer_gone
from core.records import CONFIG_FILE, STATUS_FILE, FailureKind, RunNotFound, RunState, RunStoreError, timestamp
from core.run_folder import Run, read_folder

RUNS_DIR_ENV = "HYBRID_LAB_RUNS"
# Run ids are folder names this store made: a time stamp, a random part and a slug. Anything else a
# visitor types (a path, 300 characters) is refused before it touches the file system.
RUN_ID_PATTERN = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,99}")
ID_ATTEMPTS = 5  # fresh random parts tried when a new run's id is taken (same second, same settings)
WATCH_EVERY_SECONDS = 0.02  # how often watch_run looks at a status file: a stat call, nothing read
END_MARGIN_SECONDS = 0.5  # a run's last evaluation and its model written, after its last step (time_to_end)


def default_runs_dir() -> Path:
    """The runs directory: $HYBRID_LAB_RUNS, or ./runs."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs").expanduser()


def is_run_id(text) -> bool:
    """True for a name this store could have given a run (no paths, no dots first, at most 100 characters)."""
    return isinstance(text, str) and RUN_ID_PATTERN.fullmatch(text) is not None


def _slug(config: TrainConfig) -> str:
    network = "cnn" if config.architecture == "cnn" else "x".join(str(n) for n in config.hidden_units)
    return f"{config.engine[:4]}-{config.optimizer}-{network}"


def create_run(config: TrainConfig, runs_dir: Path | None = None, state: RunState = RunState.RUNNING,
               owner: Identity = OPERATOR, **status) -> Run:
    """Make a new run folder with its config.json and a status: running (trained by this process) or queued,
    owned by `owner` (the operator's unless said: the command line's runs are).

    RunStoreError says, in one sentence, why the runs directory cannot take it; no half-made folder stays.
    """
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    status.update(owner=owner.key, owner_name=owner.name)
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
            run = Run(run_id, staging, config)
            run.keep_reserve()
            config.save(staging / CONFIG_FILE)
            if state is RunState.RUNNING:
                status.setdefault("pid", os.getpid())
                status.setdefault("host", this_host())
            else:  # queued: its file in the queue goes in before the folder shows (core/queue.py)
                entry = queue_files.entry_name(run_id)
                status["queue_entry"] = entry
            run.write_status(state, "starting" if state is RunState.RUNNING else "waiting for a worker",
                             started_at=timestamp(), step=0, total_steps=config.steps, **status)
            if (runs_dir / run_id).exists():
                raise FileExistsError(run_id)
            if entry:
                queue_files.create_entry(runs_dir, entry)
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
    """Read a run folder (bad content makes it damaged, never an exception), and tell a run whose trainer or
    queue entry went away from one still training or waiting: it reads as interrupted, with the kind."""
    return judge_liveness(read_folder(path))


def judge_liveness(run: Run) -> Run:
    """A run as read from its folder, with a running one whose trainer died, or a queued one whose queue entry went
    away, read as interrupted (with the kind); a finished or damaged run is returned as it is."""
    if run.damaged:
        return run
    path = run.path
    # A run whose training process died (server killed, machine restarted) would say "running" forever.
    if run.status.state is RunState.RUNNING and trainer_gone(run.status.pid, run.status.host):
        run.status = replace(run.status, state=RunState.INTERRUPTED, failure=FailureKind.PROCESS_ENDED,
                             message="the process training this run ended before it finished")
    elif run.status.state is RunState.QUEUED and not _still_queued(run.path.parent, run.status.queue_entry):
        # A worker may have taken it between the two looks: renamed its entry, written "running" and let go of
        # the entry, all after status.json was read. What the folder says now is the truth; only a run that still
        # says "queued" with no entry left the queue without starting.
        again = read_folder(path)
        if again.damaged or again.status.state is not RunState.QUEUED:
            return read_run(path)
        run.status = replace(run.status, state=RunState.INTERRUPTED, failure=FailureKind.LEFT_QUEUE,
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
    return any(pid_alive(pid) for pid in queue_files.taking_pids(runs_dir, entry))


def _age_key(path: Path) -> tuple[str, int]:
    """The id's stamp (to the second), then config.json's mtime in ns for runs created in the same second."""
    try:
        created = (path / CONFIG_FILE).stat().st_mtime_ns
    except OSError:
        created = 0
    return path.name[:15], created


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


def watch_run(run: Run, seconds: float, between: Callable[[], None] = lambda: None, longest: float = 0.0) -> Run:
    """Watch an active run for up to `seconds` and return it as soon as it has ended, else as last read.

    Only its status.json is looked at (its size, time and inode, every WATCH_EVERY_SECONDS), and the run read
    again when that changes, so a page learns of the end within a few hundredths of a second at the price of a
    stat call. With `longest`, a run whose status says it ends sooner than that (time_to_end) is watched until
    its end, up to `longest` in all: a page that stopped watching just before the end would learn of it only
    at its next refresh. `between` is called before each look: the app passes what lets a click end the wait.
    A trainer that died without a word is not seen here; the next load_run tells it (judge_liveness).
    """
    status = run.path / STATUS_FILE
    start = time.monotonic()
    deadline = start + seconds
    seen = _file_stamp(status)
    while run.state.active:
        ends_in = time_to_end(run)
        if ends_in is not None:
            deadline = max(deadline, min(start + longest, time.monotonic() + ends_in))
        if time.monotonic() >= deadline:
            break
        between()
        time.sleep(WATCH_EVERY_SECONDS)
        stamp = _file_stamp(status)
        if stamp != seen:
            seen = stamp
            run = read_run(run.path)
    return run


def time_to_end(run: Run) -> float | None:
    """Seconds until a training run ends by its own account: the steps left at its speed, plus its last
    evaluation (END_MARGIN_SECONDS); None while it has no speed yet (queued, loading its data)."""
    status = run.status
    if status is None or not status.steps_per_second or not status.total_steps:
        return None
    return max(status.total_steps - status.step, 0) / status.steps_per_second + END_MARGIN_SECONDS


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:  # deleted or being replaced: a change like any other
        return None
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def delete_run(run_id: str, runs_dir: Path | None = None, *, identity: Identity) -> None:
    """Delete a finished run's folder, if `identity` may (core/access.py: check_delete); a folder that is a
    symbolic link loses only the link.

    PermissionRefused when it is not theirs to delete; ValueError while the run still trains (its trainer
    would write into nothing); RunStoreError when the file system refuses.
    """
    run = load_run(run_id, runs_dir)
    check_delete(identity, run)
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
