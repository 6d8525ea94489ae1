"""Guests, in Debian's Chromium: the app served to others with no sign-in (`--server.address 0.0.0.0`, opened at
http://127.0.0.2:PORT, another origin than the machine's own) and two browsers on it.

Each browser is a guest of its own. One guest trains; the other sees the run under the first's guest name but
has no Stop and no Delete for it, and the first guest's Stop click, replayed on the other's socket, stops
nothing while the other's page says who may. No guest deletes anything, not even its own run. A run the
command line made before is the operator's: no guest can delete it, and nothing in its folder changes. The
first guest stops its own run.
"""

from __future__ import annotations

import re

import pytest

from core.records import RunState
from core.store import load_run
from tests.browser_access import (LONG_RUN_LIMITS, STOP, WAIT_MS, StreamRelay, cli_run, folder_snapshot, keyed_button,
                                  press_train, replayed_stop_stops_nothing, run_actions_drawn, runs_table, stop_accepted,
                                  train_page, wait_for_run)
from tests.browser_support import IDLE, SIDEBAR, running_app
from ui.identity import GUEST_LINE

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

ROW_MARKER_X, HEADER_HEIGHT, ROW_HEIGHT = 18, 35, 35  # px: where Streamlit's grid draws its first row's tick box
ONLY_GUEST = re.compile(r"^Only guest [0-9a-f]{4} or an operator can stop this run\.$")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def command_line_run(runs_dir) -> tuple[str, dict]:
    """A run the command line made before the app served anyone: its id and what its folder holds."""
    run_id = cli_run(runs_dir)
    return run_id, folder_snapshot(load_run(run_id, runs_dir).path)


@pytest.fixture(scope="module")
def app_url(runs_dir, command_line_run):
    with running_app(runs_dir, address="0.0.0.0", visit_host="127.0.0.2", env=LONG_RUN_LIMITS) as url:
        yield url


def guest(browser, app_url: str):
    """A browser of its own on the Train page, its WebSocket relayed; (context, page, relay)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(WAIT_MS)
    relay = StreamRelay(context)
    page = context.new_page()
    page.goto(train_page(app_url))
    page.locator(IDLE).wait_for()
    expect(page.get_by_text(GUEST_LINE)).to_be_visible(timeout=WAIT_MS)
    return context, page, relay


@pytest.fixture(scope="module")
def first(browser, app_url):
    """The first guest, following the long run it has just started: (page, relay, run id)."""
    context, page, relay = guest(browser, app_url)
    run_id = press_train(page)
    yield page, relay, run_id
    context.close()


@pytest.fixture(scope="module")
def second(browser, app_url):
    context, page, relay = guest(browser, app_url)
    yield page, relay
    context.close()


def open_page(page, url: str):
    page.goto(url)
    page.locator(IDLE).wait_for()


def test_a_guest_sees_anothers_run_with_no_stop_and_no_delete(first, second, app_url, command_line_run):
    _, _, run_id = first
    page, _ = second
    open_page(page, f"{app_url}/Train?run={run_id}")
    expect(page.get_by_text(ONLY_GUEST)).to_be_visible(timeout=WAIT_MS)
    assert keyed_button(page, STOP).count() == 0

    open_page(page, f"{app_url}/Runs?run={run_id}")
    run_actions_drawn(page, run_id)
    owners = {row["Status"]: row["Owner"] for row in runs_table(page)}
    assert re.fullmatch(r"guest [0-9a-f]{4}", owners.pop("queued", None) or owners.pop("running")), owners
    assert owners == {"completed": "operator"}  # the command line's run
    assert page.get_by_role("button", name="Delete…").count() == 0


def test_a_stop_click_replayed_by_another_guest_stops_nothing(first, second, app_url, runs_dir):
    first_page, first_relay, run_id = first  # still on the page that started it: its guest is that tab's session
    second_page, second_relay = second
    open_page(second_page, f"{app_url}/Train?run={run_id}")

    replayed_stop_stops_nothing(first_page, first_relay, second_page, second_relay, run_id, runs_dir, ONLY_GUEST)


def test_no_guest_deletes_a_run_not_even_its_own_nor_the_command_lines(first, second, app_url, command_line_run):
    first_page, _, run_id = first
    go_to(first_page, "Runs")  # within the tab's session (a new page load would be a new guest)
    first_page.get_by_role("radio", name="Mine").click()
    expect(first_page.get_by_test_id("stDataFrame").locator("tbody tr")).to_have_count(1, timeout=WAIT_MS)
    first_page.locator(IDLE).wait_for()
    assert [row["Status"] for row in runs_table(first_page)] in (["queued"], ["running"])
    tick_first_row(first_page)
    run_actions_drawn(first_page, run_id)
    assert first_page.get_by_role("button", name="Delete…").count() == 0

    second_page, _ = second
    cli_id, _ = command_line_run
    second_page.goto(f"{app_url}/Runs?run={cli_id}")
    run_actions_drawn(second_page, cli_id)
    assert second_page.get_by_role("button", name="Delete…").count() == 0


def test_a_guest_stops_its_own_run_and_the_command_lines_run_is_untouched(first, runs_dir, command_line_run):
    page, _, run_id = first
    go_to(page, "Train")  # the tab follows its run
    expect(keyed_button(page, STOP)).to_be_enabled(timeout=WAIT_MS)
    keyed_button(page, STOP).click()

    run = wait_for_run(run_id, runs_dir, stop_accepted, page)
    assert stop_accepted(run), run.state
    cli_id, before = command_line_run
    cli = load_run(cli_id, runs_dir)
    assert cli.state is RunState.COMPLETED and folder_snapshot(cli.path) == before


def go_to(page, name: str) -> None:
    """Open another page from the sidebar: Streamlit changes pages within the tab's session."""
    page.locator(SIDEBAR).get_by_role("link", name=name, exact=True).click()
    page.get_by_role("heading", name=name, exact=True).wait_for()


def tick_first_row(page) -> None:
    """Tick the first row of the Runs table (the grid is a canvas: its row marker is clicked where it is drawn)."""
    box = page.get_by_test_id("stDataFrame").locator("canvas").first.bounding_box()
    page.mouse.click(box["x"] + ROW_MARKER_X, box["y"] + HEADER_HEIGHT + ROW_HEIGHT / 2)
    page.locator(IDLE).wait_for()
