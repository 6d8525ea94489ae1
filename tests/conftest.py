"""Fixtures shared by the test modules."""

import pytest

from tests.browser_support import chromium_browser


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium for one test module (the test skips when it is not installed)."""
    with chromium_browser() as browser:
        yield browser
