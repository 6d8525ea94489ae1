"""The queue's file protocol, in one place: what the names in a runs directory's `.queue/` folder mean.

Both sides of the queue import this module: the run store (core/store.py) names a new run's entry and tells
whether a queued run is still in line; the queue (core/queue.py) takes entries and moves aside what it cannot
use. The folder holds:

- `<time in ns, 20 digits>-<run id>`: a queued run's **entry**, an empty file. Names sort in queue order.
- `.taken-<pid>-<entry>`: an entry that the worker process `pid` is taking right now (a rename succeeds for
  exactly one process, which makes taking atomic).
- `.rejected/`: names a worker could not use (not an entry, a folder, a run that is not waiting for it),
  moved there once, each with a line in `.rejected/rejected.log` saying why.

Nothing here imports the run store or TensorFlow.
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime
from pathlib import Path

QUEUE_DIR = ".queue"
REJECTED_DIR = ".rejected"
REJECTED_LOG = "rejected.log"
TAKEN_PREFIX = ".taken-"
STAMP_DIGITS = 20
# An entry is the stamp, a dash and a run id: at most 100 plain ASCII characters here (whether they make a run
# id is the run store's to say: core/store.py, is_run_id), so that a taken name stays far below the file
# systems' 255-byte limit on a name.
ENTRY_PATTERN = re.compile(rf"([0-9]{{{STAMP_DIGITS}}})-([0-9A-Za-z._-]{{1,100}})")
TAKEN_PATTERN = re.compile(rf"{re.escape(TAKEN_PREFIX)}([0-9]{{1,10}})-(.+)")


def queue_folder(runs_dir: Path) -> Path:
    """The queue's folder in a runs directory."""
    return Path(runs_dir) / QUEUE_DIR


def rejected_folder(runs_dir: Path) -> Path:
    """Where names a worker could not use are moved, with rejected.log saying why."""
    return queue_folder(runs_dir) / REJECTED_DIR


def entry_name(run_id: str) -> str:
    """The entry of a run queued now: the time first, so that names sort in queue order."""
    return f"{time.time_ns():0{STAMP_DIGITS}d}-{run_id}"


def parse_entry(name: str) -> str | None:
    """The run id an entry names, or None when `name` is not an entry's name."""
    match = ENTRY_PATTERN.fullmatch(name)
    return match.group(2) if match else None


def taken_name(pid: int, entry: str) -> str:
    """The name an entry gets while the process `pid` takes it."""
    return f"{TAKEN_PREFIX}{pid}-{entry}"


def parse_taken(name: str) -> tuple[int, str] | None:
    """(pid, entry) of a taken entry's name, or None when `name` is not one."""
    match = TAKEN_PATTERN.fullmatch(name)
    if not match or parse_entry(match.group(2)) is None:
        return None
    return int(match.group(1)), match.group(2)


def create_entry(runs_dir: Path, entry: str) -> None:
    """Put a run's entry in the queue.

    A `.queue` that is a file raises NotADirectoryError with a sentence saying so (mkdir alone would say "file
    exists", which the run store reads as "this run id is taken").
    """
    folder = queue_folder(runs_dir)
    try:
        folder.mkdir(exist_ok=True)
    except FileExistsError:  # mkdir's word for "there is something here that is not a folder"
        raise NotADirectoryError(f"{folder} is a file, but the queue needs a folder there; move that file away "
                                 "and queue again") from None
    (folder / entry).touch()


def remove_entry(runs_dir: Path, entry: str) -> None:
    """Take back an entry whose run could not be created; never raises (there may be no queue folder)."""
    _remove(queue_folder(runs_dir) / entry)


def taking_pids(runs_dir: Path, entry: str) -> list[int]:
    """The processes whose taken name for this entry is in the queue folder (alive or not)."""
    pids = []
    try:
        names = os.listdir(queue_folder(runs_dir))
    except OSError:
        return []
    suffix = "-" + entry
    for name in names:
        if name.startswith(TAKEN_PREFIX) and name.endswith(suffix):
            parsed = parse_taken(name)
            if parsed and parsed[1] == entry:
                pids.append(parsed[0])
    return pids


def reject(runs_dir: Path, name: str, reason: str, shown: str | None = None) -> bool:
    """Move a name of the queue folder aside, once, into `.rejected/` (as `shown`, when given: an entry
    rejected after it was taken goes aside under its own name) with a line saying why.

    Returns False when it can be neither moved nor removed (the caller then ignores it from now on).
    """
    folder, aside = queue_folder(runs_dir), rejected_folder(runs_dir)
    shown = shown or name
    try:
        aside.mkdir(exist_ok=True)
        os.replace(folder / name, aside / shown)  # a name rejected before is replaced, never piled up
    except FileNotFoundError:
        return True  # someone else moved it first
    except OSError:
        if not _remove(folder / name):
            return False
        reason += " (removed: it could not be moved aside)"
    try:
        with open(aside / REJECTED_LOG, "a") as log:
            log.write(f"{datetime.now().isoformat(timespec='seconds')} {shown!r}: {reason}\n")
    except OSError:
        pass  # the name is out of the queue either way; the log line is for whoever looks later
    return True


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return True
    except IsADirectoryError:
        try:
            path.rmdir()
        except OSError:
            return False
    except OSError:
        return False
    return True


def remove_taken(runs_dir: Path, taken: str) -> None:
    """Remove a taken entry once its run is marked; never raises (a folder that will not go is moved aside)."""
    if not _remove(queue_folder(runs_dir) / taken):
        reject(runs_dir, taken, "a taken entry that could not be removed")
