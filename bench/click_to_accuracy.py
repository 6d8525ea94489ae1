"""What a user feels: from pressing Train (the article's settings) to the new run's test accuracy on screen.

Starts the real app (`streamlit run app.py`, bench/app_server.py) on a free loopback port with a scratch runs
directory and presses Train on the Train page in Debian's headless Chromium:

- the cold press: made as soon as the server answers (the workers are still importing TensorFlow);
- warm presses (--presses, default 5): once every worker says it is warm, one after another.

A press counts as answered only when the page shows the NEW run's own id and its accuracy, the one in its
summary.json, with the page idle (`data-test-script-state="notRunning"`), no stale element left (Streamlit's
`data-stale="true"`), no progress bar, and the previous run's id gone; the browser checks that every 10 ms
and stamps the moment with Date.now(). Each press is split into three legs measured against the run's own
files: a thread of this script polls the runs directory every few milliseconds (--poll-ms) and stamps when
each run is first seen queued, running and finished on disk:

    click → running on disk (the queue leg), running → completed on disk (the training leg),
    completed on disk → accuracy on screen (the page leg).

Then the same runs with NO page open (--no-page-runs, default: as many as the warm presses): the browser tab
is closed and runs of the very same config.json are queued in the same runs directory, so the server's own
warm workers train them (what core.service.submit does, minus starting a pool in this process). Last, with
the server stopped, a warm Keras `fit` of the same 1,000 steps as the reference (bench/train_speed.py).
Run: `python bench/click_to_accuracy.py [--presses 5]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import Error as PlaywrightError  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from bench.app_server import launch_chromium, start_app, stop_app  # noqa: E402
from core.records import RunNotFound, RunState  # noqa: E402
from core.store import create_run, is_run_id, load_run  # noqa: E402

IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
WARM_TIMEOUT = 240
SHOTS = Path("/tmp/shots")
# True once the page shows run `run_id`, with its accuracy and nothing of `old_id`, idle and with no stale
# element; returns what it saw and when (Date.now(), the same clock as time.time() here), else false.
ANSWERED_JS = """([runId, oldId]) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (new URLSearchParams(window.location.search).get('run') !== runId) return false;
  const main = document.querySelector('[data-testid="stMain"]');
  if (!main || main.querySelector('[data-stale="true"]') || main.querySelector('[data-testid="stProgress"]'))
    return false;
  const text = main.innerText;
  if (!text.includes(runId) || (oldId && text.includes(oldId))) return false;
  const accuracy = [...main.querySelectorAll('[data-testid="stAlert"]')]
    .map(alert => alert.innerText.trim()).find(line => /^Test accuracy: 0\\.\\d{4}$/.test(line));
  return accuracy ? {at: Date.now() / 1000, accuracy} : false;
}"""


# ------------------------------------------------------------------------------------------- the run folders


@dataclass
class Sighting:
    """When this script first saw a run in each state on disk (time.time()), and every state it read."""

    first_seen: float
    states: dict[str, float] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)  # the states in the order they were read, repeats dropped


class RunWatcher(threading.Thread):
    """Polls the runs directory every `interval` seconds and stamps each run's states as they appear on disk.

    It reads runs through the store (core.store.load_run), as the pages do. A finished run is no longer read,
    except "interrupted", which the store also reports for a run that it reads at an unlucky moment.
    """

    FINAL = {RunState.COMPLETED, RunState.STOPPED, RunState.DIVERGED, RunState.FAILED}

    WORKER_LINES = ("ready after", "warm after")  # what core/worker.py prints once each

    def __init__(self, runs_dir: Path, interval: float):
        super().__init__(name="run-watcher", daemon=True)
        self.runs_dir, self.interval = runs_dir, interval
        self.sightings: dict[str, Sighting] = {}
        self.workers: dict[tuple[str, str], float] = {}  # (worker log, line) → when first seen
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            now = time.time()
            self._read_worker_logs(now)
            try:
                names = os.listdir(self.runs_dir)
            except OSError:
                continue
            for name in names:
                if not is_run_id(name):
                    continue
                with self.lock:
                    sighting = self.sightings.setdefault(name, Sighting(now))
                    if sighting.path and RunState(sighting.path[-1]) in self.FINAL:
                        continue
                try:
                    state = load_run(name, self.runs_dir).state
                except RunNotFound:
                    continue
                with self.lock:
                    sighting.states.setdefault(str(state), time.time())
                    if not sighting.path or sighting.path[-1] != state:
                        sighting.path.append(str(state))

    def _read_worker_logs(self, now: float) -> None:
        """Stamp when each worker first says it is ready (TensorFlow imported, data loaded) and warm; a log that
        has said both is not read again."""
        for log in (self.runs_dir / ".workers").glob("worker-*.log"):
            if all((log.stem, line) in self.workers for line in self.WORKER_LINES):
                continue
            text = log.read_text(errors="replace")
            for line in self.WORKER_LINES:
                if line in text:
                    with self.lock:
                        self.workers.setdefault((log.stem, line), now)

    def new_since(self, moment: float) -> list[str]:
        """Ids of the runs first seen after `moment`, oldest first."""
        with self.lock:
            return [run_id for _, run_id in sorted((s.first_seen, run_id) for run_id, s in self.sightings.items()
                                                  if s.first_seen > moment)]

    def seen(self, run_id: str, state: str) -> float | None:
        with self.lock:
            sighting = self.sightings.get(run_id)
            return sighting.states.get(state) if sighting else None

    def path(self, run_id: str) -> list[str]:
        with self.lock:
            sighting = self.sightings.get(run_id)
            return list(sighting.path) if sighting else []

    def finished(self, run_id: str) -> bool:
        path = self.path(run_id)
        return bool(path) and RunState(path[-1]) in self.FINAL

    def wait_for_new_run(self, moment: float, timeout: float) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            new = self.new_since(moment)
            if new:
                return new[0]
            time.sleep(0.005)
        raise RuntimeError(f"no new run folder appeared within {timeout:.0f} s")

    def wait_until_finished(self, run_id: str, timeout: float) -> None:
        deadline = time.time() + timeout
        while not self.finished(run_id):
            if time.time() > deadline:
                raise RuntimeError(f"run {run_id} did not finish within {timeout:.0f} s: {self.path(run_id)}")
            time.sleep(0.01)


@dataclass
class Press:
    """One run's legs, in seconds; None where it did not happen (never on screen within the timeout)."""

    label: str
    run_id: str
    started: float  # the click (or, with no page, the moment the run was queued)
    queued: float | None
    running: float | None
    completed: float | None
    on_screen: float | None
    steps_per_second: float | None
    trainer_seconds: float | None
    states: list[str]
    note: str = ""

    def leg(self, start: float | None, end: float | None) -> float | None:
        return None if start is None or end is None else end - start


def record(label: str, run_id: str, started: float, watcher: RunWatcher, runs_dir: Path,
           on_screen: float | None = None, note: str = "") -> Press:
    run = load_run(run_id, runs_dir)
    summary = run.summary
    return Press(label, run_id, started, watcher.seen(run_id, "queued"), watcher.seen(run_id, "running"),
                 watcher.seen(run_id, "completed"), on_screen,
                 summary.steps_per_second if summary else None, summary.seconds if summary else None,
                 watcher.path(run_id), note)


# ------------------------------------------------------------------------------------------- the page


def followed_id(page) -> str | None:
    return page.evaluate("new URLSearchParams(window.location.search).get('run')")


def press_train(page, label: str, watcher: RunWatcher, runs_dir: Path, timeout: float) -> Press:
    """Click Train and wait until the new run's own id and accuracy are on an idle page (or the timeout)."""
    old_id = followed_id(page)
    started = time.time()
    page.get_by_role("button", name="Train", exact=True).click()
    run_id = watcher.wait_for_new_run(started, timeout=60)
    note, on_screen = "", None
    try:
        handle = page.wait_for_function(ANSWERED_JS, arg=[run_id, old_id], polling=10, timeout=timeout * 1000)
        seen = handle.json_value()
        on_screen = seen["at"]
        watcher.wait_until_finished(run_id, timeout=30)  # on screen can only follow "completed" on disk
        expected = load_run(run_id, runs_dir).test_accuracy
        if seen["accuracy"] != f"Test accuracy: {expected:.4f}":
            note = f"the page said {seen['accuracy']!r}, summary.json {expected:.4f}"
    except PlaywrightError:
        SHOTS.mkdir(parents=True, exist_ok=True)
        shot = SHOTS / f"click-{label.replace(' ', '-')}-never.png"
        page.screenshot(path=str(shot), full_page=True)
        main = page.locator('[data-testid="stMain"]').inner_text(timeout=5_000)
        headline = next((line for line in main.splitlines() if "Run " in line or "Test accuracy" in line
                         or "interrupted" in line), "")
        dialogs = page.get_by_role("dialog")
        dialog = f"; a dialog said {dialogs.first.inner_text()!r}" if dialogs.count() else ""
        note = (f"not on screen within {timeout:.0f} s; the page followed {followed_id(page)} and showed "
                f"{headline!r}{dialog} ({shot})")
        page.reload()  # so that the next press starts from a page that works
        page.locator(IDLE).wait_for(timeout=120_000)
    return record(label, run_id, started, watcher, runs_dir, on_screen, note)


def trace_environment(trace: Path | None) -> dict:
    """The server's environment for --trace: bench/trace first on PYTHONPATH, and the file to write."""
    if trace is None:
        return {}
    folder = str(Path(__file__).resolve().parent / "trace")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [folder, os.environ.get("PYTHONPATH")])),
            "HYBRID_LAB_TRACE": str(trace.resolve())}


def wait_for_warm_workers(runs_dir: Path, timeout: float = WARM_TIMEOUT) -> float:
    """time.time() when every worker of the pool had said it is warm (the line core/worker.py prints)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        logs = list((runs_dir / ".workers").glob("worker-*.log"))
        if logs and all("warm after" in log.read_text(errors="replace") for log in logs):
            return time.time()
        time.sleep(0.1)
    raise RuntimeError(f"the workers were not warm after {timeout} s")


def open_train_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url + "/Train")
    page.locator(IDLE).wait_for(timeout=120_000)
    page.get_by_role("button", name="Train", exact=True).wait_for(timeout=120_000)
    return page


# ------------------------------------------------------------------------------------------- no page


def queue_without_page(config, label: str, watcher: RunWatcher, runs_dir: Path, timeout: float) -> Press:
    """Queue a run of `config` for the server's workers, with no page open, and wait until it is finished."""
    started = time.time()
    run = create_run(config, runs_dir, state=RunState.QUEUED)
    watcher.wait_until_finished(run.run_id, timeout)
    return record(label, run.run_id, started, watcher, runs_dir)


def warm_fit_seconds(steps: int) -> float:
    """A warm Keras fit of `steps` steps of the article's network, as bench/train_speed.py measures it."""
    from bench.train_speed import keras_fit
    from core.config import TrainConfig
    from core.data import load_dataset

    config = TrainConfig()
    dataset = load_dataset(config.dataset, config.source)
    with tempfile.TemporaryDirectory() as log_dir:
        return steps / keras_fit(config, dataset, log_dir, steps)


# ------------------------------------------------------------------------------------------- the report


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def median(values: list) -> float | None:
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def print_report(cold: Press | None, answered_after: float | None, warm_at: float | None, presses: list[Press],
                 quiet: list[Press], fit: float | None, steps: int, workers: dict[tuple[str, str], float]) -> None:
    print("\n| press | click → queued on disk | click → running on disk (queue) | running → completed on disk "
          "(training) | completed on disk → accuracy on screen (page) | click → accuracy on screen | "
          "run's steps/s | states read |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for press in ([cold] if cold else []) + presses + quiet:
        print(f"| {press.label} | {seconds(press.leg(press.started, press.queued))} | "
              f"{seconds(press.leg(press.started, press.running))} | "
              f"{seconds(press.leg(press.running, press.completed))} | "
              f"{'—' if press in quiet else seconds(press.leg(press.completed, press.on_screen))} | "
              f"{'—' if press in quiet else seconds(press.leg(press.started, press.on_screen))} | "
              f"{press.steps_per_second or 0:,.0f} | {' → '.join(press.states)} |")
    for press in ([cold] if cold else []) + presses:
        if press.note:
            print(f"\n{press.label}: {press.note}")
    if cold and answered_after is not None:
        print(f"\nThe cold press was clicked {cold.started - answered_after:.2f} s after the server answered; "
              f"the workers said they were warm {warm_at - answered_after:.2f} s after it answered."
              if warm_at else "")
        said = [f"{log} ready {workers[log, 'ready after'] - answered_after:+.2f} s, warm "
                f"{workers[log, 'warm after'] - answered_after:+.2f} s" for log in sorted({log for log, _ in workers})
                if (log, "ready after") in workers and (log, "warm after") in workers]
        if said:
            print(f"After the server answered (the click at {cold.started - answered_after:+.2f} s): "
                  + "; ".join(said) + ".")
    total = median([p.leg(p.started, p.on_screen) for p in presses])
    training = median([p.leg(p.running, p.completed) for p in presses])
    page_leg = median([p.leg(p.completed, p.on_screen) for p in presses])
    with_page = median([p.steps_per_second for p in presses])
    without = median([p.steps_per_second for p in quiet])
    never = sum(p.on_screen is None for p in presses)
    print(f"\n| measurement (warm presses: median of {len(presses)}{f', {never} never on screen' if never else ''}) "
          "| value | target |")
    print("| --- | ---: | --- |")
    if fit is not None:
        print(f"| warm Keras `fit`, {steps:,} steps (reference) | {fit:.2f} s | |")
    print(f"| click → accuracy on screen | {seconds(total)} s | |")
    if total is not None and training:
        print(f"| … ÷ the run's own training (running → completed on disk) | {total / training:.2f}× | ≤ 1.5× |")
    if total is not None and fit:
        print(f"| … ÷ warm Keras `fit` | {total / fit:.2f}× | ≤ 1.0× |")
    print(f"| completed on disk → accuracy on screen | {seconds(page_leg)} s | ≤ 0.5 s |")
    if with_page and without:
        print(f"| steps/s with the Train page open ÷ with no page (summary.json) | {with_page:,.0f} / {without:,.0f}"
              f" = {with_page / without:.0%} | ≥ 70% |")
    if cold:
        print(f"| cold press: click → accuracy on screen | {seconds(cold.leg(cold.started, cold.on_screen))} s "
              "| ≤ 10 s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=5, help="warm presses of Train (default 5)")
    parser.add_argument("--no-page-runs", type=int, default=None, help="runs with no page open (default: --presses)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold press (the first, right after start)")
    parser.add_argument("--no-fit", action="store_true", help="skip the Keras fit reference")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between one answer and the next press")
    parser.add_argument("--timeout", type=float, default=180, help="seconds a press may take to show on screen")
    parser.add_argument("--poll-ms", type=float, default=5, help="how often the run folders are read")
    parser.add_argument("--trace", type=Path, help="have the server write what its pages read and decide to this "
                                                   "file, one JSON line each (bench/trace/sitecustomize.py)")
    args = parser.parse_args()
    quiet_runs = args.presses if args.no_page_runs is None else args.no_page_runs
    cold = answered = warm_at = None
    presses, quiet = [], []
    with tempfile.TemporaryDirectory() as runs_dir, sync_playwright() as playwright:
        runs_dir = Path(runs_dir)
        watcher = RunWatcher(runs_dir, args.poll_ms / 1000)
        watcher.start()
        browser = launch_chromium(playwright)  # before the server, so the cold press is made at once
        url, process = start_app(runs_dir, env=trace_environment(args.trace))
        answered = time.time()
        try:
            page = open_train_page(browser, url)
            if not args.no_cold:
                cold = press_train(page, "cold", watcher, runs_dir, args.timeout)
            warm_at = wait_for_warm_workers(runs_dir)
            for index in range(1, args.presses + 1):
                time.sleep(args.pause)
                presses.append(press_train(page, f"warm {index}", watcher, runs_dir, args.timeout))
            page.close()
            config = load_run((presses or [cold])[-1].run_id, runs_dir).config
            for index in range(1, quiet_runs + 1):
                time.sleep(args.pause)
                quiet.append(queue_without_page(config, f"no page {index}", watcher, runs_dir, args.timeout))
            browser.close()
        finally:
            watcher.stopped.set()
            stop_app(process)
    fit = None if args.no_fit else warm_fit_seconds(1000)
    print_report(cold, answered, warm_at, presses, quiet, fit, 1000, watcher.workers)
    if args.trace:
        print(f"\nThe server's trace is in {args.trace}; the presses, by the time of the click (time.time()):")
        for press in ([cold] if cold else []) + presses:
            print(f"- {press.label}: {press.started:.4f}, run {press.run_id}")


if __name__ == "__main__":
    main()
