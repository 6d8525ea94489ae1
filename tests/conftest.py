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


@pytest.fixture
def loopback_visitor(monkeypatch):
    """The visitor at this machine, as a real server sees them: a request with no sign of a proxy.

    Under AppTest the client context is a MagicMock (AppTest mocks the runtime and cannot seed headers); with
    no client context, st.context.headers is empty, as for a browser at the machine that sends none of the
    forwarding headers (ui/identity.py reads them).
    """
    import streamlit.runtime.context  # here, not at the top: most test modules never start a page

    monkeypatch.setattr(streamlit.runtime.context, "_get_client_context", lambda: None)
