"""Five presses of Train within two seconds: the queue holds what the pool cannot train yet, and memory stays bounded.

Starts the real app (`streamlit run app.py`, its default pool), presses Train five times in headless Chromium
within two seconds (the article's settings), then watches the runs directory until all five have finished:
how many trained at once (never more than the pool), the queue positions the waiting ones showed, and the
peak memory (resident set) of all the app's processes together: the server and its workers, sampled every
0.1 s. Run: `python bench/five_runs.py`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright  # noqa: E402

from bench.app_server import launch_chromium, start_app, stop_app  # noqa: E402
from core import queue, service  # noqa: E402
from core.records import RunState  # noqa: E402
from core.store import list_runs  # noqa: E402

PRESSES = 5
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def tree_rss_bytes(root: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total


def main() -> None:
    with tempfile.TemporaryDirectory() as runs_dir:
        runs_dir = Path(runs_dir)
        url, process = start_app(runs_dir)
        peak, most_running, positions, stop = [0], [0], set(), threading.Event()

        def watch():
            while not stop.wait(0.1):
                peak[0] = max(peak[0], tree_rss_bytes(process.pid))
                runs = list_runs(runs_dir)
                most_running[0] = max(most_running[0], sum(run.state is RunState.RUNNING for run in runs))
                positions.update(range(1, len(queue.queued_ids(runs_dir)) + 1))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(120_000)
                page.goto(url + "/Train")
                page.locator(IDLE).wait_for()
                started = time.perf_counter()
                for _ in range(PRESSES):
                    page.get_by_role("button", name="Train", exact=True).click()
                    page.locator(IDLE).wait_for()
                pressed = time.perf_counter() - started
                shown = page.get_by_test_id("stProgress").first.inner_text()
                page.screenshot(path="/tmp/shots/five-runs-queued.png", full_page=True)
                deadline = time.monotonic() + 600
                while any(run.state.active for run in list_runs(runs_dir)) and time.monotonic() < deadline:
                    time.sleep(0.2)
                browser.close()
            runs = list_runs(runs_dir)
        finally:
            stop.set()
            watcher.join()
            stop_app(process)
    pool = service.service_setting("workers")
    print("| measurement | value |\n| --- | ---: |")
    print(f"| presses of Train | {PRESSES} in {pressed:.1f} s |")
    print(f"| pool size (HYBRID_LAB_WORKERS) | {pool} |")
    print(f"| most runs training at once | {most_running[0]} |")
    print(f"| queue positions seen | {', '.join(map(str, sorted(positions))) or '—'} |")
    print(f"| the last run's progress right after the presses | {shown.strip()} |")
    print(f"| runs completed | {sum(run.state is RunState.COMPLETED for run in runs)} of {len(runs)} |")
    print(f"| peak memory of the server and its workers together | {peak[0] / 2**20:,.0f} MB |")


if __name__ == "__main__":
    main()
