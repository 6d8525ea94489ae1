"""The queue of runs waiting for a worker: one entry per queued run in the runs directory's `.queue/`.

The run folder stays the truth (its status says "queued", and names its entry); the queue folder only orders
the waiting runs and makes taking one atomic. What its names mean is core/queue_files.py's. A worker takes the
oldest entry by renaming it to its taken name: a rename succeeds for exactly one process, so two workers (or a
worker and a Stop that cancels the run) never both get the same run. Whatever process looks (a page, a second
tab, a restarted server, the CLI) sees the same queue.

A name a worker cannot use (not an entry, a folder that will not go, an entry of a run that is not waiting
for it) is moved aside into `.queue/.rejected/` once, with the reason, and is never tried again. A bad name
never costs a real run: a run is taken only through the entry its own status names.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from core import queue_files
from core.processes import this_host
from core.queue_files import REJECTED_DIR, queue_folder
from core.records import FailureKind, RunNotFound, RunState
from core.run_folder import Run
from core.store import is_run_id, load_run, staging_folder

# A folder's mtime moves in clock ticks, so a name added in the tick of the last look may leave it unchanged:
# a folder changed this recently is looked at again on every poll, and any folder now and then.
RECENT_NS = 1_000_000_000
RELIST_SECONDS = 5.0

# Why a worker refuses a run it has taken: refuse(run) -> a sentence or None.
Refusal = Callable[[Run], "str | None"]


def _entries(runs_dir: Path) -> list[tuple[str, str]]:
    """(run id, entry name) of every queued run, first come first."""
    try:
        names = os.listdir(queue_folder(runs_dir))
    except OSError:
        return []
    entries = []
    for name in sorted(names):  # names start with a zero-padded time, so sorting puts them in order
        run_id = queue_files.parse_entry(name)
        if run_id is not None and is_run_id(run_id):
            entries.append((run_id, name))
    return entries


def queued_ids(runs_dir: Path) -> list[str]:
    """The queued runs' ids, first in line first."""
    return [run_id for run_id, _ in _entries(runs_dir)]


def position(run_id: str, runs_dir: Path) -> int | None:
    """1 for the next run to start, 2 for the one after...; None when the run is not waiting."""
    ids = queued_ids(runs_dir)
    return ids.index(run_id) + 1 if run_id in ids else None


def take_next(runs_dir: Path, refuse: Refusal | None = None, node_id: str | None = None) -> Run | None:
    """Take the oldest queued run and mark it running in this process; None when nothing waits.

    The run is this caller's alone: its entry was renamed away, and its status now names this process, its host
    and, for a worker on a Ray cluster, its `node_id`. A run that `refuse` gives a reason for ends failed with
    that sentence, and the next one is taken instead.
    """
    folder = queue_folder(runs_dir)
    for run_id, entry in _entries(runs_dir):
        taken = queue_files.taken_name(os.getpid(), entry)
        try:
            os.rename(folder / entry, folder / taken)
        except FileNotFoundError:
            continue  # another worker, or a Stop, took it first
        except OSError as error:  # whatever it is, it cannot be taken: never try it again
            queue_files.reject(runs_dir, entry, f"cannot be taken: {error.strerror or error}")
            continue
        run = _claim(runs_dir, run_id, entry, taken, refuse, node_id)
        if run is not None:
            return run
    return None


def _claim(runs_dir: Path, run_id: str, entry: str, taken: str, refuse: Refusal | None,
           node_id: str | None) -> Run | None:
    """Mark the run a taken entry names as running here, if it is waiting for this very entry."""
    run = _waiting_run(runs_dir, run_id, entry, taken)
    if run is None:
        return None
    try:
        reason = refuse(run) if refuse else None
        if reason:
            run.write_status(RunState.FAILED, reason, queue_entry=None, failure=FailureKind.REFUSED)
            return None
        run.write_status(RunState.RUNNING, "starting", pid=os.getpid(), host=this_host(), node_id=node_id,
                         queue_entry=None)
        return run
    except OSError:  # the run's folder went away between reading and writing: nothing left to train
        return None
    finally:
        queue_files.remove_taken(runs_dir, taken)


def _waiting_run(runs_dir: Path, run_id: str, entry: str, taken: str) -> Run | None:
    """The queued run whose status names this entry; otherwise the entry goes back in line (its run is still
    being made) or aside (it names no run, or a run that is not waiting for it), and None."""
    try:
        run = load_run(run_id, runs_dir)
    except RunNotFound:
        if staging_folder(runs_dir, run_id).exists():
            _put_back(runs_dir, entry, taken)  # still being created: leave it in line for the next look
            return None
        try:
            run = load_run(run_id, runs_dir)  # renamed into place between the two looks
        except RunNotFound:
            queue_files.reject(runs_dir, taken, f"there is no run {run_id} (deleted while it waited?)", entry)
            return None
    if run.state is not RunState.QUEUED or run.status.queue_entry != entry:
        why = (f"run {run_id} waits under another entry, {run.status.queue_entry}"
               if run.state is RunState.QUEUED else f"run {run_id} is {run.state}, not waiting for a worker")
        queue_files.reject(runs_dir, taken, why, entry)
        return None
    return run


def _put_back(runs_dir: Path, entry: str, taken: str) -> None:
    folder = queue_folder(runs_dir)
    try:
        os.rename(folder / taken, folder / entry)
    except OSError as error:
        queue_files.reject(runs_dir, taken, f"could not go back in line: {error.strerror or error}", entry)


def tidy(runs_dir: Path, ignored: set[str]) -> int:
    """Move aside, once, every name in the queue folder that means nothing to the queue; returns how many.

    A name that can be neither moved nor removed goes into `ignored`, the caller's, and is skipped from then on.
    """
    try:
        names = os.listdir(queue_folder(runs_dir))
    except OSError:
        return 0
    moved = 0
    for name in names:
        if name == REJECTED_DIR or name in ignored or queue_files.parse_taken(name) is not None:
            continue  # a taken entry is a worker's, alive or not: the run store reads it (core/store.py)
        run_id = queue_files.parse_entry(name)
        if run_id is not None and is_run_id(run_id):
            continue
        if queue_files.reject(runs_dir, name, "not a queue entry: an entry is named <time in ns, 20 digits>-<run id>"):
            moved += 1
        else:
            ignored.add(name)
    return moved


class QueueWatch:
    """Tells an idle worker when the queue folder may hold something new, so that it lists it only then.

    Listing a folder of thousands of names fifty times a second costs a core; a stat of it costs nothing.
    """

    def __init__(self, runs_dir: Path):
        self.folder = queue_folder(runs_dir)
        self.seen: tuple | None = None
        self.looked_at = -RELIST_SECONDS

    def changed(self) -> bool:
        """True when the folder changed (or may have) since the last True, or a while has passed."""
        try:
            status = os.stat(self.folder)
            signature, recent = (status.st_ino, status.st_mtime_ns), \
                abs(time.time_ns() - status.st_mtime_ns) < RECENT_NS
        except OSError:
            signature, recent = None, False
        now = time.monotonic()
        if signature == self.seen and not recent and now - self.looked_at < RELIST_SECONDS:
            return False
        self.seen, self.looked_at = signature, now
        return True


def cancel(run: Run) -> bool:
    """Take a queued run out of the queue so that no worker starts it; False if a worker already took it."""
    entry = run.status.queue_entry if run.status else None
    if not entry:
        return False
    try:
        (queue_folder(run.path.parent) / entry).unlink()
    except OSError:  # gone: a worker took it; or not a file: a worker will move it aside, or take the run
        return False
    return True
