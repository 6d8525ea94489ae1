"""Behind a reverse proxy, in Debian's Chromium: the README's old advice, tried as a new user would.

The app listens on 127.0.0.1, as `make run` starts it; a small HTTP and WebSocket proxy (tests/reverse_proxy.py)
on 127.0.0.2 forwards to it, keeping the Host header and adding X-Forwarded-For, as a proxy in front of the app
is configured. Every request the app sees comes from loopback, which used to make every visitor "the person at
the machine": offered the server's files, all sharing one queue limit. Through the proxy a visitor is a guest:
no "my own files" source and no data-path box, a path in a link is left out before anything looks at it, two
browsers have a queue limit each, and the TensorBoard page works. Opened at 127.0.0.1 itself, the same server
still offers its files to the person at the machine.
"""

from __future__ import annotations

import os
import tempfile
from urllib.parse import quote, urlparse

import pytest

from core.store import list_runs
from tests.browser_access import (LONG_RUN_LIMITS, WAIT_MS, cli_run, keyed_button, press_train,
                                  stop_accepted, train_page, wait_for_run)
from tests.browser_support import IDLE, SIDEBAR, offered_sources, running_app
from tests.reverse_proxy import ReverseProxy
from ui.identity import GUEST_LINE

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

# A guest may train on data of its own (an upload), never on files of the server ("my own files").
GUEST_SOURCES = ["auto (full if available)", "keras (full download)", "offline sample", "uploaded (your own data)"]
SERVER_FILES = "my own files"
NOTICE = '[data-testid="stAlertContentWarning"]'
LIMIT_ENV = {**LONG_RUN_LIMITS, "HYBRID_LAB_GUEST_QUEUE_LIMIT": "1", "HYBRID_LAB_WORKERS": "1"}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def command_line_run(runs_dir) -> str:
    """A run of the command line's, made before the app starts, so that TensorBoard has something to show."""
    return cli_run(runs_dir)


@pytest.fixture(scope="module")
def app_url(runs_dir, command_line_run):
    """The app as `make run` serves it, on 127.0.0.1 (one queued run per guest, one worker)."""
    with running_app(runs_dir, env=LIMIT_ENV) as url:
        yield url


@pytest.fixture(scope="module")
def proxied(app_url):
    """The address of the reverse proxy on 127.0.0.2 in front of the app."""
    proxy = ReverseProxy(urlparse(app_url).port).start()
    try:
        yield proxy.url
    finally:
        proxy.stop()


@pytest.fixture
def new_page(browser):
    """Pages of browser contexts of their own (one visitor each), closed after the test."""
    contexts = []

    def open_page(url: str):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        page.goto(url)
        page.locator(IDLE).wait_for()
        return page

    yield open_page
    for context in contexts:
        context.close()


def test_through_the_proxy_a_visitor_is_a_guest_offered_none_of_the_servers_files(new_page, proxied, app_url):
    page = new_page(proxied + "/Train")
    expect(page.get_by_text(GUEST_LINE)).to_be_visible(timeout=WAIT_MS)
    assert offered_sources(page) == GUEST_SOURCES

    at_the_machine = new_page(app_url + "/Train")  # the same server, opened at 127.0.0.1 itself
    assert offered_sources(at_the_machine) == GUEST_SOURCES[:3] + [SERVER_FILES] + GUEST_SOURCES[3:]
    assert at_the_machine.get_by_text(GUEST_LINE).count() == 0


def test_a_path_in_a_link_through_the_proxy_is_left_out_before_anything_looks_at_it(new_page, proxied):
    folder = tempfile.mkdtemp(prefix="hl-")  # short: the notice shows a link's text up to 60 characters
    fifo, missing = os.path.join(folder, "a.npz"), os.path.join(folder, "b.npz")
    os.mkfifo(fifo)  # opened for reading, it would wait for a writer for ever
    notices = []
    for path in (fifo, missing):
        page = new_page(f"{proxied}/Train?source=path&data_path={quote(path)}")
        notice = page.locator(NOTICE)
        expect(notice).to_be_visible(timeout=WAIT_MS)
        notices.append(notice.inner_text().replace(path, "PATH"))
        expect(page.locator(SIDEBAR).get_by_role("combobox", name="Source")).to_have_value(GUEST_SOURCES[0])
        assert page.get_by_label("Data path").count() == 0

    # A FIFO and nothing at all get the same words: what is at the path was never looked at.
    assert notices[0] == notices[1], notices
    assert f"Source “{SERVER_FILES}” cannot be chosen on this page" in notices[0], notices[0]
    assert "“data_path=PATH” was left out" in notices[0], notices[0]
    os.remove(fifo)
    os.rmdir(folder)


def test_two_browsers_through_the_proxy_have_a_queue_limit_each(new_page, proxied, runs_dir):
    first, second = new_page(train_page(proxied)), new_page(train_page(proxied))
    first_run = press_train(first)
    first.locator(IDLE).wait_for()
    first.get_by_role("button", name="Train", exact=True).click()  # a second run: over this guest's limit
    expect(first.get_by_text("Cannot train: you already have 1 run waiting or training")).to_be_visible(
        timeout=WAIT_MS)

    second_run = press_train(second)  # the other browser has a limit of its own

    owners = {run.run_id: run.status.owner for run in list_runs(runs_dir) if run.state.active}
    assert set(owners) == {first_run, second_run} and len(set(owners.values())) == 2, owners
    for page, run_id in ((second, second_run), (first, first_run)):  # each guest stops its own run
        keyed_button(page, "train_stop").click()
        run = wait_for_run(run_id, runs_dir, stop_accepted, page)
        assert stop_accepted(run), run.state


def test_the_tensorboard_page_works_through_the_proxy(new_page, proxied, runs_dir, command_line_run):
    page = new_page(proxied + "/TensorBoard")
    page.get_by_role("heading", name="TensorBoard", exact=True).wait_for()
    page.frame_locator('[data-testid="stIFrame"]').get_by_text(command_line_run).first.wait_for()

    assert str(runs_dir) not in page.content()  # the server's path to its runs is the operator's
