"""How fast the home page paints after `streamlit run app.py` is up, and proof it never loads TensorFlow.

Starts the real app on a free port with a scratch runs directory holding a few runs, opens the home page in
Debian's headless Chromium several times (fresh browser context each time) and times from navigation to the
"Best run so far" heading being visible. The first visit is the cold one: the server imports the page's
modules then. It also reads the server's memory map to show whether TensorFlow's library got loaded by the
home page (it must not), then by the Train page for comparison. Run: `python bench/page_render.py`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright  # noqa: E402

from bench.app_server import launch_chromium, start_app, stop_app  # noqa: E402
from core import service  # noqa: E402
from core.access import OPERATOR  # noqa: E402
from core.config import TrainConfig  # noqa: E402
from core.records import RunState  # noqa: E402
from core.store import create_run, load_run  # noqa: E402

VISITS = 5
LOAD_STEPS = 20_000


def tensorflow_loaded(pid: int) -> bool:
    """True when TensorFlow's native library is mapped into the process."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "_pywrap_tensorflow" in maps or "libtensorflow" in maps


def time_visit(browser, url: str, text: str) -> float:
    """Seconds from navigation to `text` being visible, in a fresh browser context."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    started = time.perf_counter()
    page.goto(url)
    page.get_by_text(text).first.wait_for(state="visible", timeout=60_000)
    elapsed = time.perf_counter() - started
    context.close()
    return elapsed


def wait_for(condition, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.2)


def main() -> None:
    with tempfile.TemporaryDirectory() as runs_dir:
        runs_dir = Path(runs_dir)
        for steps in (200, 300):
            subprocess.run([sys.executable, "-m", "core.cli", "--steps", str(steps), "--runs-dir", str(runs_dir)],
                           check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
        # Two workers, so that two runs can train at once while Home is measured under load.
        url, process = start_app(runs_dir, env={"HYBRID_LAB_WORKERS": "2"})
        try:
            wait_for(lambda: len(list((runs_dir / ".workers").glob("*.log"))) == 2 and all(
                "warm after" in log.read_text(errors="replace") for log in (runs_dir / ".workers").glob("*.log")),
                "the workers warming up")
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                home = [time_visit(browser, url, "Best run so far") for _ in range(VISITS)]
                home_loaded_tf = tensorflow_loaded(process.pid)
                train = time_visit(browser, f"{url}/Train", "Reset to the article's settings")
                train_loaded_tf = tensorflow_loaded(process.pid)
                # The queue is on disk: runs queued here are the server's workers' to train.
                busy = [create_run(TrainConfig(steps=LOAD_STEPS), runs_dir, state=RunState.QUEUED) for _ in range(2)]
                wait_for(lambda: all(load_run(run.run_id, runs_dir).state is RunState.RUNNING for run in busy) and all(
                    load_run(run.run_id, runs_dir).step > 0 for run in busy), "two runs training")
                loaded = [time_visit(browser, url, "Best run so far") for _ in range(VISITS)]
                still_training = all(load_run(run.run_id, runs_dir).state is RunState.RUNNING for run in busy)
                for run in busy:
                    service.stop(load_run(run.run_id, runs_dir), OPERATOR)
                browser.close()
        finally:
            stop_app(process)
    idle, under_load = statistics.median(home[1:]), statistics.median(loaded)
    print("| page | first visit (cold) | later visits, median | TensorFlow loaded in the server after it |")
    print("| --- | ---: | ---: | --- |")
    print(f"| Home | {home[0]:.2f} s | {idle:.2f} s | {'yes' if home_loaded_tf else 'no'} |")
    print(f"| Train (after Home) | {train:.2f} s | — | {'yes' if train_loaded_tf else 'no'} |")
    print(f"| Home while two {LOAD_STEPS:,}-step runs train | — | {under_load:.2f} s "
          f"({under_load / idle:.2f}× idle{'' if still_training else '; a run ended before the last visit'}) | — |")


if __name__ == "__main__":
    main()
