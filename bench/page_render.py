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

VISITS = 5


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


def main() -> None:
    with tempfile.TemporaryDirectory() as runs_dir:
        for steps in (200, 300):
            subprocess.run([sys.executable, "-m", "core.cli", "--steps", str(steps), "--runs-dir", runs_dir],
                           check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
        url, process = start_app(runs_dir)
        try:
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                home = [time_visit(browser, url, "Best run so far") for _ in range(VISITS)]
                home_loaded_tf = tensorflow_loaded(process.pid)
                train = time_visit(browser, f"{url}/Train", "Reset to the article's settings")
                train_loaded_tf = tensorflow_loaded(process.pid)
                browser.close()
        finally:
            stop_app(process)
    print("| page | first visit (cold) | later visits, median | TensorFlow loaded in the server after it |")
    print("| --- | ---: | ---: | --- |")
    print(f"| Home | {home[0]:.2f} s | {statistics.median(home[1:]):.2f} s | {'yes' if home_loaded_tf else 'no'} |")
    print(f"| Train (after Home) | {train:.2f} s | — | {'yes' if train_loaded_tf else 'no'} |")


if __name__ == "__main__":
    main()
