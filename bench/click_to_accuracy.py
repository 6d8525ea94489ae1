"""What a user feels: from pressing Train (the article's settings) to "Test accuracy: 0.9…" on screen.

Starts the real app (`streamlit run app.py`) on a free loopback port with a scratch runs directory, waits
until its warm workers are ready, then presses Train on the Train page in Debian's headless Chromium several
times and times each press to the test accuracy appearing. The reference is a warm Keras `fit` of the same
1,000 steps (same data, batch, network, TensorBoard logging every step) measured in this same script, so
both numbers see the same machine load. Run: `python bench/click_to_accuracy.py`.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright  # noqa: E402

from bench.app_server import launch_chromium, start_app, stop_app  # noqa: E402

ACCURACY = re.compile(r"^Test accuracy: 0\.\d{4}$")
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
WARM_TIMEOUT = 180


def wait_for_warm_workers(runs_dir: Path) -> float:
    """Seconds until every worker of the pool says it is warm (the line core/worker.py prints)."""
    started = time.monotonic()
    while time.monotonic() - started < WARM_TIMEOUT:
        logs = list((runs_dir / ".workers").glob("worker-*.log"))
        if logs and all("warm after" in log.read_text(errors="replace") for log in logs):
            return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError(f"the workers were not warm after {WARM_TIMEOUT} s")


def press_train(page) -> float:
    """Seconds from the click on Train to the new run's test accuracy on screen."""
    before = page.url
    started = time.perf_counter()
    page.get_by_role("button", name="Train", exact=True).click()
    page.wait_for_function("url => window.location.href !== url", arg=before, timeout=120_000)
    page.get_by_text(ACCURACY).wait_for(timeout=120_000)
    return time.perf_counter() - started


def warm_fit_seconds(steps: int) -> float:
    """A warm Keras fit of `steps` steps of the article's network, as bench/train_speed.py measures it."""
    from bench.train_speed import keras_fit
    from core.config import TrainConfig
    from core.data import load_dataset

    config = TrainConfig()
    dataset = load_dataset(config.dataset, config.source)
    with tempfile.TemporaryDirectory() as log_dir:
        return steps / keras_fit(config, dataset, log_dir, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as runs_dir:
        url, process = start_app(runs_dir)
        try:
            warm = wait_for_warm_workers(Path(runs_dir))
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url + "/Train")
                page.locator(IDLE).wait_for(timeout=60_000)
                presses = []
                for _ in range(args.presses):
                    presses.append(press_train(page))
                    page.locator(IDLE).wait_for()
                browser.close()
        finally:
            stop_app(process)
    fit = warm_fit_seconds(1000)
    print(f"workers warm {warm:.1f} s after the server answered\n")
    print("| measurement | seconds | × warm `fit` |")
    print("| --- | ---: | ---: |")
    print(f"| warm Keras `fit`, 1,000 steps (reference) | {fit:.2f} | 1.00× |")
    for index, seconds in enumerate(presses, start=1):
        print(f"| press {index}: click → \"Test accuracy\" on screen | {seconds:.2f} | {seconds / fit:.2f}× |")
    print(f"| presses after the first, median | {statistics.median(presses[1:] or presses):.2f} | "
          f"{statistics.median(presses[1:] or presses) / fit:.2f}× |")


if __name__ == "__main__":
    main()
