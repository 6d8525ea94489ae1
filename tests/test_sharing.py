"""The Train page when the app is shared (AppTest): what a visitor may ask of the server, and what a queued
run looks like to the visitor who queued it.

Served beyond loopback (`--server.address 0.0.0.0`), the page must not offer the server's own files as data:
no "my own files" choice, no Data path box, whatever session state asks for. The service's limits (the size
ceiling, runs per visitor) reach the page as plain sentences, and no run folder is made. No worker process
is started here: `core.service.ensure_pool` is a no-op, so queued runs stay queued.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
import streamlit.runtime.context
from streamlit import config as streamlit_config
from streamlit.testing.v1 import AppTest

import core.service
from core import queue
from core.config import SETTINGS_BY_NAME, SOURCES
from core.records import RunState
from core.queue_files import QUEUE_DIR
from core.store import create_run, list_runs, load_run
from tests.factories import TINY
from ui.form import form_values

HOME = str(Path(__file__).resolve().parents[1] / "Home.py")
TRAIN_PAGE = "pages/1_Train.py"
TIMEOUT = 60
SERVICE_VARIABLES = ("HYBRID_LAB_WORKERS", "HYBRID_LAB_QUEUE_LIMIT", "HYBRID_LAB_MAX_WORK", "HYBRID_LAB_FILES")
SOURCE_LABELS = SETTINGS_BY_NAME["source"].choice_labels  # the Source select shows labels, not values
SERVER_FILES = SOURCE_LABELS["path"]  # "my own files": the choice that reads a path on the server


# --- fixtures and helpers ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def service_defaults(monkeypatch, tmp_path):
    """Every service setting at its default (whatever the shell set), and the runs in tmp_path/runs."""
    for variable in SERVICE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HYBRID_LAB_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture(autouse=True)
def no_workers(monkeypatch):
    """core.service.submit queues runs as usual, but no worker pool starts; the runs dirs it was asked for."""
    asked = []
    monkeypatch.setattr(core.service, "ensure_pool", lambda runs_dir=None: asked.append(runs_dir))
    return asked


@pytest.fixture(autouse=True)
def loopback_visitor(monkeypatch):
    """The visitor at this machine, as a real server sees them: a request with no sign of a proxy.

    Under AppTest the client context is a MagicMock (AppTest mocks the runtime and cannot seed headers); with
    no client context, st.context.headers is empty, as for a browser at the machine that sends none of the
    forwarding headers (ui/identity.py reads them).
    """
    monkeypatch.setattr(streamlit.runtime.context, "_get_client_context", lambda: None)


def served_at(address: str):
    """A fixture body: the server's address option set to `address` for one test, then put back."""
    before = streamlit_config.get_option("server.address")
    streamlit_config.set_option("server.address", address)
    try:
        yield address
    finally:
        streamlit_config.set_option("server.address", before)


@pytest.fixture
def beyond_loopback():
    """The app as `streamlit run app.py --server.address 0.0.0.0` serves it: to every machine that can reach it."""
    yield from served_at("0.0.0.0")


@pytest.fixture
def on_loopback():
    """The app as .streamlit/config.toml serves it: to this machine only."""
    yield from served_at("127.0.0.1")


def show_server_address():
    """A one-line app: the server address the page code reads."""
    import streamlit as st

    st.write(st.get_option("server.address"))


def train_page(**query) -> AppTest:
    """The app switched to the Train page, not run yet (a test may set session state first)."""
    app = AppTest.from_file(HOME, default_timeout=TIMEOUT)
    app.switch_page(TRAIN_PAGE)
    for name, value in query.items():
        app.query_params[name] = value
    return app


def open_train_page(**query) -> AppTest:
    return train_page(**query).run()


def assert_no_exception(app: AppTest) -> None:
    assert not app.exception, [element.value for element in app.exception]


def source_select(app: AppTest):
    return app.selectbox(key="form_source")


def text_input_keys(app: AppTest) -> list[str]:
    return [box.key for box in app.text_input]


def train_button(app: AppTest):
    return next(button for button in app.button if button.label == "Train")


def errors(app: AppTest) -> list[str]:
    return [error.value for error in app.error]


def shown(app: AppTest) -> str:
    """What a person reads on the page: text elements, outcome boxes and progress bars."""
    parts = [str(element.value) for kind in ("markdown", "caption", "info", "success", "warning", "error")
             for element in getattr(app, kind)]
    return "\n".join(parts + [bar.text for bar in app.progress])


# --- the server's files ----------------------------------------------------------------------------------


def test_the_address_option_reaches_the_page_code(beyond_loopback):
    # Without this, the tests below could pass because the option never reached the page.
    app = AppTest.from_function(show_server_address).run()

    assert [element.value for element in app.markdown] == ["0.0.0.0"]
    assert st.get_option("server.address") == "0.0.0.0"


def test_served_beyond_loopback_the_train_page_offers_no_server_files(beyond_loopback):
    app = open_train_page()

    assert_no_exception(app)
    assert SERVER_FILES == "my own files"
    assert source_select(app).options == [SOURCE_LABELS[source] for source in SOURCES if source != "path"]
    assert "form_data_path" not in text_input_keys(app)


def test_served_beyond_loopback_a_session_asking_for_server_files_trains_on_auto(beyond_loopback,
                                                                                 service_defaults):
    # What a crafted session could hold when it arrives: a whole form (so the page does not fill in the
    # article's settings) asking for the path source and a file of the server.
    app = train_page()
    for key, value in form_values(TINY.replace(source="path", data_path="/etc/passwd")).items():
        app.session_state[key] = value
    assert app.session_state["form_source"] == "path"
    app.run()

    assert_no_exception(app)
    assert source_select(app).value == "auto"
    assert SERVER_FILES not in source_select(app).options
    assert "form_data_path" not in text_input_keys(app)
    assert not errors(app)

    train_button(app).click().run()

    assert_no_exception(app)
    (run,) = list_runs(service_defaults)
    assert (run.config.source, run.config.data_path) == ("auto", None)
    assert run.config.hidden_units == TINY.hidden_units  # the rest of the form was taken as it was
    assert run.state is RunState.QUEUED


def test_a_path_source_chosen_on_loopback_goes_back_to_auto_once_served_beyond(on_loopback):
    app = open_train_page()
    source_select(app).set_value("path").run()
    app.text_input(key="form_data_path").input("/etc/passwd").run()
    assert source_select(app).value == "path"

    streamlit_config.set_option("server.address", "0.0.0.0")  # put back by the on_loopback fixture
    app.session_state["form_source"] = "path"
    app.run()

    assert_no_exception(app)
    assert source_select(app).value == "auto"
    assert SERVER_FILES not in source_select(app).options
    assert "form_data_path" not in text_input_keys(app)


def test_on_loopback_the_train_page_offers_the_servers_files(on_loopback):
    app = open_train_page()
    assert SERVER_FILES in source_select(app).options
    assert "form_data_path" not in text_input_keys(app)  # only once the choice is made

    source_select(app).set_value("path").run()

    assert_no_exception(app)
    assert source_select(app).value == "path"
    assert app.text_input(key="form_data_path").label == "Data path"


# --- the service's limits, in words -----------------------------------------------------------------------


def test_a_run_too_big_for_the_server_is_refused_in_plain_words(service_defaults, no_workers, monkeypatch):
    monkeypatch.setenv("HYBRID_LAB_MAX_WORK", "1000")  # far below even a one-step run of the tiniest network
    app = open_train_page()

    train_button(app).click().run()

    assert_no_exception(app)
    (error,) = errors(app)
    assert error.startswith("Cannot train: this run is too big for this server"), error
    assert "HYBRID_LAB_MAX_WORK" in error and "fewer steps" in error
    assert "Traceback" not in error and "SubmissionRefused" not in error
    assert list_runs(service_defaults) == []
    assert not service_defaults.exists() or [path.name for path in service_defaults.iterdir()] == []
    assert no_workers == []
    assert "run" not in app.query_params


def test_one_visitor_may_have_only_so_many_runs_waiting(service_defaults, no_workers, monkeypatch):
    monkeypatch.setenv("HYBRID_LAB_QUEUE_LIMIT", "1")
    waiting = create_run(TINY, service_defaults, state=RunState.QUEUED)
    app = open_train_page()

    train_button(app).click().run()

    assert_no_exception(app)
    (error,) = errors(app)
    assert error.startswith("Cannot train: you already have 1 run waiting or training"), error
    assert "stop some or wait for them to finish" in error
    assert [run.run_id for run in list_runs(service_defaults)] == [waiting.run_id]
    assert queue.queued_ids(service_defaults) == [waiting.run_id]
    assert no_workers == []


# --- a queued run, followed -----------------------------------------------------------------------------


def test_a_queued_run_shows_its_place_in_the_queue_and_can_be_stopped(service_defaults):
    run = create_run(TINY, service_defaults, state=RunState.QUEUED)
    app = open_train_page(run=run.run_id)

    assert_no_exception(app)
    assert "Queued: 1st in the queue" in shown(app)
    stop = app.button(key="train_stop")
    assert stop.label == "Stop" and not stop.disabled

    stop.click().run()

    assert_no_exception(app)
    assert "Cancelled while queued: it never started" in shown(app)
    stopped = load_run(run.run_id, service_defaults)
    assert stopped.state is RunState.STOPPED
    assert stopped.message == "cancelled while queued: it never started"
    assert queue.queued_ids(service_defaults) == []
    assert not (service_defaults / QUEUE_DIR / run.status.queue_entry).exists()

    app.run()  # the page's next refresh: the run is over

    assert_no_exception(app)
    assert "Stopped before it started. Cancelled while queued: it never started." in shown(app)
    assert not [button for button in app.button if button.key == "train_stop"]


def test_a_run_cancelled_while_queued_still_says_so_after_the_refresh(service_defaults):
    run = create_run(TINY, service_defaults, state=RunState.QUEUED)
    app = open_train_page(run=run.run_id)
    app.button(key="train_stop").click().run()

    app.run()

    assert load_run(run.run_id, service_defaults).state is RunState.STOPPED
    assert "cancelled while queued" in shown(app).lower()
