"""The queue of runs waiting for a worker: one empty file per queued run in the runs directory's `.queue/`.

The run folder stays the truth (its status says "queued", and names its queue file); the queue folder only
orders the waiting runs and makes taking one atomic. A worker takes the oldest entry by renaming it to
`.taken-<pid>-<entry>`: a rename succeeds for exactly one process, so two workers (or a worker and a Stop
that cancels the run) never both get the same run. Whatever process looks (a page, a second tab, a
restarted server, the CLI) sees the same queue.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.records import RunNotFound, RunState
from core.run_folder import Run
from core.store import QUEUE_DIR, is_run_id, load_run, staging_folder


def _folder(runs_dir: Path) -> Path:
    return Path(runs_dir) / QUEUE_DIR


def _entries(runs_dir: Path) -> list[tuple[str, str]]:
    """(run id, entry name) of every queued run, first come first."""
    try:
        names = os.listdir(_folder(runs_dir))
    except OSError:
        return []
    entries = []
    for name in sorted(names):  # names start with a zero-padded time, so sorting puts them in order
        stamp, _, run_id = name.partition("-")
        if stamp.isdigit() and is_run_id(run_id):
            entries.append((run_id, name))
    return entries


def queued_ids(runs_dir: Path) -> list[str]:
    """The queued runs' ids, first in line first."""
    return [run_id for run_id, _ in _entries(runs_dir)]


def position(run_id: str, runs_dir: Path) -> int | None:
    """1 for the next run to start, 2 for the one after...; None when the run is not waiting."""
    ids = queued_ids(runs_dir)
    return ids.index(run_id) + 1 if run_id in ids else None


def take_next(runs_dir: Path) -> Run | None:
    """Take the oldest queued run and mark it running in this process; None when nothing waits.

    The run is this caller's alone: its queue file was renamed away, and its status now names this process.
    """
    folder = _folder(runs_dir)
    for run_id, entry in _entries(runs_dir):
        taken = folder / f".taken-{os.getpid()}-{entry}"
        try:
            os.rename(folder / entry, taken)
        except FileNotFoundError:
            continue  # another worker, or a Stop, took it first
        try:
            run = load_run(run_id, runs_dir)
        except RunNotFound:
            if staging_folder(runs_dir, run_id).exists():
                os.rename(taken, folder / entry)  # still being created: leave it in line for the next look
            else:
                taken.unlink(missing_ok=True)  # deleted while it waited
            continue
        try:
            if run.state is RunState.QUEUED:
                run.write_status(RunState.RUNNING, "starting", pid=os.getpid(), queue_entry=None)
                return run
        finally:
            taken.unlink(missing_ok=True)
    return None


def cancel(run: Run) -> bool:
    """Take a queued run out of the queue so that no worker starts it; False if a worker already took it."""
    folder = _folder(run.path.parent)
    entry = run.status.queue_entry if run.status else None
    if not entry:
        return False
    try:
        (folder / entry).unlink()
    except FileNotFoundError:
        return False
    return True
