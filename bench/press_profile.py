"""Where the Train page's time goes from "run completed on disk" to "its accuracy on screen": a profile.

Starts the real app as bench/click_to_accuracy.py does (its server trace on, bench/trace/sitecustomize.py),
opens the Train page in headless Chromium, makes one warm-up press, then --presses more. For each, from the
moment this script sees the run "completed" on disk (polling its folder every 5 ms) until the new run's own
id and accuracy are on an idle page, it records:

- the app server's Python stacks with py-spy (--py-spy PATH: a py-spy binary, e.g. from `pip download
  py-spy`; never installed into the project's venv), sampled --rate times a second without pausing it;
- Chromium's main-thread activity with Chrome's own tracing (Playwright's CDP tracing), and the WebSocket
  bytes the page received;
- the server's script runs (full or fragment) from the trace, and the bytes of large messages they sent.

It prints, per press and summed: the window, the server's busy time by thread and by what it was doing (the
deepest frame's library, and the page functions it was inside), the browser's main-thread busy time by kind
(scripting, rendering, painting, garbage collection) and by script, and what crossed the WebSocket. The
profilers start a little after "completed" is seen (the coverage column says how much of the window each
saw); with --from-click, py-spy is attached before the click instead, so the server's time covers the page while
the run trains as well. Run: `python bench/press_profile.py --py-spy /path/to/py-spy [--presses 3] [--from-click]`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright  # noqa: E402

from bench.app_server import launch_chromium, start_app, stop_app  # noqa: E402
from bench.click_to_accuracy import (ANSWERED_JS, RunWatcher, followed_id, open_train_page,  # noqa: E402
                                     trace_environment, wait_for_warm_workers)

TRACE_CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "v8.execute", "toplevel",
                    "blink.user_timing", "disabled-by-default-v8.cpu_profiler"]
REPO = str(Path(__file__).resolve().parents[1])
# The page's own functions whose inclusive share of the server's time is reported.
PAGE_FUNCTIONS = ("show_run", "show_progress", "show_live_curves", "show_curves", "show_first_layer", "steady_chart",
                  "weights_picture", "loss_figure", "accuracy_figure", "load_run", "list_runs", "plotly_chart",
                  "settings_form")
BROWSER_KINDS = {
    "scripting": {"FunctionCall", "EvaluateScript", "TimerFire", "EventDispatch", "v8.compile", "v8.run",
                  "FireAnimationFrame", "RunMicrotasks", "v8.callFunction", "V8.Execute", "ParseHTML",
                  "v8.evaluateModule", "XHRReadyStateChange", "FireIdleCallback", "HandlePostMessage"},
    "rendering": {"Layout", "UpdateLayoutTree", "RecalculateStyles", "HitTest", "PrePaint", "UpdateLayer",
                  "ScheduleStyleRecalculation", "InvalidateLayout", "IntersectionObserverController::"
                  "computeIntersections", "Document::updateStyle", "LocalFrameView::layout"},
    "painting": {"Paint", "PaintImage", "CompositeLayers", "Commit", "Layerize", "UpdateLayerTree",
                 "Decode Image", "RasterTask", "DecodeImage"},
    "garbage collection": {"MajorGC", "MinorGC", "V8.GCScavenger", "V8.GC_MC_BACKGROUND_MARKING", "BlinkGC.AtomicPhase",
                           "V8.GCFinalizeMC", "V8.GCIncrementalMarking", "V8.GCCompactor"},
}


# ------------------------------------------------------------------------------------------- the server


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc: what py-spy cannot always sample."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def library_of(frame: str) -> str:
    """Which library a py-spy frame "function (path:line)" belongs to."""
    path = frame.rsplit("(", 1)[-1]
    if path.startswith(REPO):
        return "the app's own code (pages, ui, core)"
    for marker, name in (("/plotly/", "plotly (figures → JSON)"), ("/_plotly_utils/", "plotly (figures → JSON)"),
                         ("/json/", "json"), ("/streamlit/", "streamlit"), ("/tornado/", "tornado (WebSocket)"),
                         ("/google/protobuf/", "protobuf"), ("/numpy/", "numpy"), ("/pandas/", "pandas"),
                         ("/pyarrow/", "pyarrow"), ("/asyncio/", "asyncio"), ("/tensorboard/", "tensorboard")):
        if marker in path:
            return name
    return "other (stdlib, …)"


def read_py_spy(raw: Path) -> list[tuple[str, list[str], int]]:
    """(thread, frames root first, samples) from py-spy's raw format with --threads."""
    stacks = []
    if not raw.exists():  # py-spy was stopped before it took its first sample (a loaded machine, a short window)
        return stacks
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        name = thread.split(": ", 1)[-1] if ": " in thread else thread
        stacks.append((name, frames, int(count)))
    return stacks


def server_summary(stacks, rate: float) -> dict:
    by_thread, by_library, inside = collections.Counter(), collections.Counter(), collections.Counter()
    for thread, frames, count in stacks:
        by_thread[thread.split("-")[0] if thread.startswith("ScriptRunner") else thread] += count
        if frames:
            by_library[library_of(frames[-1])] += count
        names = {frame.split(" (", 1)[0].rsplit(".", 1)[-1] for frame in frames}
        for function in PAGE_FUNCTIONS:
            if function in names:
                inside[function] += count
    seconds = lambda counter: {key: value / rate for key, value in counter.most_common()}  # noqa: E731
    return {"busy": sum(count for _, _, count in stacks) / rate, "threads": seconds(by_thread),
            "libraries": seconds(by_library), "inside": seconds(inside)}


# ------------------------------------------------------------------------------------------- the browser


def browser_summary(trace: bytes) -> dict:
    """Main-thread self time of the page's renderer, by kind and by script, from a Chrome trace."""
    events = json.loads(trace)
    events = events["traceEvents"] if isinstance(events, dict) else events
    threads = {(e["pid"], e["tid"]) for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
               and e.get("args", {}).get("name") == "CrRendererMain"}
    complete = [e for e in events if e.get("ph") == "X" and (e["pid"], e["tid"]) in threads and "dur" in e]
    busiest = collections.Counter()
    for event in complete:
        if event["name"] in ("RunTask", "ThreadControllerImpl::RunTask"):
            busiest[(event["pid"], event["tid"])] += event["dur"]
    if not busiest:
        return {"busy": 0.0, "kinds": {}, "names": {}, "scripts": {}}
    main = busiest.most_common(1)[0][0]  # the page's renderer (not an iframe's or a worker's)
    complete = sorted((e for e in complete if (e["pid"], e["tid"]) == main), key=lambda e: (e["ts"], -e["dur"]))
    own, scripts, stack, busy = collections.Counter(), collections.Counter(), [], 0
    for event in complete:
        while stack and stack[-1]["ts"] + stack[-1]["dur"] <= event["ts"]:
            stack.pop()
        if stack:
            stack[-1]["_children"] = stack[-1].get("_children", 0) + event["dur"]
        else:
            busy += event["dur"]
        stack.append(event)
    for event in complete:
        mine = event["dur"] - event.get("_children", 0)
        own[event["name"]] += mine
        if event["name"] in ("FunctionCall", "EvaluateScript", "v8.compile"):
            url = (event.get("args", {}).get("data", {}) or {}).get("url", "") or "(no url)"
            scripts[url.rsplit("/", 1)[-1].split("?")[0] or url] += mine
    kinds = collections.Counter()
    for name, micros in own.items():
        kind = next((kind for kind, names in BROWSER_KINDS.items() if name in names), "other")
        kinds[kind] += micros
    seconds = lambda counter: {key: value / 1e6 for key, value in counter.most_common(8)}  # noqa: E731
    sampled_scripts, sampled_functions = javascript_samples(events, main[0])
    return {"busy": busy / 1e6, "kinds": seconds(kinds), "names": seconds(own), "scripts": seconds(scripts),
            "sampled scripts": seconds(sampled_scripts), "sampled functions": seconds(sampled_functions)}


def javascript_samples(events: list, pid: int) -> tuple[collections.Counter, collections.Counter]:
    """V8's sampling profiler in the trace (ProfileChunk events): microseconds by script and by function, for
    the stack's top frame; V8's own "(program)", "(garbage collector)" and "(idle)" keep their names."""
    nodes: dict = {}
    by_script, by_function = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("name") != "ProfileChunk" or event.get("pid") != pid:
            continue
        profile = event.get("args", {}).get("data", {}).get("cpuProfile", {})
        known = nodes.setdefault(event.get("id"), {})
        for node in profile.get("nodes", []):
            known[node["id"]] = node.get("callFrame", {})
        deltas = event.get("args", {}).get("data", {}).get("timeDeltas", [])
        for sample, delta in zip(profile.get("samples", []), deltas):
            frame = known.get(sample, {})
            url = frame.get("url", "").rsplit("/", 1)[-1] or frame.get("functionName", "?")
            if url == "(idle)":
                continue
            by_script[url] += max(delta, 0)
            by_function[f"{frame.get('functionName') or '(anonymous)'} ({url})"] += max(delta, 0)
    return by_script, by_function


# ------------------------------------------------------------------------------------------- a press


def script_runs(trace: Path, start: float, end: float) -> list[dict]:
    """The server's script runs that started in [start, end], with the bytes of their large messages."""
    runs: dict = {}
    for line in trace.read_text().splitlines():
        entry = json.loads(line)
        number = entry.get("script_run")
        if entry["event"] == "script_start" and start <= entry["t"] <= end:
            runs[number] = {"t": entry["t"] - start, "kind": entry["kind"], "megabytes": 0.0}
        elif entry["event"] == "cacheable" and number in runs:
            runs[number]["megabytes"] += entry["bytes"] / 1e6
    return list(runs.values())


def profiled_press(page, browser, server_pid: int, watcher: RunWatcher, py_spy: str, rate: float,
                   scratch: Path, index: int, received: list, from_click: bool = False) -> dict:
    old_id = followed_id(page)
    raw = scratch / f"press-{index}.txt"
    command = [py_spy, "record", "--pid", str(server_pid), "--rate", str(rate), "--format", "raw", "--threads",
               "--nonblocking", "--full-filenames", "-o", str(raw)]
    if from_click:  # the server's time while the run trains too; py-spy is attached before the click
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        spy_started = time.time()
        time.sleep(1.0)
    cpu_at_click = cpu_seconds(server_pid)
    clicked = time.time()
    page.get_by_role("button", name="Train", exact=True).click()
    run_id = watcher.wait_for_new_run(clicked, timeout=60)
    while watcher.seen(run_id, "completed") is None:
        time.sleep(0.002)
    completed = watcher.seen(run_id, "completed")
    cpu_at_completed = cpu_seconds(server_pid)
    if not from_click:
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        spy_started = time.time()
    browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
    traced = time.time()
    received.clear()
    handle = page.wait_for_function(ANSWERED_JS, arg=[run_id, old_id], polling=10, timeout=180_000)
    on_screen = handle.json_value()["at"]
    cpu_at_screen = cpu_seconds(server_pid)
    frames = [(when, size) for when, size in received if when <= on_screen]
    chrome = browser.stop_tracing()
    spy.send_signal(signal.SIGINT)
    spy.wait(timeout=60)
    return {"run": run_id, "click": clicked, "completed": completed, "on_screen": on_screen,
            "spy_from": spy_started, "trace_from": traced, "server": server_summary(read_py_spy(raw), rate),
            "browser": browser_summary(chrome),
            "received": (len(frames), sum(size for _, size in frames) / 1e6),
            "server_cpu": (cpu_at_completed - cpu_at_click, cpu_at_screen - cpu_at_completed)}


def print_press(press: dict, runs: list[dict]) -> None:
    window = press["on_screen"] - press["completed"]
    server, browser = press["server"], press["browser"]
    print(f"\n### {press['run']}: completed on disk → accuracy on screen {window:.2f} s "
          f"(click → completed {press['completed'] - press['click']:.2f} s)")
    training_cpu, page_cpu = press["server_cpu"]
    print(f"app server CPU (/proc): {training_cpu:.2f} s from the click to completed on disk "
          f"({training_cpu / max(press['completed'] - press['click'], 1e-9):.0%} of a core), {page_cpu:.2f} s from "
          "completed to on screen")
    print(f"py-spy from {press['spy_from'] - press['completed']:+.2f} s, Chrome tracing from "
          f"+{press['trace_from'] - press['completed']:.2f} s; WebSocket frames received: {press['received'][0]}, "
          f"{press['received'][1]:.1f} MB")
    print("\nserver script runs in the window (+s from completed, kind, MB of large messages): "
          + ", ".join(f"+{run['t']:.2f} {run['kind']} {run['megabytes']:.1f}" for run in runs))
    print(f"\n| app server ({server['busy']:.2f} s busy, sampled) | seconds |\n| --- | ---: |")
    for section in ("threads", "libraries", "inside"):
        label = {"threads": "thread", "libraries": "deepest frame in", "inside": "inside the page's"}[section]
        for key, value in list(server[section].items())[:8]:
            print(f"| {label}: {key} | {value:.2f} |")
    print(f"\n| Chromium main thread ({browser['busy']:.2f} s busy) | seconds |\n| --- | ---: |")
    for section, label in (("kinds", "kind"), ("names", "event"), ("sampled scripts", "JS samples in"),
                           ("sampled functions", "JS samples in")):
        for key, value in browser[section].items():
            print(f"| {label}: {key} | {value:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--py-spy", required=True, help="a py-spy binary (pip download py-spy; unzip the wheel)")
    parser.add_argument("--presses", type=int, default=3)
    parser.add_argument("--rate", type=float, default=250, help="py-spy samples per second")
    parser.add_argument("--from-click", action="store_true",
                        help="sample the server from the click (the page while the run trains), not from completed")
    args = parser.parse_args()
    presses = []
    with tempfile.TemporaryDirectory(prefix="press-profile-") as scratch, sync_playwright() as playwright:
        scratch = Path(scratch)
        runs_dir, trace = scratch / "runs", scratch / "trace.jsonl"
        watcher = RunWatcher(runs_dir, 0.005)
        runs_dir.mkdir()
        watcher.start()
        browser = launch_chromium(playwright)
        url, process = start_app(runs_dir, env=trace_environment(trace))
        try:
            wait_for_warm_workers(runs_dir)
            page = open_train_page(browser, url)
            received: list = []
            page.on("websocket", lambda socket: socket.on(
                "framereceived", lambda payload: received.append((time.time(), len(payload)))))
            page.reload()  # so that the WebSocket opens under the listener
            page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=120_000)
            for index in range(args.presses + 1):  # the first press warms the page up: not reported
                press = profiled_press(page, browser, process.pid, watcher, args.py_spy, args.rate, scratch,
                                       index, received, args.from_click)
                press["runs"] = script_runs(trace, press["completed"], press["on_screen"])
                if index:
                    presses.append(press)
                time.sleep(1)
            browser.close()
        finally:
            watcher.stopped.set()
            stop_app(process)
    for press in presses:
        print_press(press, press["runs"])


if __name__ == "__main__":
    main()
