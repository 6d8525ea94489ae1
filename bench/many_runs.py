"""Do pages cost what they show, or what the runs directory holds? Every page's first paint with 2 runs and
with N runs (default 600: a class of 30 visitors, 20 runs each), side by side in one run of this script.

It trains one real short run through core's CLI (the article's settings on the offline sample), then makes
two scratch runs directories: one with that run and one copy of it (2 runs), one with N copies. A copy is a
distinct run: its own id (a time stamp a few minutes apart from the next, a fresh random part), its own start
time and visitor in its status.json, written through the run store; its large files (event file, model,
metrics, first-layer weights) are hard links to the real run's, which a page reads exactly as it would read
copies (--real-copies copies them instead). Two real app servers (bench/app_server.py) serve the two
directories at once, each with one warm worker, and headless Chromium visits every page of both in turn: a
first, cold visit of each page (not counted: it imports what that page needs), then --visits more (default 3;
the table gives their median), the two servers alternating first from one visit to the next.

First paint is from navigation to the page's main content drawn with its script idle: Streamlit's
`data-test-script-state="notRunning"`, no stale element, the page's title, every Plotly chart drawn (its SVG
is there) and the page's own content: Home's best run and recent runs, Train's Train button, Runs' table,
TensorBoard's frame, Draw's canvas and its invitation to draw. For TensorBoard, a second row waits until
TensorBoard itself, inside the frame, lists a run. Both servers and their workers are stopped at the end.
Run: `python bench/many_runs.py [--runs 600]`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import Error as PlaywrightError  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from bench.app_server import launch_chromium, start_app, stop_app  # noqa: E402
from core.records import CONFIG_FILE, STATUS_FILE, SUMMARY_FILE  # noqa: E402
from core.store import list_runs, read_run  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
WAIT_MS = 180_000
SHOTS = Path("/tmp/shots")
RUN_NAME = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}-")
# True once Streamlit has drawn the page: script idle, nothing stale, the title there, every Plotly chart drawn.
DRAWN_JS = """([title, marker]) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  const main = document.querySelector('[data-testid="stMain"]');
  if (!main || main.querySelector('[data-stale="true"]')) return false;
  if (![...main.querySelectorAll('h1')].some(h => h.innerText.trim() === title)) return false;
  if ([...main.querySelectorAll('[data-testid="stPlotlyChart"]')].some(c => !c.querySelector('.main-svg')))
    return false;
  return !!main.querySelector(marker);
}"""
# Per page: its title, and a CSS selector for its own main content (present once drawn).
PAGES = [
    ("Home", "/", "Hybrid Lab", '[data-testid="stMetric"]'),
    ("Train", "/Train", "Train", '[data-testid="stBaseButton-primary"]:not([disabled])'),
    ("Runs", "/Runs", "Runs", '[data-testid="stDataFrame"] canvas'),
    ("TensorBoard", "/TensorBoard", "TensorBoard", '[data-testid="stIFrame"]'),
    ("Draw", "/Draw", "Draw", '[data-testid="stBidiComponentIsolated"]'),  # the canvas component
]
EXTRA_TEXT = {"Home": "Recent runs", "Draw": "Draw a digit on the canvas to see what the model thinks it is."}


# ------------------------------------------------------------------------------------------- the runs


def train_one_run(runs_dir: Path, steps: int) -> Path:
    """One real run of the article's network through core's CLI, in its own process; returns its folder."""
    subprocess.run([sys.executable, "-m", "core.cli", "--source", "offline", "--steps", str(steps),
                    "--runs-dir", str(runs_dir)], check=True, capture_output=True, cwd=REPO_ROOT,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    (run,) = list_runs(runs_dir)
    if run.state != "completed":
        raise RuntimeError(f"the real run ended {run.state}: {run.message}")
    return run.path


def copy_run(source: Path, runs_dir: Path, index: int, started: datetime, visitor: str, real_copies: bool) -> None:
    """A distinct run made from `source`: a new id and start time and this visitor, written by the run store."""
    slug = source.name.split("-", 3)[3]
    run_id = f"{started:%Y%m%d-%H%M%S}-{index % 65536:04x}-{slug}"
    target = runs_dir / run_id
    # The JSON files are copied (the store rewrites status.json below); the large ones linked or copied.
    shutil.copytree(source, target, copy_function=shutil.copy2 if real_copies else _link_or_copy)
    run = read_run(target)
    run.write_status(run.state, run.message, started_at=started.isoformat(timespec="seconds"), owner=f"guest:{visitor}",
                     owner_name=f"guest {visitor[:4]}")


def _link_or_copy(source: str, target: str) -> None:
    if Path(source).name in (CONFIG_FILE, STATUS_FILE, SUMMARY_FILE):
        shutil.copy2(source, target)
    else:
        os.link(source, target)


def fill(runs_dir: Path, source: Path, count: int, visitors: int, real_copies: bool) -> None:
    """`count` runs in `runs_dir`: the real one and count - 1 copies, spread over `visitors` visitors."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, runs_dir / source.name)
    newest = datetime.strptime(source.name[:15], "%Y%m%d-%H%M%S")
    for index in range(1, count):
        visitor = hashlib.sha256(f"visitor {index % visitors}".encode()).hexdigest()[:12]
        copy_run(source, runs_dir, index, newest - timedelta(minutes=3 * index), visitor, real_copies)
    found = len(list_runs(runs_dir))
    if found != count:
        raise RuntimeError(f"{runs_dir} holds {found} runs, not {count}")


# ------------------------------------------------------------------------------------------- the pages


def wait_for_warm_workers(runs_dirs: list[Path], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [log for runs_dir in runs_dirs for log in (runs_dir / ".workers").glob("worker-*.log")]
        if len(logs) >= len(runs_dirs) and all("warm after" in log.read_text(errors="replace") for log in logs):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the workers were not warm after {timeout:.0f} s")


def first_paint(browser, url: str, name: str, path: str, title: str, marker: str) -> tuple[float, float | None]:
    """Seconds from navigation to the page drawn (and, for TensorBoard, to its frame listing a run)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        return _time_page(page, url, name, path, title, marker)
    except PlaywrightError as error:
        SHOTS.mkdir(parents=True, exist_ok=True)
        shot = SHOTS / f"many-runs-{name.lower()}.png"
        page.screenshot(path=str(shot), full_page=True)
        raise RuntimeError(f"{name} at {url} was not drawn ({shot}): {str(error).splitlines()[0]}") from None
    finally:
        context.close()


def _time_page(page, url: str, name: str, path: str, title: str, marker: str) -> tuple[float, float | None]:
    """first_paint's measurement, in a page of a fresh context."""
    started = time.perf_counter()
    page.goto(url + path, wait_until="commit", timeout=WAIT_MS)
    page.wait_for_function(DRAWN_JS, arg=[title, marker], polling=20, timeout=WAIT_MS)
    if name in EXTRA_TEXT:
        page.get_by_text(EXTRA_TEXT[name]).first.wait_for(timeout=WAIT_MS)
    if name == "Draw":
        # The canvas component draws in its own shadow root, which Playwright's selectors enter.
        page.locator('[data-testid="stBidiComponentIsolated"] canvas').first.wait_for(timeout=WAIT_MS)
    drawn = time.perf_counter() - started
    inner = None
    if name == "TensorBoard":
        frame = page.frame_locator('[data-testid="stIFrame"]')
        frame.get_by_text(RUN_NAME).first.wait_for(timeout=WAIT_MS)
        inner = time.perf_counter() - started
    return drawn, inner


def measure(urls: dict[str, str], visits: int) -> dict:
    """{(page, label): [seconds of the cold visit, then of each counted visit]}, and the TensorBoard frame's."""
    times: dict = {}
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            for visit in range(visits + 1):  # visit 0 is the cold one
                for name, path, title, marker in PAGES:
                    order = list(urls.items()) if visit % 2 == 0 else list(urls.items())[::-1]
                    for label, url in order:
                        drawn, inner = first_paint(browser, url, name, path, title, marker)
                        times.setdefault((name, label), []).append(drawn)
                        if inner is not None:
                            times.setdefault(("TensorBoard, its frame listing a run", label), []).append(inner)
        finally:
            browser.close()
    return times


def print_table(times: dict, labels: list[str]) -> None:
    small, large = labels
    print(f"\n| page (first paint) | {small}, median of {len(next(iter(times.values()))) - 1} | {large}, median | "
          f"{large} ÷ {small} | cold visit, {small} / {large} |")
    print("| --- | ---: | ---: | ---: | ---: |")
    names = list(dict.fromkeys(name for name, _ in times))
    for name in names:
        few, many = times[(name, small)], times[(name, large)]
        few_median, many_median = statistics.median(few[1:]), statistics.median(many[1:])
        print(f"| {name} | {few_median:.2f} s | {many_median:.2f} s | {many_median / few_median:.2f}× | "
              f"{few[0]:.2f} s / {many[0]:.2f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=600, help="runs in the large runs directory (default 600)")
    parser.add_argument("--visitors", type=int, default=30, help="visitors the runs belong to (default 30)")
    parser.add_argument("--visits", type=int, default=3, help="counted visits of each page (default 3)")
    parser.add_argument("--steps", type=int, default=1000, help="steps of the real run that is copied")
    parser.add_argument("--real-copies", action="store_true", help="copy the large files instead of linking them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="many-runs-") as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        source = train_one_run(scratch / "source", args.steps)
        directories = {"2 runs": scratch / "two", f"{args.runs} runs": scratch / "many"}
        fill(directories["2 runs"], source, 2, args.visitors, args.real_copies)
        fill(directories[f"{args.runs} runs"], source, args.runs, args.visitors, args.real_copies)
        print(f"{args.runs} runs made from one real {args.steps:,}-step run in {time.perf_counter() - started:.0f} s")
        servers = []
        try:
            for label, runs_dir in directories.items():
                servers.append((label, *start_app(runs_dir, env={"HYBRID_LAB_WORKERS": "1"})))
            wait_for_warm_workers(list(directories.values()))
            times = measure({label: url for label, url, _ in servers}, args.visits)
        finally:
            for _, _, process in servers:
                stop_app(process)
    print_table(times, list(directories))


if __name__ == "__main__":
    main()
