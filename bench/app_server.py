"""A real `streamlit run app.py` server and Debian's headless Chromium, for benchmarks and browser tests.

The browser tests (tests/browser_support.py) and the page benchmarks both start the app this way, so what
they measure is what `make run` serves.
"""

from __future__ import annotations

import contextlib

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_PATH = Path("/usr/bin/chromium")  # Debian's package; CI installs it with apt, never `playwright install`
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SERVER_START_SECONDS = 90  # a cold start imports Streamlit on a busy 2-core machine


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_log_tail(log_path: Path, characters: int = 3000) -> str:
    try:
        return log_path.read_text(errors="replace")[-characters:]
    except OSError:
        return "(no server log)"


def start_app(runs_dir, timeout: float = SERVER_START_SECONDS, address: str | None = "127.0.0.1",
              visit_host: str = "127.0.0.1", env: dict | None = None,
              base_url_path: str | None = None, port: int | None = None,
              arguments: tuple[str, ...] = ()) -> tuple[str, subprocess.Popen]:
    """Start `streamlit run app.py` on a free port with HYBRID_LAB_RUNS=runs_dir; return (url, process).

    `address` is what the server listens on ("0.0.0.0": every interface, as when it is shared; None: what
    .streamlit/config.toml says, as `make run` starts it); `visit_host`
    is the loopback address the returned URL uses (127.0.0.2 is another origin than 127.0.0.1, as a remote
    visitor's browser would be); `base_url_path` serves the app under that path prefix (`--server.baseUrlPath`),
    which the returned URL then ends with. `port` is the port to serve on (a free one when None: give one when
    something must know the address before the app starts, such as a sign-in redirect); `arguments` are more
    options for `streamlit run` (`--secrets.files PATH`). Returns once Streamlit's health endpoint answers.
    Stop the server with `stop_app(process)`.
    """
    port = port or free_port()
    env = {**os.environ, "HYBRID_LAB_RUNS": str(runs_dir), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    log = tempfile.NamedTemporaryFile(prefix="streamlit-", suffix=".log", delete=False)
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(port), "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    if address is not None:
        command += ["--server.address", address]
    if base_url_path:
        command += ["--server.baseUrlPath", base_url_path]
    command += list(arguments)
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    process.log_path = Path(log.name)
    log.close()
    url = f"http://{visit_host}:{port}" + (f"/{base_url_path.strip('/')}" if base_url_path else "")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}:\n"
                               f"{_server_log_tail(process.log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return url, process
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    stop_app(process)
    raise RuntimeError(f"streamlit did not answer on {url} within {timeout:.0f} s:\n"
                       f"{_server_log_tail(process.log_path)}")


def stop_app(process: subprocess.Popen) -> None:
    """Stop a server from start_app: terminate, then kill if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    log_path = getattr(process, "log_path", None)
    if log_path is not None:
        log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def running_app(runs_dir, **options):
    """`streamlit run app.py` over `runs_dir` for the duration of a with-block; yields its URL (see start_app)."""
    url, process = start_app(runs_dir, **options)
    try:
        yield url
    finally:
        stop_app(process)


class ChromiumMissing(RuntimeError):
    """Debian's chromium package is not installed."""


def launch_chromium(playwright):
    """Launch Debian's headless Chromium through Playwright; ChromiumMissing when it is not installed."""
    if not CHROMIUM_PATH.exists():
        raise ChromiumMissing(f"{CHROMIUM_PATH} is missing: install Debian's chromium package (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM_PATH), headless=True, args=CHROMIUM_ARGS)
