"""Tests for core.access: how a request is served (three ways), who is asking, and every check that decides what
they may do, called the way a crafted request would call them. Run folders are real ones in tmp_path."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from core import access, queue, service, sign_in
from core.access import (
    FORWARDING_HEADERS, OPERATOR, OPERATORS_ENV, PermissionRefused, Role, ServeMode, identify, member, new_guest,
    reader, serve_mode,
)
from core.records import RunState, STOP_FILE
from core.store import create_run, load_run
from tests.factories import TINY, make_run

ISSUER = "https://id.example.org/realms/lab"
ALICE_CLAIMS = {"iss": ISSUER, "sub": "alice", "email": "alice@example.org", "name": "Alice Liddell"}
BOB_CLAIMS = {"iss": ISSUER, "sub": "bob", "email": "bob@example.org", "name": "Bob"}
NOBODY = frozenset()  # HYBRID_LAB_OPERATORS empty
ALICE, BOB = member(ALICE_CLAIMS, NOBODY), member(BOB_CLAIMS, NOBODY)
ADMIN = member({"iss": ISSUER, "sub": "admin", "email": "Admin@Example.org"}, frozenset({"admin@example.org"}))
AT_THE_MACHINE = {"host": "127.0.0.1:8501", "origin": "http://127.0.0.1:8501"}
COMPLETE_AUTH = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "s" * 32,
                 "client_id": "hybrid-lab", "client_secret": "secret",
                 "server_metadata_url": "https://id.example.org/realms/lab/.well-known/openid-configuration"}


@pytest.fixture(autouse=True)
def no_operators_listed(monkeypatch):
    monkeypatch.delenv(OPERATORS_ENV, raising=False)


# --- how the app is served -----------------------------------------------------------------------------


@pytest.mark.parametrize("address, headers", [
    ("127.0.0.1", {}),
    ("127.0.0.1", AT_THE_MACHINE),
    ("localhost", {"Host": "localhost:8501", "Origin": "http://localhost:8501"}),
    ("::1", {"host": "[::1]:8501"}),
    ("127.0.0.1", {"host": "LOCALHOST:8501", "origin": "null"}),
])
def test_on_loopback_with_no_sign_of_a_proxy_the_person_at_the_machine_is_served(address, headers):
    assert serve_mode(address, False, headers) is ServeMode.PERSONAL


@pytest.mark.parametrize("header", FORWARDING_HEADERS)
def test_any_forwarding_header_makes_a_loopback_request_a_guests(header):
    # A proxy on this machine (the README's own advice) makes every visitor look local: the header gives it away.
    assert serve_mode("127.0.0.1", False, {**AT_THE_MACHINE, header.title(): "203.0.113.9"}) is ServeMode.GUESTS
    assert serve_mode("127.0.0.1", False, {**AT_THE_MACHINE, header.upper(): "x"}) is ServeMode.GUESTS


@pytest.mark.parametrize("headers", [
    {"host": "lab.example.org"},
    {"host": "127.0.0.2:8501"},  # 127/8 beyond 127.0.0.1 is how a proxy (and the tests) play another machine
    {"host": "127.0.0.1:8501", "origin": "https://lab.example.org"},
    {"host": "127.0.0.1:8501", "origin": "http://[not an address"},
    {"host": "[::1"},
])
def test_a_host_or_origin_beyond_loopback_makes_a_loopback_request_a_guests(headers):
    assert serve_mode("127.0.0.1", False, headers) is ServeMode.GUESTS


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.168.1.20", "", None])
def test_listening_beyond_loopback_serves_guests(address):
    assert serve_mode(address, False, AT_THE_MACHINE) is ServeMode.GUESTS


@pytest.mark.parametrize("address, headers", [("127.0.0.1", {}), ("0.0.0.0", {"X-Forwarded-For": "1.2.3.4"})])
def test_with_auth_configured_it_is_sign_in_wherever_it_listens(address, headers):
    assert serve_mode(address, True, headers) is ServeMode.SIGN_IN


# --- who is asking ---------------------------------------------------------------------------------------


def test_in_personal_mode_the_person_at_the_machine_is_the_operator_whatever_else_is_said():
    assert identify(ServeMode.PERSONAL) is OPERATOR
    assert identify(ServeMode.PERSONAL, claims=BOB_CLAIMS, guest=new_guest()) is OPERATOR
    assert OPERATOR.is_operator and OPERATOR.key == "local" and OPERATOR.name == "operator"


def test_each_guest_is_its_session_and_nothing_it_sends_chooses_its_key():
    first, second = new_guest(), new_guest()

    assert identify(ServeMode.GUESTS, guest=first) is first
    assert first.key != second.key and first.key.startswith("guest:") and len(first.key) == len("guest:") + 16
    assert first.role is Role.GUEST and not first.is_operator and first.may_act
    with pytest.raises(ValueError, match="guest"):  # no session guest: never someone else instead
        identify(ServeMode.GUESTS)
    with pytest.raises(ValueError, match="guest"):
        identify(ServeMode.GUESTS, guest=OPERATOR)


def test_in_sign_in_mode_nobody_acts_before_signing_in_nor_while_auth_is_broken():
    for broken_or_not_signed_in in (identify(ServeMode.SIGN_IN), identify(ServeMode.SIGN_IN, claims=None),
                                    identify(ServeMode.SIGN_IN, claims=ALICE_CLAIMS, auth_broken=True),
                                    identify(ServeMode.SIGN_IN, claims=ALICE_CLAIMS | {"sub": "admin"},
                                             auth_broken=True, operators=frozenset({"admin"}))):
        assert broken_or_not_signed_in == reader()
        assert not broken_or_not_signed_in.may_act and not broken_or_not_signed_in.is_operator


def test_a_signed_in_user_is_their_issuer_and_subject_shown_by_name():
    alice = identify(ServeMode.SIGN_IN, claims=ALICE_CLAIMS, operators=NOBODY)

    assert alice.key == f"oidc:{ISSUER}#alice" and alice.name == "Alice Liddell"
    assert alice.role is Role.MEMBER and alice.signed_in and alice.may_act
    # Another provider's "alice" is another person.
    assert member(ALICE_CLAIMS | {"iss": "https://accounts.google.com"}, NOBODY).key != alice.key
    assert member({"iss": ISSUER, "sub": "s1", "email": "e@x.org"}, NOBODY).name == "e@x.org"
    assert member({"iss": ISSUER, "sub": "s1"}, NOBODY).name == "s1"


def test_claims_without_a_subject_name_nobody():
    with pytest.raises(PermissionRefused, match="no subject"):
        identify(ServeMode.SIGN_IN, claims={"iss": ISSUER, "email": "alice@example.org"})


def test_operators_are_listed_by_email_or_subject(monkeypatch):
    monkeypatch.setenv(OPERATORS_ENV, "ADMIN@example.org,  carol\n")

    assert access.operators_listed() == {"admin@example.org", "carol"}
    assert member({"iss": ISSUER, "sub": "x", "email": "admin@EXAMPLE.org"}).is_operator
    assert member({"iss": ISSUER, "sub": "Carol"}).is_operator
    assert not member(ALICE_CLAIMS).is_operator


def test_an_email_the_provider_says_is_unverified_makes_nobody_an_operator():
    listed = frozenset({"admin@example.org"})
    claims = {"iss": ISSUER, "sub": "mallory", "email": "admin@example.org"}

    assert not member(claims | {"email_verified": False}, listed).is_operator
    assert member(claims | {"email_verified": True}, listed).is_operator
    assert member(claims, listed).is_operator  # providers that do not say (Entra ID, the mock) are believed


# --- what [auth] lacks, and a provider that does not answer --------------------------------------------


def test_a_complete_auth_section_has_no_problem_and_no_section_is_not_one():
    assert sign_in.auth_problem(COMPLETE_AUTH) is None
    assert sign_in.auth_problem(None) is None


@pytest.mark.parametrize("change, words", [
    ({"cookie_secret": None}, ["has no cookie_secret", "restart the app"]),
    ({"cookie_secret": " ", "client_id": ""}, ["has no cookie_secret, client_id;"]),
    ({"server_metadata_url": "keycloak.example.org"}, ["server_metadata_url", "not an http(s) address"]),
    ({"redirect_uri": "http://127.0.0.1:8501/"}, ["redirect_uri", "does not end with /oauth2callback"]),
])
def test_what_auth_lacks_is_one_sentence_naming_it(change, words):
    section = {key: value for key, value in (COMPLETE_AUTH | change).items() if value is not None}

    problem = sign_in.auth_problem(section)

    assert problem.startswith("sign-in is configured but [auth]")
    assert all(word in problem for word in words), problem
    assert "\n" not in problem


def test_a_provider_that_does_not_answer_is_one_sentence_naming_its_address():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    url = f"http://127.0.0.1:{port}/.well-known/openid-configuration"  # nothing listens there now

    problem = sign_in.provider_problem(url, timeout=2)

    assert problem.startswith(f"sign-in is configured but its provider does not answer at {url}"), problem
    assert "Connection refused" in problem and "\n" not in problem


def serve_once(body: bytes):
    """A one-page HTTP server on loopback answering `body` to everything; returns (server, url)."""
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/.well-known/openid-configuration"


@pytest.mark.parametrize("body", [b"<html>a login page</html>", b'{"issuer": "x"}', b"[1, 2]"])
def test_an_address_that_is_not_an_openid_configuration_is_said(body):
    server, url = serve_once(body)
    try:
        problem = sign_in.provider_problem(url, timeout=2)
    finally:
        server.shutdown()

    assert problem is not None and url in problem, problem
    assert "OpenID Connect configuration" in problem or "does not answer" in problem


def test_a_provider_that_answers_has_no_problem():
    mock = pytest.importorskip("oidc_provider_mock")
    with mock.run_server_in_thread(port=0) as server:
        url = f"http://127.0.0.1:{server.server_port}/.well-known/openid-configuration"

        assert sign_in.provider_problem(url, timeout=5) is None


# --- the checks, called as a crafted request would call them ------------------------------------------------


def test_bob_cannot_stop_alices_run_and_is_told_who_can(tmp_path):
    run = create_run(TINY, tmp_path, state=RunState.QUEUED, owner=ALICE)

    assert not access.may_stop(BOB, run)
    with pytest.raises(PermissionRefused) as refused:
        service.stop(load_run(run.run_id, tmp_path), BOB)  # a ?run= and a replayed Stop lead here

    assert str(refused.value) == f"only Alice Liddell, who started run {run.run_id}, or an operator may stop it"
    assert load_run(run.run_id, tmp_path).state is RunState.QUEUED
    assert queue.queued_ids(tmp_path) == [run.run_id]


def test_bob_cannot_stop_alices_running_run_either(tmp_path):
    run = make_run(tmp_path, state=RunState.RUNNING, owner=ALICE)

    with pytest.raises(PermissionRefused, match="only Alice Liddell"):
        service.stop(load_run(run.run_id, tmp_path), BOB)

    assert not (run.path / STOP_FILE).exists()


@pytest.mark.parametrize("who", [ALICE, ADMIN, OPERATOR], ids=["the-owner", "a-listed-operator", "the-operator"])
def test_the_owner_and_operators_stop_a_run(tmp_path, who):
    run = create_run(TINY, tmp_path, state=RunState.QUEUED, owner=ALICE)

    assert access.may_stop(who, run)
    service.stop(load_run(run.run_id, tmp_path), who)

    assert load_run(run.run_id, tmp_path).state is RunState.STOPPED


def test_a_guest_stops_only_what_its_own_session_started(tmp_path):
    guest, other = new_guest(), new_guest()
    mine = create_run(TINY, tmp_path, state=RunState.QUEUED, owner=guest)
    theirs = create_run(TINY, tmp_path, state=RunState.QUEUED, owner=other)
    operators = create_run(TINY, tmp_path, state=RunState.QUEUED)  # the command line's

    with pytest.raises(PermissionRefused, match=f"only {other.name}, who started run {theirs.run_id}"):
        service.stop(load_run(theirs.run_id, tmp_path), guest)
    with pytest.raises(PermissionRefused, match=f"only an operator may stop run {operators.run_id}"):
        service.stop(load_run(operators.run_id, tmp_path), guest)
    service.stop(load_run(mine.run_id, tmp_path), guest)

    assert [load_run(run.run_id, tmp_path).state for run in (mine, theirs, operators)] == [
        RunState.STOPPED, RunState.QUEUED, RunState.QUEUED]


def test_a_reader_stops_nothing_and_is_told_to_sign_in(tmp_path):
    run = create_run(TINY, tmp_path, state=RunState.QUEUED, owner=ALICE)
    nobody = reader()

    with pytest.raises(PermissionRefused, match="^sign in to stop runs; only Alice Liddell"):
        access.check_stop(nobody, run)
    # A reader's key could never be an owner's, but even a run recorded under it is not theirs to stop.
    assert not access.may_stop(nobody, make_run(tmp_path, owner=nobody))


@pytest.mark.parametrize("who, owner, allowed", [
    (ALICE, ALICE, True), (BOB, ALICE, False), (ADMIN, ALICE, True), (OPERATOR, ALICE, True),
    (ALICE, OPERATOR, False), (reader(), ALICE, False),
], ids=["owner", "another-member", "listed-operator", "the-operator", "members-and-the-cli", "reader"])
def test_who_may_delete_a_members_run(tmp_path, who, owner, allowed):
    run = make_run(tmp_path, owner=owner)

    assert access.may_delete(who, run) is allowed
    if allowed:
        access.check_delete(who, run)
    else:
        with pytest.raises(PermissionRefused):
            access.check_delete(who, run)


def test_a_guest_deletes_nothing_not_even_its_own_run(tmp_path):
    guest = new_guest()
    run = make_run(tmp_path, owner=guest)

    assert access.may_stop(guest, make_run(tmp_path, state=RunState.RUNNING, owner=guest))
    assert not access.may_delete(guest, run)
    with pytest.raises(PermissionRefused, match="^guests cannot delete runs, not even their own; ask an operator$"):
        access.check_delete(guest, run)


def test_a_damaged_run_belongs_to_the_operator(tmp_path):
    run = make_run(tmp_path, owner=ALICE)
    (run.path / "status.json").write_text("not json")
    damaged = load_run(run.run_id, tmp_path)

    assert damaged.damaged and access.owner_of(damaged.status) == OPERATOR.key
    assert not access.may_delete(ALICE, damaged) and access.may_delete(OPERATOR, damaged)


def test_only_those_who_may_act_train():
    access.check_train(ALICE)
    access.check_train(new_guest())
    access.check_train(OPERATOR)
    with pytest.raises(PermissionRefused, match="only signed-in users train on this server"):
        access.check_train(reader())


def test_only_operators_use_the_servers_files():
    access.check_files(OPERATOR)
    access.check_files(ADMIN)
    for visitor in (ALICE, new_guest(), reader()):
        with pytest.raises(PermissionRefused, match="does not read its own files"):
            access.check_files(visitor)
