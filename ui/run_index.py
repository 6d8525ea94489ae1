"""The runs a page lists: the server's one index of each runs directory (core/run_index.py: shared_index), shared
by every page and session, so a page's rerun lists runs from what changed since anyone last looked, not by reading
every run folder again."""

from __future__ import annotations

from pathlib import Path

from core.run_folder import Run
from core.run_index import shared_index


def listed_runs(runs_dir: Path) -> list[Run]:
    """Every run in `runs_dir`, newest first, as store.list_runs gives them, at the cost of what changed."""
    return shared_index(runs_dir).runs()
