"""Safe by default, shareable on purpose, in a real browser against `streamlit run app.py`.

Started as `make run` starts it, the app listens on loopback only. Started with `--server.address 0.0.0.0`
and opened at http://127.0.0.2:PORT — another origin than 127.0.0.1, as a remote visitor's browser is — the
TensorBoard page shows TensorBoard with the runs in it while the browser may reach no other host or port, and
the Train page offers no way to name the server's files. Traffic stays on loopback addresses. Served under a
path prefix (`--server.baseUrlPath`, as behind a proxy), TensorBoard gets every font its page asks for. No
visitor is offered Streamlit's developer toolbar (Deploy).
"""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
from urllib.parse import urljoin, urlparse

import pytest

from core.training import train
from tests.browser_support import IDLE, offered_sources, running_app
from tests.factories import TINY

pytest.importorskip("playwright.sync_api")

WAIT_MS = 90_000  # TensorBoard is built on its first request: it imports TensorFlow in the server
VISITOR_HOST = "127.0.0.2"
PREFIX = "lab"
FONT_URL = re.compile(r"url\(([^)]+\.woff2)\)")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("runs")
    assert train(TINY, directory).state == "completed"
    return directory


@pytest.fixture(scope="module")
def shared_url(runs_dir):
    with running_app(runs_dir, address="0.0.0.0", visit_host=VISITOR_HOST) as url:
        yield url


def connects(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex((host, port)) == 0


def test_by_default_the_app_listens_on_loopback_only(runs_dir):
    with running_app(runs_dir, address=None) as url:  # as `make run` starts it: .streamlit/config.toml decides
        port = urlparse(url).port

        assert connects("127.0.0.1", port)
        assert not connects(VISITOR_HOST, port)  # bound to 127.0.0.1 alone: another address is refused


def visitor_page(browser, url: str):
    """A page that may only talk to the app's own origin: every request elsewhere is aborted and recorded."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    origin = urlparse(url).netloc
    page.blocked = []

    def only_the_app(route):
        if urlparse(route.request.url).netloc == origin:
            route.continue_()
        else:
            page.blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_app)
    return page


def test_a_visitor_from_another_origin_sees_tensorboard_with_the_runs(browser, shared_url, runs_dir):
    page = visitor_page(browser, shared_url)
    run_id = next(path.name for path in runs_dir.iterdir() if path.name[0].isdigit())

    page.goto(shared_url + "/TensorBoard")
    page.get_by_role("heading", name="TensorBoard", exact=True).wait_for()
    frame = page.frame_locator('[data-testid="stIFrame"]')
    frame.get_by_text(run_id).first.wait_for()
    page.screenshot(path="/tmp/shots/sharing-tensorboard.png", full_page=True)

    assert page.blocked == []  # nothing on the page needed another host or port
    page.close()


def test_a_visitor_is_not_offered_the_servers_files(browser, shared_url):
    page = visitor_page(browser, shared_url)
    page.goto(shared_url + "/Train")
    page.locator(IDLE).wait_for()
    sidebar = page.get_by_test_id("stSidebar")
    # Read once the list shows its options (CI once read it the moment ArrowDown was pressed: an empty list).
    offered = offered_sources(page)

    # A visitor may upload data of their own, but is never offered the server's files ("path").
    assert offered == ["auto (full if available)", "keras (full download)", "offline sample", "uploaded (your own data)"]
    assert sidebar.get_by_label("Data path").count() == 0
    page.close()


@pytest.fixture(scope="module")
def prefixed_url(runs_dir):
    """The app as `streamlit run app.py --server.baseUrlPath lab` serves it, opened on this machine."""
    with running_app(runs_dir, base_url_path=PREFIX) as url:
        yield url


def fetch(url: str) -> tuple[int, str, bytes]:
    """GET a URL: (status, content type, body)."""
    try:
        with urllib.request.urlopen(url, timeout=WAIT_MS / 1000) as response:
            return response.status, response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get_content_type(), b""


def test_under_a_path_prefix_tensorboard_gets_every_font_its_page_asks_for(browser, prefixed_url):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    page.goto(prefixed_url + "/TensorBoard")
    page.get_by_role("heading", name="TensorBoard", exact=True).wait_for()
    # Where the page embeds TensorBoard, resolved as the browser resolves it.
    tensorboard_url = urljoin(page.url, page.get_by_test_id("stIFrame").get_attribute("src"))
    page.close()

    status, content_type, html = fetch(tensorboard_url)
    fonts = sorted(set(FONT_URL.findall(html.decode())))

    assert (status, content_type) == (200, "text/html") and html.startswith(b"<!doctype html>")
    assert len(fonts) >= 10  # Roboto in several weights and scripts
    for font in fonts:
        font_url = urljoin(tensorboard_url, font)
        status, content_type, body = fetch(font_url)
        assert (status, content_type, body[:4]) == (200, "font/woff2", b"wOF2"), font_url


def test_no_visitor_is_offered_the_developer_toolbar(browser, prefixed_url):
    # Opened from this machine: Streamlit's "auto" toolbar would show Deploy here (to anyone reaching the app
    # through localhost, a proxy on this machine included).
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    page.goto(prefixed_url + "/")
    page.locator(IDLE).wait_for()
    page.get_by_test_id("stMainMenu").wait_for()  # the toolbar is drawn, with the viewer's menu

    assert page.get_by_test_id("stAppDeployButton").count() == 0
    assert page.get_by_role("button", name="Deploy").count() == 0
    page.close()
