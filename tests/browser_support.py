"""Shared pieces of the browser tests: the app server and Chromium from bench/app_server.py, skipping a test
cleanly where Debian's Chromium is not installed.

Use from a test module like this:

    def test_something(browser, app_url):
        page = browser.new_page()
        ...
"""

from __future__ import annotations

import contextlib

import pytest

from bench.app_server import ChromiumMissing, free_port, running_app, start_app, stop_app  # noqa: F401
from bench.app_server import launch_chromium as _launch_chromium


def launch_chromium(playwright):
    """Launch Debian's headless Chromium through Playwright; skips the test when it is not installed."""
    try:
        return _launch_chromium(playwright)
    except ChromiumMissing as error:
        pytest.skip(str(error))


@contextlib.contextmanager
def chromium_browser():
    """Debian's headless Chromium for the duration of a with-block (skips the test when it is missing)."""
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'  # the page's script has run to the end


def open_options(page, label: str, within: str = "body"):
    """Open a selectbox's list of options; returns the combobox.

    Streamlit 1.67's selectbox is a react-aria combobox: a click on its text field only focuses it, and a click
    on its "Open" button is lost while the sidebar scrolls it into view. The keyboard is deterministic:
    ArrowDown in the focused field opens the list.
    """
    combobox = page.locator(within).get_by_role("combobox", name=label, exact=True)
    combobox.click()
    combobox.press("ArrowDown")
    return combobox


def choose(page, label: str, option: str, within: str = "body") -> None:
    """Pick an option of a selectbox (in the sidebar: within='[data-testid="stSidebar"]') and wait for the rerun."""
    combobox = open_options(page, label, within)
    page.get_by_role("option", name=option, exact=True).click()
    page.locator(IDLE).wait_for()
    assert combobox.input_value() == option


def type_into(page, label: str, text: str, within: str = "body") -> None:
    """Type into a text or number input; Enter commits it (Streamlit reruns the page)."""
    field = page.locator(within).get_by_label(label, exact=True)
    field.fill(text)
    field.press("Enter")
    page.locator(IDLE).wait_for()


SIDEBAR = '[data-testid="stSidebar"]'
