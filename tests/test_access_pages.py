"""Who is asking, as the pages see it (AppTest): the access line in each way of serving, Stop and Delete only for
those who may, and the refusal in words when a crafted request asks anyway.

The facts of a request reach the pages as a real server hands them over: the listening address is the
server.address option; the headers are the client context's (Streamlit keeps the WebSocket handshake's; AppTest
cannot seed them, so tests put a client context in its place); `[auth]` is AppTest's secrets; the signed-in user
is AppTest's `user` (what st.user reads). Sign-in mode points at a real OpenID Connect provider on loopback
(oidc-provider-mock), which ui/identity.py asks for its metadata before offering Sign in. No worker starts.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import streamlit.runtime.context
from streamlit import config as streamlit_config
from streamlit.testing.v1 import AppTest

import core.service
from core.access import OPERATORS_ENV, member, new_guest
from core.config import SETTINGS_BY_NAME
from core.records import RunState, STOP_FILE
from core.store import create_run, list_runs, load_run
from tests.factories import TINY, make_run
from ui.identity import GUEST_LINE, GUEST_STATE, NOT_SIGNED_IN

HOME = str(Path(__file__).resolve().parents[1] / "Home.py")
TRAIN, RUNS, DRAW, TENSORBOARD = "pages/1_Train.py", "pages/2_Runs.py", "pages/4_Draw.py", "pages/3_TensorBoard.py"
ACTING_PAGES = [TRAIN, RUNS, DRAW]
TIMEOUT = 60
SERVER_FILES = SETTINGS_BY_NAME["source"].choice_labels["path"]
ISSUER = "http://127.0.0.1/mock"  # what st.user holds after a sign-in; only the key depends on it
ALICE_USER = {"is_logged_in": True, "iss": ISSUER, "sub": "alice", "email": "alice@example.org",
              "name": "Alice Liddell"}
BOB_USER = {"is_logged_in": True, "iss": ISSUER, "sub": "bob", "email": "bob@example.org", "name": "Bob"}
ALICE, BOB = member(ALICE_USER, frozenset()), member(BOB_USER, frozenset())


# --- the request's facts ----------------------------------------------------------------------------------


@dataclass
class Handshake:
    """What Streamlit keeps of a browser's WebSocket handshake (its ClientContext)."""

    headers: list = field(default_factory=list)
    cookies: dict = field(default_factory=dict)
    remote_ip: str | None = None


@pytest.fixture(autouse=True)
def settings(monkeypatch, tmp_path):
    """Service settings at their defaults, runs in tmp_path/runs, no operators listed, no worker pool."""
    for setting in core.service.SERVICE_SETTINGS:
        monkeypatch.delenv(setting.variable, raising=False)
    monkeypatch.delenv(OPERATORS_ENV, raising=False)
    monkeypatch.setenv("HYBRID_LAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(core.service, "ensure_pool", lambda runs_dir=None: None)
    return tmp_path / "runs"


@pytest.fixture
def handshake(monkeypatch):
    """The browser's handshake; a test fills in its headers (none: a browser at the machine that sends none)."""
    shake = Handshake()
    monkeypatch.setattr(streamlit.runtime.context, "_get_client_context", lambda: shake)
    return shake


@pytest.fixture(autouse=True)
def address():
    """The listening address (127.0.0.1, as .streamlit/config.toml has it); a test may change it."""
    before = streamlit_config.get_option("server.address")
    streamlit_config.set_option("server.address", "127.0.0.1")
    yield
    streamlit_config.set_option("server.address", before)


@pytest.fixture
def guests_mode(handshake):
    """`streamlit run app.py --server.address 0.0.0.0`, opened from another machine."""
    streamlit_config.set_option("server.address", "0.0.0.0")  # put back by `address`
    handshake.headers = [("host", "192.168.1.20:8501"), ("origin", "http://192.168.1.20:8501")]
    return handshake


@pytest.fixture(scope="module")
def provider():
    """A real OpenID Connect provider on loopback; its metadata URL."""
    mock = pytest.importorskip("oidc_provider_mock")
    with mock.run_server_in_thread(port=0) as server:
        yield f"http://127.0.0.1:{server.server_port}/.well-known/openid-configuration"


def auth_section(metadata_url: str, **changes) -> dict:
    section = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "a-secret-" * 4,
               "client_id": "hybrid-lab", "client_secret": "its-secret", "server_metadata_url": metadata_url}
    return {key: value for key, value in {**section, **changes}.items() if value is not None}


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/.well-known/openid-configuration"  # nothing listens there any more


def page(name: str, *, auth: dict | None = None, user: dict | None = None, **query) -> AppTest:
    """The app switched to page `name`, not run yet, with `[auth]` and the signed-in user if given."""
    app = AppTest.from_file(HOME, default_timeout=TIMEOUT)
    if name != "Home.py":
        app.switch_page(name)
    if auth is not None:
        app.secrets["auth"] = auth
    app.user = user or {}
    for key, value in query.items():
        app.query_params[key] = value
    return app


def texts(app: AppTest) -> str:
    """What a person reads on the page (Markdown's escapes and bold marks removed, as the browser shows it)."""
    parts = [str(element.value) for kind in ("markdown", "caption", "info", "success", "warning", "error")
             for element in getattr(app, kind)]
    return "\n".join(parts + [bar.text for bar in app.progress]).replace("\\", "").replace("**", "")


def errors(app: AppTest) -> list[str]:
    return [str(error.value).replace("\\", "") for error in app.error]


def button_keys(app: AppTest) -> list[str]:
    return [button.key for button in app.button]


def labels(app: AppTest) -> list[str]:
    return [button.label for button in app.button]


def assert_no_exception(app: AppTest) -> None:
    assert not app.exception, [element.value for element in app.exception]


# --- personal mode: nothing changes ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTING_PAGES + ["Home.py"])
def test_the_person_at_the_machine_sees_no_access_line(name, handshake, settings):
    handshake.headers = [("host", "127.0.0.1:8501"), ("origin", "http://127.0.0.1:8501")]
    make_run(settings, model=True)
    app = page(name).run()

    assert_no_exception(app)
    shown = texts(app)
    assert GUEST_LINE not in shown and NOT_SIGNED_IN not in shown and "Signed in as" not in shown
    assert not {"access_sign_in", "access_sign_out"} & set(button_keys(app))


def test_the_runs_page_has_an_owner_column_where_older_and_command_line_runs_are_the_operators(settings):
    older = make_run(settings)
    older.write_status(RunState.COMPLETED, owner=None, owner_name=None)  # as written before owners
    make_run(settings, owner=ALICE)
    app = page(RUNS).run()

    assert_no_exception(app)
    table = app.dataframe[0].value
    assert sorted(table["owner"]) == ["Alice Liddell", "operator"]
    assert not app.segmented_control  # at the machine, every run is one's own: no "Mine"


# --- guests mode --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTING_PAGES + ["Home.py"])
def test_a_guest_reads_the_guest_line_on_every_page_that_acts(name, guests_mode):
    app = page(name).run()

    assert_no_exception(app)
    assert GUEST_LINE in texts(app)
    assert not {"access_sign_in", "access_sign_out"} & set(button_keys(app))


def test_a_guest_is_offered_no_server_files_and_no_server_path(guests_mode, settings):
    app = page(TRAIN).run()

    assert SERVER_FILES not in app.selectbox(key="form_source").options
    tensorboard = page(TENSORBOARD).run()
    assert_no_exception(tensorboard)
    assert not tensorboard.code  # the `tensorboard --logdir /the/servers/path` command is the operator's
    assert str(settings.resolve()) not in texts(tensorboard)


def test_a_guest_stops_the_run_its_tab_started_but_not_another_guests_nor_the_command_lines(guests_mode, settings):
    app = page(TRAIN).run()
    next(button for button in app.button if button.label == "Train").click().run()
    assert_no_exception(app)
    (mine,) = list_runs(settings)
    assert mine.status.owner == app.session_state[GUEST_STATE].key
    other_guest = new_guest()
    theirs = create_run(TINY, settings, state=RunState.QUEUED, owner=other_guest)
    command_lines = create_run(TINY, settings, state=RunState.QUEUED)

    app.query_params["run"] = theirs.run_id
    app.run()
    assert "train_stop" not in button_keys(app)
    assert f"Only {other_guest.name} or an operator can stop this run." in texts(app)
    app.query_params["run"] = command_lines.run_id
    app.run()
    assert "train_stop" not in button_keys(app)
    assert "Only an operator can stop this run." in texts(app)

    app.query_params["run"] = mine.run_id
    app.run()
    app.button(key="train_stop").click().run()

    assert_no_exception(app)
    assert load_run(mine.run_id, settings).state is RunState.STOPPED
    assert [load_run(run.run_id, settings).state for run in (theirs, command_lines)] == [RunState.QUEUED] * 2


def test_a_guest_deletes_nothing_and_a_forged_delete_is_refused_in_words(guests_mode, settings):
    app = page(RUNS)
    app.run()
    own = make_run(settings, owner=app.session_state[GUEST_STATE])
    app.query_params["run"] = own.run_id
    app.run()
    assert_no_exception(app)
    assert "runs_delete" not in button_keys(app)  # not even for its own run

    app.session_state["runs_deleting"] = own.run_id  # what a click on Delete… would have set
    app.run()
    assert "cannot be undone" in texts(app)  # the dialog opened: the page's courtesy was bypassed
    next(button for button in app.button if button.label == "Delete").click().run()

    assert_no_exception(app)
    assert errors(app) == ["Cannot delete this run: guests cannot delete runs, not even their own; ask an operator."]
    assert own.path.is_dir()


def test_a_guest_sees_owners_and_can_show_only_its_own_runs(guests_mode, settings):
    app = page(RUNS)
    app.run()
    guest = app.session_state[GUEST_STATE]
    own, others = make_run(settings, owner=guest), make_run(settings, owner=ALICE)
    app.run()
    assert sorted(app.dataframe[0].value["owner"]) == sorted([guest.name, "Alice Liddell"])

    show = app.segmented_control(key="runs_show")
    assert show.label == "Show" and show.options == ["Everyone's", "Mine"] and show.value == "Everyone's"
    show.set_value("Mine").run()

    assert_no_exception(app)
    assert list(app.dataframe[0].value["run"]) == [own.run_id]
    assert others.path.is_dir()


def test_through_a_proxy_on_this_machine_visitors_are_guests_with_no_server_files(handshake):
    # The README's old advice: the app on 127.0.0.1 behind a proxy. Every visitor looked like the person at the
    # machine, and was offered the server's files.
    handshake.headers = [("host", "127.0.0.1:8501"), ("x-forwarded-for", "203.0.113.9")]
    handshake.remote_ip = "203.0.113.9"  # what a server that believes X-Forwarded-For reports
    app = page(TRAIN).run()

    assert_no_exception(app)
    assert GUEST_LINE in texts(app)
    assert SERVER_FILES not in app.selectbox(key="form_source").options


def test_a_header_the_visitor_sets_does_not_choose_whose_limit_they_use(handshake, settings, monkeypatch):
    # The hostile sweep: X-Forwarded-For chose the visitor's id, so two values were two queue limits.
    monkeypatch.setenv("HYBRID_LAB_GUEST_QUEUE_LIMIT", "1")
    monkeypatch.setenv("HYBRID_LAB_QUEUE_LIMIT", "1")
    handshake.headers = [("host", "127.0.0.1:8501"), ("x-forwarded-for", "198.51.100.1")]
    handshake.remote_ip = "198.51.100.1"
    app = page(TRAIN).run()
    next(button for button in app.button if button.label == "Train").click().run()
    assert not app.error and len(list_runs(settings)) == 1

    handshake.headers = [("host", "127.0.0.1:8501"), ("x-forwarded-for", "198.51.100.2")]
    handshake.remote_ip = "198.51.100.2"
    next(button for button in app.button if button.label == "Train").click().run()

    assert_no_exception(app)
    (error,) = errors(app)
    assert error.startswith("Cannot train: you already have 1 run waiting or training"), error
    assert len(list_runs(settings)) == 1


def test_two_browser_tabs_behind_one_address_are_two_guests_with_two_limits(handshake, settings, monkeypatch):
    # A class behind one NAT address was one visitor: now every browser session is a guest of its own.
    monkeypatch.setenv("HYBRID_LAB_GUEST_QUEUE_LIMIT", "1")
    handshake.headers = [("host", "lab.example.org"), ("x-forwarded-for", "198.51.100.7")]
    handshake.remote_ip = "198.51.100.7"
    first, second = page(TRAIN).run(), page(TRAIN).run()

    for app in (first, second):
        next(button for button in app.button if button.label == "Train").click().run()
        assert not app.error, errors(app)

    owners = {run.status.owner for run in list_runs(settings)}
    assert owners == {first.session_state[GUEST_STATE].key, second.session_state[GUEST_STATE].key}
    assert len(owners) == 2


# --- sign-in mode ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTING_PAGES)
def test_before_signing_in_a_visitor_reads_the_line_and_is_offered_sign_in(name, provider):
    app = page(name, auth=auth_section(provider)).run()

    assert_no_exception(app)
    assert NOT_SIGNED_IN in texts(app)
    (sign_in,) = [button for button in app.button if button.key == "access_sign_in"]
    assert sign_in.label == "Sign in"


def test_before_signing_in_a_visitor_trains_nothing(provider, settings):
    app = page(TRAIN, auth=auth_section(provider)).run()

    next(button for button in app.button if button.label == "Train").click().run()

    assert_no_exception(app)
    (error,) = errors(app)
    assert error.startswith("Cannot train: only signed-in users train on this server"), error
    assert list_runs(settings) == []


def test_a_signed_in_user_is_shown_by_name_with_sign_out(provider, monkeypatch):
    app = page(TRAIN, auth=auth_section(provider), user=ALICE_USER).run()

    assert_no_exception(app)
    (line,) = [text for text in texts(app).splitlines() if text.startswith("Signed in as")]
    assert line == "Signed in as Alice Liddell"
    assert [button.label for button in app.button if button.key == "access_sign_out"] == ["Sign out"]
    assert "access_sign_in" not in button_keys(app)

    monkeypatch.setenv(OPERATORS_ENV, "alice@example.org")
    app.run()
    assert "Signed in as Alice Liddell · operator" in texts(app).splitlines()


def test_a_name_from_the_provider_is_shown_as_written_never_as_markdown(provider):
    hostile = {**BOB_USER, "name": "[click me](https://evil.example) **boss**"}
    app = page(TRAIN, auth=auth_section(provider), user=hostile).run()

    line = next(str(element.value) for element in app.markdown if "Signed in as" in str(element.value))
    assert "\\[click me\\](https://evil.example) \\*\\*boss\\*\\*" in line


def test_bob_has_no_stop_for_alices_run_and_alice_stops_it(provider, settings):
    run = create_run(TINY, settings, state=RunState.QUEUED, owner=ALICE)
    bob = page(TRAIN, auth=auth_section(provider), user=BOB_USER, run=run.run_id).run()

    assert_no_exception(bob)
    assert "train_stop" not in button_keys(bob)
    assert "Only Alice Liddell or an operator can stop this run." in texts(bob)

    alice = page(TRAIN, auth=auth_section(provider), user=ALICE_USER, run=run.run_id).run()
    alice.button(key="train_stop").click().run()

    assert_no_exception(alice)
    assert load_run(run.run_id, settings).state is RunState.STOPPED


def test_a_stop_replayed_by_someone_else_stops_nothing(provider, settings):
    run = make_run(settings, state=RunState.RUNNING, owner=ALICE)  # its pid is this process: alive
    app = page(TRAIN, auth=auth_section(provider), user=ALICE_USER, run=run.run_id).run()
    stop = app.button(key="train_stop")

    app.user = BOB_USER  # the same click, arriving as Bob
    stop.click().run()

    assert_no_exception(app)
    assert not (run.path / STOP_FILE).exists()
    assert load_run(run.run_id, settings).state is RunState.RUNNING
    assert "Only Alice Liddell or an operator can stop this run." in texts(app)


def test_a_forged_delete_of_someone_elses_run_is_refused_in_words(provider, settings):
    run = make_run(settings, owner=ALICE)
    app = page(RUNS, auth=auth_section(provider), user=BOB_USER, run=run.run_id).run()
    assert_no_exception(app)
    assert "runs_delete" not in button_keys(app)

    app.session_state["runs_deleting"] = run.run_id  # as if Delete… had been pressed
    app.run()
    next(button for button in app.button if button.label == "Delete").click().run()

    assert_no_exception(app)
    assert errors(app) == [f"Cannot delete this run: only Alice Liddell, who started run {run.run_id}, or an "
                           "operator may delete it."]
    assert run.path.is_dir()


def test_the_owner_and_an_operator_delete_runs(provider, settings, monkeypatch):
    alices, bobs = make_run(settings, owner=ALICE), make_run(settings, owner=BOB)
    alice = page(RUNS, auth=auth_section(provider), user=ALICE_USER, run=alices.run_id).run()
    alice.button(key="runs_delete").click().run()
    next(button for button in alice.button if button.label == "Delete").click().run()
    assert_no_exception(alice)
    assert not alices.path.exists()

    monkeypatch.setenv(OPERATORS_ENV, "carol@example.org")
    carol = {**BOB_USER, "sub": "carol", "email": "carol@example.org", "name": "Carol"}
    operator = page(RUNS, auth=auth_section(provider), user=carol, run=bobs.run_id).run()
    operator.button(key="runs_delete").click().run()
    next(button for button in operator.button if button.label == "Delete").click().run()

    assert_no_exception(operator)
    assert list_runs(settings) == []


@pytest.mark.parametrize("change, words", [
    ({"cookie_secret": None}, "has no cookie_secret"),
    ({"redirect_uri": "http://127.0.0.1:8501/"}, "does not end with /oauth2callback"),
])
def test_a_broken_auth_section_is_one_sentence_and_nobody_acts(provider, settings, change, words):
    app = page(TRAIN, auth=auth_section(provider, **change), user=ALICE_USER).run()

    assert_no_exception(app)
    (problem, *_) = errors(app)
    assert problem.startswith("Sign-in is configured but [auth]") and words in problem, problem
    assert "Traceback" not in problem and problem.endswith(".")
    assert "access_sign_in" not in button_keys(app)
    next(button for button in app.button if button.label == "Train").click().run()
    assert any(error.startswith("Cannot train: only signed-in users") for error in errors(app)), errors(app)
    assert list_runs(settings) == []  # never "everyone is the operator"


def test_a_provider_that_does_not_answer_is_said_once_on_the_page_and_once_in_the_log(settings, caplog):
    url = closed_port_url()
    app = page(TRAIN, auth=auth_section(url))

    with caplog.at_level(logging.ERROR, logger="hybrid_lab.access"):
        app.run()
        app.run()
        page(RUNS, auth=auth_section(url)).run()

    assert_no_exception(app)
    (problem,) = errors(app)
    assert problem.startswith("Sign-in is configured but its provider does not answer at"), problem
    assert url in problem
    assert "access_sign_in" not in button_keys(app)
    logged = [record.getMessage() for record in caplog.records if "does not answer" in record.getMessage()]
    assert len(logged) == 1 and url in logged[0]


def test_a_secrets_file_that_cannot_be_read_is_not_taken_for_no_sign_in(tmp_path, handshake):
    broken = tmp_path / "secrets.toml"
    broken.write_text("[auth\nredirect_uri = ")
    before = streamlit_config.get_option("secrets.files")
    streamlit_config.set_option("secrets.files", [str(broken)])
    try:
        app = page(TRAIN).run()
    finally:
        streamlit_config.set_option("secrets.files", before)

    assert_no_exception(app)
    (problem,) = errors(app)
    assert problem.startswith(f"The secrets file {broken} cannot be read"), problem
    assert SERVER_FILES not in app.selectbox(key="form_source").options  # not the person at the machine


def test_when_streamlit_refuses_to_start_sign_in_it_is_one_sentence(provider):
    # AppTest's secrets reach the page but not Streamlit's own sign-in, which reads the secrets files: st.login
    # raises as it does on a server whose [auth] it cannot use.
    app = page(TRAIN, auth=auth_section(provider)).run()

    app.button(key="access_sign_in").click().run()

    assert_no_exception(app)
    (problem,) = errors(app)
    assert problem.startswith("Sign-in could not start:"), problem
    assert "\n" not in problem and problem.endswith(".")
