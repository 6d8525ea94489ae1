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
