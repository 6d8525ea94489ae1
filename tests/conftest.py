"""Fixtures shared by the test modules."""

import sys

import pytest

from tests.browser_support import chromium_browser


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium for one test module (the test skips when it is not installed)."""
    with chromium_browser() as browser:
        yield browser


@pytest.fixture(scope="module", autouse=True)
def stop_worker_pools():
    """Stop the worker pools a test module started, so that no worker process outlives its module."""
    yield
    service = sys.modules.get("core.service")  # a module that never imported it started no pool
    if service is not None:
        service.stop_pools()
