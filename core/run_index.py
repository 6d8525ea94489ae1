"""The runs a page lists, read from what is cheap: the folder names, and the small records of the folders that
changed since the last look.

`store.list_runs` reads every folder each time it is called: three JSON files and two CSV headers per run, 0.15 s
for 600 runs, on every rerun of every page. A RunIndex keeps what it read, keyed by the stat of the folder and of
its records (modification time, size, inode): a re-list lists the runs directory, stats each folder's few files and
reads again only the folders whose key changed, plus the runs still queued or training, whose status moves on
without notice and whose liveness is judged afresh each time (core/store.py: judge_liveness). Nothing here opens
a model, an event file, the first layer's weights or reads metrics rows: a page opens those for the run it shows.
One index of each runs directory serves a whole process (shared_index): every page and session of a server, and
the service's queue limits at each submit; so its updates hold a lock. Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import replace
from pathlib import Path

from core.records import CONFIG_FILE, STATUS_FILE, SUMMARY_FILE
from core.run_folder import Run, read_folder
from core.store import default_runs_dir, is_run_id, judge_liveness

# The files whose change can change what a listing says about a finished run: the records, which a hand edit may
# rewrite in place. The other files read_folder checks (metrics.csv, evaluations.csv, model.keras) are written only
# while a run is active, when it is read again at every look anyway, or made, removed or replaced as a whole, which
# changes the folder's own time.
WATCHED_FILES = (CONFIG_FILE, STATUS_FILE, SUMMARY_FILE)
CONFIG_KEY = 1 + WATCHED_FILES.index(CONFIG_FILE)  # where config.json's stat is in a folder key


def _stat_key(path: str) -> tuple | None:
    """What changes when a file is rewritten, replaced or removed (None: not there, or not to be looked at)."""
    try:
        found = os.lstat(path)
    except OSError:
        return None
    return found.st_mtime_ns, found.st_size, found.st_ino, found.st_mode


def folder_key(folder: str) -> tuple:
    """The stat of a run folder and of each watched file in it: equal keys, equal listing."""
    return (_stat_key(folder), *(_stat_key(f"{folder}/{name}") for name in WATCHED_FILES))


class RunIndex:
    """The runs of one runs directory, newest first, re-read only where their folders changed."""

    def __init__(self, runs_dir: Path | None = None):
        self.runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
        self._known: dict[str, tuple[tuple, Run]] = {}  # run id -> (folder key, the run as its folder read)
        self._lock = threading.Lock()
        self.folders_read = 0  # how many folders were read in all, for tests and benchmarks

    def runs(self) -> list[Run]:
        """Every run in the runs directory, newest first, damaged folders included and marked, as
        store.list_runs gives them; each a copy the caller may change."""
        with self._lock:
            current = self._refresh()
        ordered = sorted(current, key=lambda item: item[0], reverse=True)
        return [judge_liveness(replace(run)) for _, run in ordered]

    def _refresh(self) -> list[tuple[tuple, Run]]:
        """(age key, run) for every run folder there now; forgets folders that went away."""
        try:
            entries = [entry for entry in os.scandir(self.runs_dir) if is_run_id(entry.name) and entry.is_dir()]
        except OSError:  # no runs directory yet, or not a folder
            self._known.clear()
            return []
        current, seen = [], set()
        for entry in entries:
            seen.add(entry.name)
            key = folder_key(entry.path)
            known = self._known.get(entry.name)
            if known is None or known[0] != key or known[1].state.active:
                known = (key, read_folder(Path(entry.path)))
                self._known[entry.name] = known
                self.folders_read += 1
            config_stat = key[CONFIG_KEY]
            current.append(((entry.name[:15], config_stat[0] if config_stat else 0), known[1]))
        for gone in set(self._known) - seen:
            del self._known[gone]
        return current


def shared_index(runs_dir: Path | None = None) -> RunIndex:
    """This process's one index of a runs directory, made on the first look and kept for the process's life."""
    return _index(os.path.abspath(runs_dir or default_runs_dir()))


@functools.lru_cache(maxsize=8)
def _index(runs_dir: str) -> RunIndex:
    return RunIndex(Path(runs_dir))
