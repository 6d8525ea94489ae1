"""The server's one index of each runs directory, shared by every page and session (core/run_index.py).

Held with st.cache_resource, so a page's rerun lists runs from what changed since any page last looked, not by
reading every run folder again.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.run_folder import Run
from core.run_index import RunIndex


@st.cache_resource(show_spinner=False, max_entries=8)
def run_index(runs_dir: str) -> RunIndex:
    """The index of one runs directory, made on the first look and kept for the server's life."""
    return RunIndex(Path(runs_dir))


def listed_runs(runs_dir: Path) -> list[Run]:
    """Every run in `runs_dir`, newest first, as store.list_runs gives them, at the cost of what changed."""
    return run_index(str(runs_dir)).runs()
