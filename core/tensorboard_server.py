"""One TensorBoard server over the runs directory, started in this process through tensorboard's Python API.

Every run folder is a TensorBoard run (the engines write their event files there), so pointing TensorBoard
at the runs directory shows them all side by side, exactly as `tensorboard --logdir runs` would.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

HOST = "127.0.0.1"  # local only: TensorBoard has no authentication
# The TensorBoard 2.x frontend reads these from the URL's query string (its deep-link provider keeps the
# run filter, tag filter and smoothing there); the hash picks the dashboard.
DASHBOARD = "timeseries"
RUN_FILTER_PARAMETER = "runFilter"
_REGEX_SPECIALS = set(".^$*+?()[]{}|\\")


class TensorBoardError(RuntimeError):
    """TensorBoard could not start; the message says why."""


@dataclass(frozen=True)
class TensorBoardServer:
    """A running TensorBoard: where it serves and what it reads."""

    url: str  # e.g. http://127.0.0.1:40123/
    logdir: Path


def start_tensorboard(logdir: Path, host: str = HOST) -> TensorBoardServer:
    """Start TensorBoard on `logdir` in a background thread, on a free port; returns at once when it serves.

    The server lives as long as this process: callers keep the one they got (the page caches it) rather
    than starting another.
    """
    logdir = Path(logdir).expanduser().resolve()
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        from tensorboard import program  # deferred: TensorBoard imports TensorFlow when it is installed

        board = program.TensorBoard()
        # Port 0 lets the operating system pick a free port; --load_fast=false keeps everything in this
        # process instead of trying to spawn the optional Rust data server.
        board.configure(argv=[None, "--logdir", str(logdir), "--host", host, "--port", "0",
                              "--load_fast", "false", "--reload_interval", "5"])
        url = board.launch()
    except ImportError as error:
        raise TensorBoardError(f"the tensorboard package is not installed ({error}); pip install tensorboard") from None
    except Exception as error:  # TensorBoard raises several unrelated types for "cannot serve"
        raise TensorBoardError(f"{type(error).__name__}: {error}") from None
    return TensorBoardServer(url=url, logdir=logdir)


def run_filter(run_id: str) -> str:
    """A TensorBoard run-filter regex matching exactly this run's name (and nothing else it is a prefix of)."""
    escaped = "".join(f"\\{char}" if char in _REGEX_SPECIALS else char for char in run_id)
    return f"^{escaped}$"


def dashboard_url(base_url: str, run_id: str | None = None) -> str:
    """The time-series dashboard of a TensorBoard, showing only `run_id` when one is given."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    query = f"?{RUN_FILTER_PARAMETER}={quote(run_filter(run_id), safe='')}" if run_id else ""
    return f"{base}{query}#{DASHBOARD}"


def tensorboard_command(logdir: Path) -> str:
    """The shell command that shows the same thing from a terminal."""
    return f"tensorboard --logdir {shlex.quote(str(logdir))}"
