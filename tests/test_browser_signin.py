"""Sign-in, owners and operators in Debian's Chromium against `streamlit run app.py` with `[auth]` configured.

A real OpenID Connect provider (oidc-provider-mock) runs on loopback with three users; the app's secrets file
points its `[auth]` at it, and HYBRID_LAB_OPERATORS names Carol. Alice and Bob sign in from two browser
contexts (two people, two sets of cookies). Alice trains; Bob sees her run under her name but has no Stop or
Delete for it, and her Stop click, replayed on his own socket, stops nothing while his page says who may;
Alice stops it; Carol, an operator, deletes it; signing out returns to the not-signed-in view.
"""

from __future__ import annotations

import pytest

from core.access import OPERATORS_ENV
from core.records import RunState
from tests.browser_access import (LONG_RUN_LIMITS, STOP, STOP_WAIT_S, WAIT_MS, StreamRelay, keyed_button, press_train,
                                  replayed_stop_stops_nothing, run_actions_drawn, runs_table, train_page, wait_for_run)
from tests.browser_support import IDLE, free_port, running_app
from ui.identity import NOT_SIGNED_IN

sync_api = pytest.importorskip("playwright.sync_api")
oidc_provider_mock = pytest.importorskip("oidc_provider_mock")
expect = sync_api.expect

USERS = {"alice": ("alice@example.org", "Alice Liddell"), "bob": ("bob@example.org", "Bob"),
         "carol": ("carol@example.org", "Carol")}
OPERATOR_EMAIL = "carol@example.org"
ONLY_ALICE = "Only Alice Liddell or an operator can stop this run."  # where Stop is for those who may


@pytest.fixture(scope="module")
def provider():
    """The OpenID Connect provider on loopback, with a button per user on its sign-in page; its address."""
    users = [oidc_provider_mock.User(sub=sub, claims={"email": email, "name": name})
             for sub, (email, name) in USERS.items()]
    with oidc_provider_mock.run_server_in_thread(port=0, user_claims=users) as server:
        yield f"http://127.0.0.1:{server.server_port}"


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def app_url(provider, runs_dir, tmp_path_factory):
    """The app with `[auth]` pointing at the provider, as an operator configures it (see the README)."""
    port = free_port()
    secrets = tmp_path_factory.mktemp("secrets") / "secrets.toml"
    secrets.write_text(f"""[auth]
redirect_uri = "http://127.0.0.1:{port}/oauth2callback"
cookie_secret = "a-cookie-secret-for-the-browser-tests"
client_id = "hybrid-lab"
client_secret = "its-secret"
server_metadata_url = "{provider}/.well-known/openid-configuration"
""")
    with running_app(runs_dir, port=port, arguments=("--secrets.files", str(secrets)),
                     env={OPERATORS_ENV: OPERATOR_EMAIL, **LONG_RUN_LIMITS}) as url:
        yield url


def signed_in(browser, app_url: str, who: str):
    """A browser context of its own (one person's cookies), signed in as `who`; returns (context, page)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(WAIT_MS)
    relay = StreamRelay(context)
    page = context.new_page()
    page.goto(app_url + "/Runs")
    expect(page.get_by_text(NOT_SIGNED_IN)).to_be_visible(timeout=WAIT_MS)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name=who, exact=True).click()  # the provider's page: one button per user
    page.wait_for_url(f"{app_url}/**")
    expect(page.get_by_text(f"Signed in as {USERS[who][1]}")).to_be_visible(timeout=WAIT_MS)
    return context, page, relay


def open_page(page, url: str):
    page.goto(url)
    page.locator(IDLE).wait_for()
    return page


@pytest.fixture(scope="module")
def alice(browser, app_url):
    """Alice, signed in, on the Train page of the long run she has just started; (page, relay, run id)."""
    context, page, relay = signed_in(browser, app_url, "alice")
    open_page(page, train_page(app_url))
    run_id = press_train(page)
    yield page, relay, run_id
    context.close()


@pytest.fixture(scope="module")
def bob(browser, app_url):
    context, page, relay = signed_in(browser, app_url, "bob")
    yield page, relay
    context.close()


def test_bob_sees_alices_run_under_her_name_with_no_stop_and_no_delete(alice, bob, app_url):
    alice_page, _, run_id = alice
    bob_page, _ = bob
    open_page(bob_page, f"{app_url}/Runs?run={run_id}")
    run_actions_drawn(bob_page, run_id)

    (row,) = runs_table(bob_page)
    assert row["Owner"] == "Alice Liddell" and row["Status"] in ("queued", "running"), row
    assert bob_page.get_by_role("button", name="Delete…").count() == 0
    open_page(alice_page, f"{app_url}/Runs?run={run_id}")  # her own: Delete… is there (greyed while it trains)
    expect(alice_page.get_by_role("button", name="Delete…")).to_be_disabled(timeout=WAIT_MS)

    open_page(bob_page, f"{app_url}/Train?run={run_id}")
    expect(bob_page.get_by_text(ONLY_ALICE)).to_be_visible(timeout=WAIT_MS)
    assert keyed_button(bob_page, STOP).count() == 0


def test_alices_stop_click_replayed_by_bob_stops_nothing_and_his_page_says_who_may(alice, bob, app_url, runs_dir):
    alice_page, alice_relay, run_id = alice
    bob_page, bob_relay = bob
    open_page(alice_page, f"{app_url}/Train?run={run_id}")
    open_page(bob_page, f"{app_url}/Train?run={run_id}")

    replayed_stop_stops_nothing(alice_page, alice_relay, bob_page, bob_relay, run_id, runs_dir, ONLY_ALICE)


def test_alice_stops_her_run_and_an_operator_deletes_it(alice, browser, app_url, runs_dir):
    alice_page, _, run_id = alice
    open_page(alice_page, f"{app_url}/Train?run={run_id}")
    keyed_button(alice_page, STOP).click()
    run = wait_for_run(run_id, runs_dir, lambda run: run.state is RunState.STOPPED, alice_page,
                       timeout_s=STOP_WAIT_S)
    assert run.state is RunState.STOPPED, run.state

    context, carol, _ = signed_in(browser, app_url, "carol")
    expect(carol.get_by_text("Signed in as Carol · operator")).to_be_visible(timeout=WAIT_MS)
    open_page(carol, f"{app_url}/Runs?run={run_id}")
    carol.get_by_role("button", name="Delete…").click()
    carol.get_by_role("dialog").get_by_role("button", name="Delete", exact=True).click()

    # The Runs page's first look at a run loads its model, which imports TensorFlow into the server: on a busy
    # machine that run of the page can take minutes, and the Delete click is acted on after it.
    assert wait_for_run(run_id, runs_dir, lambda run: run is None, carol, timeout_s=STOP_WAIT_S) is None
    expect(carol.get_by_text(f"No runs yet in {runs_dir}")).to_be_visible(timeout=WAIT_MS)  # an operator's
    context.close()


def test_signing_out_returns_to_the_not_signed_in_view(alice, app_url, runs_dir):
    alice_page, _, _ = alice
    open_page(alice_page, f"{app_url}/Train")
    alice_page.get_by_role("button", name="Sign out").click()
    alice_page.get_by_role("button", name="End session").click()  # the provider's own sign-out page

    alice_page.wait_for_url(f"{app_url}/**")
    expect(alice_page.get_by_text(NOT_SIGNED_IN)).to_be_visible(timeout=WAIT_MS)
    expect(alice_page.get_by_role("button", name="Sign in")).to_be_visible(timeout=WAIT_MS)
    assert alice_page.get_by_text("Signed in as").count() == 0
    open_page(alice_page, f"{app_url}/Runs")
    expect(alice_page.get_by_text(NOT_SIGNED_IN)).to_be_visible(timeout=WAIT_MS)
    assert str(runs_dir) not in alice_page.content()  # where the server keeps its runs is the operators' business
