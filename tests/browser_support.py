"""Shared pieces of the browser tests: the app server and Chromium from bench/app_server.py, skipping a test
cleanly where Debian's Chromium is not installed.

Use from a test module like this:

    def test_something(browser, app_url):
        page = browser.new_page()
        ...
"""

from __future__ import annotations

import contextlib
import time

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
OPTIONS_MS = 15_000  # an open list shows its options at once; one a rerun closed never will


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


def offered_sources(page, attempts: int = 5) -> list[str]:
    """The choices the Train page's Source select offers (the list is opened, read and closed). A rerun of the
    page closes an open list, so a list closed before its options showed, or read empty, is opened again once
    the page is idle (CI once waited 180 s for the options of a list a rerun had closed)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout  # here, as in choose below

    offered = []
    for _ in range(attempts):
        page.locator(IDLE).wait_for()
        combobox = open_options(page, "Source", within=SIDEBAR)
        listbox = page.locator('[role="listbox"][aria-label="Source"]')
        try:
            listbox.get_by_role("option").first.wait_for(timeout=OPTIONS_MS)
        except PlaywrightTimeout:
            continue
        offered = [text.strip() for text in listbox.get_by_role("option").all_inner_texts()]
        combobox.press("Escape")
        if offered:
            break
    return offered


def type_into(page, label: str, text: str, within: str = "body") -> None:
    """Type into a text or number input; Enter commits it (Streamlit reruns the page)."""
    field = page.locator(within).get_by_label(label, exact=True)
    field.fill(text)
    field.press("Enter")
    page.locator(IDLE).wait_for()


SIDEBAR = '[data-testid="stSidebar"]'


def choose(page, label: str, option: str, within: str = "body", attempts: int = 5,
           attempt_ms: float = 10_000) -> None:
    """Pick an option of a selectbox (in the sidebar: within=SIDEBAR) by typing it; waits until the choice holds.

    Two things make a plain click on the option miss it. Streamlit 1.67's list is virtualised: only the options
    in view are in the page, so one far down a long list may not exist to be clicked. And the list closes whenever a
    scroll container around the selectbox scrolls (react-aria closes a popover on a scroll of its trigger's
    ancestors): a rerun still redrawing the page, or an expander still opening, moves the page under the open
    list and shuts it; and a rerun that adds or removes an element above the selectbox draws it anew, closed.
    So this waits until the selectbox stands still, selects the field's text and types the option (Streamlit
    filters the list as one types: only the matching options remain, the wanted one among them), clicks the
    option in this selectbox's own list and checks that the field shows it. If the list closed on the way,
    leaving the field puts its value back, and it tries again, `attempts` times in all (the attempts that
    failed are printed: pytest shows them with the test's output).
    """
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect

    combobox = page.locator(within).get_by_role("combobox", name=label, exact=True)
    listbox = page.locator(f'[role="listbox"][aria-label="{label}"]')
    wanted = listbox.get_by_role("option", name=option, exact=True)
    failures = []
    for attempt in range(1, attempts + 1):
        page.locator(IDLE).wait_for()
        try:
            combobox.scroll_into_view_if_needed(timeout=attempt_ms)
            _wait_until_still(combobox, timeout_s=attempt_ms / 1000)
            combobox.select_text(timeout=attempt_ms)
            combobox.press_sequentially(option, timeout=attempt_ms)
            wanted.click(timeout=attempt_ms)
            expect(combobox).to_have_value(option, timeout=attempt_ms)
        except (PlaywrightError, AssertionError) as error:
            failures.append(f"attempt {attempt}: {str(error).strip().splitlines()[0]}")
            with contextlib.suppress(PlaywrightError):  # a rerun may have replaced the field meanwhile
                combobox.blur(timeout=attempt_ms)  # closes the list and puts the chosen value back in the field
            continue
        page.locator(IDLE).wait_for()
        expect(listbox).to_have_count(0, timeout=attempt_ms)
        expect(combobox).to_have_value(option, timeout=attempt_ms)
        if failures:
            print(f"choose({label!r}, {option!r}) took {attempt} attempts:", *failures, sep="\n  ")
        return
    raise AssertionError(f"could not choose {option!r} for {label!r}:\n" + "\n".join(failures))


def _wait_until_still(locator, still_s: float = 0.25, timeout_s: float = 10.0) -> None:
    """Wait until an element has not moved for still_s (after timeout_s, go on regardless)."""
    deadline = time.monotonic() + timeout_s
    last, still_since = None, time.monotonic()
    while time.monotonic() < deadline:
        box = locator.bounding_box(timeout=timeout_s * 1000)
        if box is None or box != last:
            last, still_since = box, time.monotonic()
        elif time.monotonic() - still_since >= still_s:
            return
        time.sleep(0.05)
