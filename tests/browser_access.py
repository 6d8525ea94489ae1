"""Pieces the browser tests of who may do what share (test_browser_signin, _proxy, _guests): a run that keeps
training until someone stops it, the Runs table as the browser holds it, and a relay of Streamlit's WebSocket
that holds back a click of one browser and replays it from another — the crafted request a visitor can make.

A click on a Streamlit button is a message on the page's WebSocket (a BackMsg asking for a rerun, with the
button's trigger among the widget states and the page's address as its query string). Nothing in it says who
sent it: the server answers it in the session of the socket it arrives on. So the way to craft a Stop of
someone else's run is to take their click and send it on one's own socket, which is what `StreamRelay` does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

from core import links
from core.config import TrainConfig
from core.records import RunNotFound
from core.store import load_run
from tests.browser_support import IDLE

REPO_ROOT = Path(__file__).resolve().parents[1]
WAIT_MS = 180_000  # a busy 2-core machine (load average 15 seen): a first page, a sign-in, TensorFlow importing
# A run that is still training (or waiting for the worker) when the tests stop it: wide layers, many steps,
# one evaluation at the very end. It takes many minutes, so a test never races its end; the servers of these
# tests raise the size ceilings so that a guest may start it (LONG_RUN_LIMITS), and every test stops the runs
# it starts (the server's workers stop theirs when the module's server stops).
LONG_RUN = TrainConfig(hidden_units=[1024, 1024], steps=200_000, eval_every=200_000, source="offline", xla=False)
LONG_RUN_LIMITS = {"HYBRID_LAB_MAX_WORK": "1e14", "HYBRID_LAB_GUEST_MAX_WORK": "1e14"}
# A worker trains at a lower CPU priority (core/service.py), so on a crowded machine a run asked to stop may take
# minutes to reach the end of its chunk and write its model: a test that needs it ended waits this long.
STOP_WAIT_S = 900
STOP = "train_stop"  # the key of the Train page's Stop (Streamlit's toolbar has a Stop button of its own)
STREAM = re.compile(r".*/_stcore/stream(\?.*)?$")


def cli_run(runs_dir) -> str:
    """Train a tiny run with the command line (`python -m core.cli`), as the operator does; returns its id."""
    command = [sys.executable, "-m", "core.cli", "--hidden-units", "16", "--steps", "35", "--eval-every", "10",
               "--source", "offline", "--runs-dir", str(runs_dir), "--json"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed", result
    return result["run_id"]


def folder_snapshot(path) -> dict[str, tuple[int, int]]:
    """Every file under a run folder: its size and modification time, to tell that nothing touched it."""
    return {str(file.relative_to(path)): (file.stat().st_size, file.stat().st_mtime_ns)
            for file in sorted(path.rglob("*")) if file.is_file()}


def train_page(app_url: str, config: TrainConfig = LONG_RUN) -> str:
    """The Train page's address with `config` in the form (a settings link)."""
    return f"{app_url}/Train?{urlencode(links.settings_query(config))}"


def press_train(page) -> str:
    """Press Train on an open Train page; returns the id of the run it queued (the page follows it: ?run=)."""
    page.locator(IDLE).wait_for()
    page.get_by_role("button", name="Train", exact=True).click()
    page.wait_for_url(re.compile(r"[?&]run="))
    return parse_qs(urlparse(page.url).query)["run"][0]


def wait_for_run(run_id: str, runs_dir, done, page, timeout_s: float = WAIT_MS / 1000):
    """Wait until `done(run)` holds for the run's folder (None once it is deleted); returns the last look.

    `page` is the page whose click is awaited: the wait is spent in its wait_for_timeout, because Playwright's
    sync API handles a context's routes (StreamRelay) only inside its own calls. A wait in time.sleep left the
    click's WebSocket message in the relay, never sent, for as long as it lasted: CI's lost Stop, and an
    operator's Delete that deleted nothing.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            run = load_run(run_id, runs_dir)
        except RunNotFound:
            run = None
        if done(run) or time.monotonic() > deadline:
            return run
        page.wait_for_timeout(200)


def keyed_button(page, key: str):
    """The button of widget key `key` as a person finds it (Streamlit also draws a hidden copy, to measure it)."""
    return page.locator(f".st-key-{key}").get_by_role("button")


def run_actions_drawn(page, run_id: str) -> None:
    """Wait until the Runs page has drawn a run's downloads, links and Delete (for who may): what follows them is
    there (the run on its test set, or why it has none). Its script may still be busy with the test set."""
    page.get_by_role("heading", name=f"Run {run_id}").wait_for()
    after = page.get_by_role("heading", name="On its test set").or_(page.get_by_text("This run saved no model"))
    after.first.wait_for()


def stop_accepted(run) -> bool:
    """Whether a Stop was taken: a queued run left the queue at once, a running one was asked to stop (it does after
    its current chunk of steps)."""
    return run.stop_requested() or run.state.finished


def runs_table(page) -> list[dict[str, str]]:
    """The Runs page's table as the browser holds it: one dict per row, column title -> text.

    The grid draws on a canvas; the accessible copy of what it shows lives inside it, visible columns only.
    """
    table = page.get_by_test_id("stDataFrame").locator("table")
    table.locator("tbody tr td").first.wait_for(state="attached")
    titles = table.locator("th").all_inner_texts()
    return [dict(zip(titles, row.locator("td").all_inner_texts())) for row in table.locator("tbody tr").all()]


class StreamRelay:
    """Every Streamlit WebSocket of a browser context, relayed by Playwright between the page and the server.

    While `holding`, what the page sends is kept in `held` instead of reaching the server (a click that never
    arrives); `send` puts a message on the newest socket towards the server as if its page had sent it; every
    `script_finished` the server sends is counted, so a test knows its session has run the page again.
    """

    def __init__(self, context):
        self.holding = False
        self.held: list[bytes] = []
        self.finished = 0
        self._servers = []
        context.route_web_socket(STREAM, self._relay)

    def _relay(self, page_side) -> None:
        server = page_side.connect_to_server()
        self._servers.append(server)
        page_side.on_message(lambda message: self.held.append(message) if self.holding else server.send(message))
        server.on_message(lambda message: self._to_page(page_side, message))

    def _to_page(self, page_side, message) -> None:
        if isinstance(message, bytes) and script_finished(message):
            self.finished += 1
        page_side.send(message)

    def send(self, message: bytes) -> None:
        """Send a message to the server on the newest socket, as if this context's page had sent it."""
        self._servers[-1].send(message)

    def held_click(self, key: str) -> bytes | None:
        """The held message that presses the button with widget key `key`, if one was held."""
        return next((message for message in self.held if isinstance(message, bytes) and presses(message, key)),
                    None)


def presses(message: bytes, key: str) -> bool:
    """Whether a message from a page asks for a rerun with the button of widget key `key` pressed."""
    from streamlit.proto.BackMsg_pb2 import BackMsg

    back = BackMsg()
    back.ParseFromString(message)
    if back.WhichOneof("type") != "rerun_script":
        return False
    return any(widget.id.endswith(f"-{key}") and widget.trigger_value
               for widget in back.rerun_script.widget_states.widgets)


def script_finished(message: bytes) -> bool:
    """Whether a message from the server says a run of the page's script has finished."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    forward = ForwardMsg()
    forward.ParseFromString(message)
    return forward.WhichOneof("type") == "script_finished"


def replay_click(page, holder: StreamRelay, key: str, replayer: StreamRelay, replayer_page, reruns: int = 3) -> None:
    """Press the button `key` on `page` with its message held back, then send that message on the replayer's
    socket, and wait until the replayer's session has run its page `reruns` times since (so the replayed
    click has been read: the run in progress, then the one that takes the click, then one more)."""
    holder.holding = True
    try:
        keyed_button(page, key).click()
        deadline = time.monotonic() + WAIT_MS / 1000
        while holder.held_click(key) is None and time.monotonic() < deadline:
            page.wait_for_timeout(100)
    finally:
        holder.holding = False
    click = holder.held_click(key)
    assert click is not None, f"no click of {key!r} was sent"
    before = replayer.finished
    replayer.send(click)
    deadline = time.monotonic() + WAIT_MS / 1000
    while replayer.finished < before + reruns and time.monotonic() < deadline:
        replayer_page.wait_for_timeout(100)
    assert replayer.finished >= before + reruns, "the replayer's page did not run again after the replayed click"


def replayed_stop_stops_nothing(owner_page, owner_relay: StreamRelay, replayer_page, replayer_relay: StreamRelay,
                                run_id: str, runs_dir, who_may: str) -> None:
    """The owner's real Stop click, replayed on another visitor's socket, stops nothing, and the other visitor's
    page says who may stop the run and draws no Stop."""
    replay_click(owner_page, owner_relay, STOP, replayer_relay, replayer_page)

    run = load_run(run_id, runs_dir)
    assert run.state.active and not run.stop_requested(), run.state
    from playwright.sync_api import expect  # here: the modules that import this one skip without Playwright

    expect(replayer_page.get_by_text(who_may)).to_be_visible(timeout=WAIT_MS)
    assert keyed_button(replayer_page, STOP).count() == 0
