"""Issue 17: a warm press whose run completed on disk in seconds never showed its accuracy on the Train page.

One way it happens, made deterministic here: a warm worker takes a queued run within ~20 ms of it being
queued, which is exactly when the Train page, rerun after the press, reads the run it now follows. The run
store reads status.json ("queued") and then looks for the run's queue entry; when the worker renames the
entry, writes "running" and drops its claim in between those two looks, the store reports the run as
"interrupted" ("it left the queue without starting"). The page's full rerun decides from that read that
the run is finished, so the run's view is a fragment that never refreshes; the fragment's own read, a few
milliseconds later, sees "running" and draws "Starting…" and a Stop button, and that is what the page
shows for good. bench/click_to_accuracy.py caught it (a warm press still "Starting…" after 180 s); its
RunWatcher saw the same "queued → interrupted → running" from outside the server.

The interleaving is injected where it happens: right after the store has parsed a queued status.json, the
worker's take (core.queue.take_next, in this process) runs once. Nothing is faked: the take renames, writes
and unlinks the real files, and what the page and the store then say is what they say.
"""

from __future__ import annotations

import pytest
import streamlit.runtime.context
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1 import local_script_runner

import core.service
from core import queue
from core.records import RunState, Status
from core.store import create_run, load_run
from tests.factories import TINY
from tests.apptest_support import HOME, TIMEOUT
from tests.test_pages import fill_tiny_form, texts, train_button


@pytest.fixture
def take_while_read(monkeypatch):
    """Once armed (armed.append(runs_dir)): the next time the store parses a queued status.json, a worker
    takes the oldest queued run of runs_dir before the store looks at the queue. Returns the list of runs
    it took."""
    armed, taken = [], []
    original = Status.from_json.__func__

    def from_json(cls, values):
        status = original(cls, values)
        if armed and status.state is RunState.QUEUED:
            runs_dir = armed.pop()
            taken.append(queue.take_next(runs_dir))  # it reads the run too: disarmed first
        return status

    monkeypatch.setattr(Status, "from_json", classmethod(from_json))
    return armed, taken


def test_a_queued_run_that_a_worker_takes_while_it_is_read_never_reads_as_interrupted(tmp_path, take_while_read):
    armed, taken = take_while_read
    run = create_run(TINY, tmp_path, state=RunState.QUEUED)
    armed.append(tmp_path)

    seen = load_run(run.run_id, tmp_path)

    assert [each.run_id for each in taken] == [run.run_id]
    assert load_run(run.run_id, tmp_path).state is RunState.RUNNING  # the truth, read again afterwards
    assert seen.state in (RunState.QUEUED, RunState.RUNNING), f"read as {seen.state}: {seen.message}"


@pytest.fixture
def auto_reruns(monkeypatch):
    """The fragment ids that the page's last script run asked the browser to rerun on a timer (run_every)."""
    asked = []
    original = local_script_runner.LocalScriptRunner.forward_msgs

    def forward_msgs(self):
        messages = original(self)
        asked[:] = [message.auto_rerun.fragment_id for message in messages
                    if message.WhichOneof("type") == "auto_rerun"]
        return messages

    monkeypatch.setattr(local_script_runner.LocalScriptRunner, "forward_msgs", forward_msgs)
    return asked


def test_the_train_page_keeps_refreshing_a_run_that_a_worker_takes_while_the_page_reads_it(
        tmp_path, monkeypatch, take_while_read, auto_reruns):
    armed, taken = take_while_read
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("HYBRID_LAB_RUNS", str(runs_dir))
    monkeypatch.setattr(streamlit.runtime.context, "_get_client_context", lambda: None)  # a loopback visitor
    monkeypatch.setattr(core.service, "ensure_pool", lambda runs_dir=None: None)  # this test is the worker
    app = AppTest.from_file(HOME, default_timeout=TIMEOUT)
    app.switch_page("pages/1_Train.py")
    app.run()
    fill_tiny_form(app)
    armed.append(runs_dir)  # the press queues the run; the rerun that follows it reads it as the worker takes it

    train_button(app).click().run()

    run = load_run(app.query_params["run"], runs_dir)
    assert [each.run_id for each in taken] == [run.run_id]
    assert run.state is RunState.RUNNING  # taken by a live process (this one), which will train it
    assert f"Run `{run.run_id}`" in texts(app) and "Starting" in texts(app)
    # What the person sees refreshes until the run ends: the page asks the browser to rerun the run's view.
    assert auto_reruns, "the page shows a training run in a view that never refreshes"


def test_the_train_pages_buttons_keep_their_identity_when_the_page_starts_following_a_run(tmp_path, monkeypatch):
    """A widget whose identity changes between two script runs is another widget: the browser shows the old one
    (stale) beside the new one until the script run ends. Train's help, which says more while a run trains, made
    it a second Train button when the page began following a run, 56 px of layout that vanished when the script
    run ended, under the pointer of whoever was clicking Stop (CI's lost guest Stop: the press landed on the Stop
    button and the release on the line below it, so no click reached the page)."""
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("HYBRID_LAB_RUNS", str(runs_dir))
    monkeypatch.setattr(streamlit.runtime.context, "_get_client_context", lambda: None)  # a loopback visitor
    run = create_run(TINY, runs_dir, state=RunState.QUEUED)

    def buttons(app: AppTest) -> dict[str, str]:
        return {button.label: button.id for button in app.button if button.label in ("Train", "Compare engines")}

    without_a_run = buttons(AppTest.from_file(HOME, default_timeout=TIMEOUT).switch_page("pages/1_Train.py").run())
    app = AppTest.from_file(HOME, default_timeout=TIMEOUT).switch_page("pages/1_Train.py")
    app.query_params["run"] = run.run_id
    following = buttons(app.run())

    assert f"Run `{run.run_id}`" in texts(app)
    assert len(without_a_run) == 2 and following == without_a_run
