"""Every page in a real browser, and a training run started, watched and stopped from the Train page.

`streamlit run app.py` serves the app over a runs directory that already holds one small completed run;
Debian's Chromium, driven by Playwright, opens each page and uses the Train page's sidebar form like a person
would. Training happens in a worker process that writes the run folder, so after what the page shows, each
test reads that folder back and checks that the page told the truth about it.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from core.access import OPERATOR
from core.config import TrainConfig
from core import service
from core.export_script import run_script
from core.store import list_runs, load_run
from core.training import train
from tests.browser_support import IDLE, SIDEBAR, choose, running_app, type_into
from tests.factories import wait_until_finished

sync_api = pytest.importorskip("playwright.sync_api")

SMALL = TrainConfig(steps=60, eval_every=20, hidden_units=[32], source="offline")
# Streamlit names each page's address after its file in pages/, without the number.
PAGES = [("/", "Hybrid Lab"), ("/Train", "Train"), ("/Runs", "Runs"), ("/TensorBoard", "TensorBoard"),
         ("/Draw", "Draw")]
WAIT_MS = 60_000  # generous: the Runs, TensorBoard and Draw pages import TensorFlow on a cold server
TRAIN_WAIT_MS = 120_000  # a whole short run, worker start-up (TensorFlow import) included
# A warm worker trains the article's network at up to 4,200 steps/s here on the offline sample (CI measured 4,197
# for a run of 5,000 steps, which ended in 1.2 s, before the page had shown it training: the test waited for a live
# progress bar that never came); a cold one or a crowded machine at 700-1,100. 30,000 steps keep the live view,
# progress bar and growing curve, on screen for seven seconds at the fastest (ten of the page's refreshes at least),
# and about forty at the slowest.
SHORT_STEPS = 30_000
EVALUATE_EVERY = 3_000
LONG_STEPS = 200_000  # the form's maximum: minutes of training, so only Stop can end it within the test
SHOTS = Path("/tmp/shots")
# Plain groups only: Playwright hands these patterns to the browser's JavaScript RegExp.
ACCURACY = re.compile(r"^Test accuracy: 0\.\d{4}$")
STOPPED = re.compile(rf"^Stopped at step ([\d,]+) of {LONG_STEPS:,}\.")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """A runs directory with one small completed run, so every page has a run (and a model) to show."""
    directory = tmp_path_factory.mktemp("runs")
    assert train(SMALL, directory).state == "completed"
    yield directory
    # A test that failed half-way may leave a worker training for minutes: ask every live run to stop.
    for run in list_runs(directory):
        if run.state.active:
            service.stop(run, OPERATOR)
            wait_until_finished(run.run_id, directory, timeout=30)


@pytest.fixture(scope="module")
def app_url(runs_dir):
    with running_app(runs_dir) as url:
        yield url


@pytest.fixture
def page(browser):
    """A fresh browser session (so the Train form starts from the article's settings)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(WAIT_MS)
    yield page
    page.close()


def screenshot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"browser-{name}.png"), full_page=True)


def open_page(page, address: str, title: str) -> None:
    """Go to a page and wait until its title shows and its script has run to the end."""
    page.goto(address)
    page.get_by_role("heading", name=title, exact=True).wait_for()
    page.locator(IDLE).wait_for()


def assert_no_error_shown(page) -> None:
    """No exception box and no traceback anywhere on the page (the box's text is the failure message)."""
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()
    assert "Traceback" not in page.locator("body").inner_text()


def fill_train_form(page, app_url: str, steps: int, eval_every: int | None = None) -> None:
    """Open the Train page and fill in the article's settings on the offline sample, with this many steps."""
    open_page(page, app_url + "/Train", "Train")
    choose(page, "Source", "offline sample", within=SIDEBAR)
    type_into(page, "Steps", str(steps), within=SIDEBAR)
    if eval_every is not None:
        type_into(page, "Evaluate every", str(eval_every), within=SIDEBAR)
    # The line beside the Train button describes the config that Train will start.
    page.get_by_text(f"{steps:,} steps · function engine").wait_for()
    assert page.get_by_text("MNIST, offline sample").is_visible()


def followed_run_id(page) -> str:
    """The run the Train page follows, from its address (?run=)."""
    return parse_qs(urlparse(page.url).query)["run"][0]


def live_progress(page, total_steps: int):
    """The progress bar of a run that has trained some of its `total_steps` and reports its speed."""
    text = re.compile(rf"^Step [\d,]+ of {total_steps:,} · [\d,]+ steps/s · about .+ left$")
    return page.get_by_test_id("stProgress").filter(has_text=text)


@pytest.mark.parametrize(("path", "title"), PAGES, ids=[title for _, title in PAGES])
def test_every_page_opens_without_an_error(app_url, runs_dir, page, path, title):
    open_page(page, app_url + path, title)
    if title == "TensorBoard":
        # TensorBoard's own app, served by the app under /tensorboard/, loaded in the frame and lists the small
        # run (the oldest one).
        embedded = page.get_by_test_id("stIFrame")
        small_run_id = list_runs(runs_dir)[-1].run_id
        page.frame_locator('[data-testid="stIFrame"]').get_by_text(small_run_id).first.wait_for()
        embedded.scroll_into_view_if_needed()
    screenshot(page, f"page-{title.lower().replace(' ', '-')}")
    assert_no_error_shown(page)


def test_the_sidebar_names_every_page_and_calls_the_first_one_home(app_url, page):
    open_page(page, app_url + "/Train", "Train")  # a page other than Home, opened first on this server

    navigation = page.get_by_test_id("stSidebarNav").get_by_role("link")

    assert [link.inner_text().strip() for link in navigation.all()] == ["Home", "Train", "Runs", "TensorBoard", "Draw"]


def test_the_runs_page_downloads_a_run_as_its_script(app_url, runs_dir, page):
    run = list_runs(runs_dir)[-1]  # the small run
    open_page(page, f"{app_url}/Runs?run={run.run_id}", "Runs")

    with page.expect_download() as download:
        page.get_by_test_id("stDownloadButton").filter(has_text="Download as a script").click()

    assert download.value.suggested_filename == f"{run.run_id}.py"
    assert Path(download.value.path()).read_text() == run_script(load_run(run.run_id, runs_dir))


def test_a_short_run_trains_live_and_shows_its_test_accuracy(app_url, runs_dir, page):
    page.set_default_timeout(TRAIN_WAIT_MS)
    fill_train_form(page, app_url, SHORT_STEPS, eval_every=EVALUATE_EVERY)

    page.get_by_role("button", name="Train", exact=True).click()

    # While it trains: steps/s in the progress bar, then the curves drawn from the steps so far (still live
    # here, at worst just finished on a much faster machine).
    live_progress(page, SHORT_STEPS).wait_for()
    page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot .scatterlayer .trace').first.wait_for()
    screenshot(page, "train-live")

    accuracy = page.get_by_text(ACCURACY)
    accuracy.wait_for()
    screenshot(page, "train-completed")
    assert page.get_by_test_id("stProgress").count() == 0
    assert page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').count() >= 2  # loss and accuracy

    newest = list_runs(runs_dir)[0]
    assert newest.run_id == followed_run_id(page)
    assert newest.state == "completed"
    assert (newest.config.steps, newest.config.eval_every) == (SHORT_STEPS, EVALUATE_EVERY)
    assert newest.config.source == "offline"
    assert newest.summary.steps == SHORT_STEPS
    assert accuracy.inner_text().strip() == f"Test accuracy: {newest.test_accuracy:.4f}"
    assert_no_error_shown(page)


def test_a_new_run_shows_nothing_of_the_previous_runs_outcome_under_its_bar(app_url, runs_dir, page):
    # The browser keeps what the page's previous script run drew until the current one ends, and the Train page's
    # script run watches its run for a while before it ends: the previous run's accuracy, links and curves stood
    # under the new run's bar for that long, as if they were the new run's.
    page.set_default_timeout(TRAIN_WAIT_MS)
    fill_train_form(page, app_url, 200, eval_every=100)
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text(ACCURACY).wait_for()
    page.get_by_text("First-layer weights").wait_for()  # the first run's whole view is on screen
    page.locator(IDLE).wait_for()
    first = followed_run_id(page)
    type_into(page, "Steps", str(LONG_STEPS), within=SIDEBAR)
    type_into(page, "Evaluate every", str(LONG_STEPS), within=SIDEBAR)  # no evaluation, no weights, until the end

    page.get_by_role("button", name="Train", exact=True).click()
    page.wait_for_url(lambda url: "run=" in url and first not in url)
    page.get_by_test_id("stProgress").wait_for()  # drawn after the slot of the outcome, and after the curves
    shown = {"accuracy": page.get_by_text(ACCURACY).count(),
             "links": page.get_by_text("Confusion matrix and mistakes").count(),
             "weights": page.get_by_text("First-layer weights").count()}
    second = followed_run_id(page)
    service.stop(load_run(second, runs_dir), OPERATOR)

    assert shown == {"accuracy": 0, "links": 0, "weights": 0}
    assert wait_until_finished(second, runs_dir, timeout=600).state == "stopped"


def test_stop_ends_a_long_run_and_keeps_it_as_stopped(app_url, runs_dir, page):
    fill_train_form(page, app_url, LONG_STEPS)
    page.get_by_role("button", name="Train", exact=True).click()
    live_progress(page, LONG_STEPS).wait_for(timeout=TRAIN_WAIT_MS)
    run_id = followed_run_id(page)
    screenshot(page, "stop-running")

    main = page.get_by_test_id("stMainBlockContainer")  # not Streamlit's own Stop in its status widget
    main.get_by_role("button", name="Stop", exact=True).click()
    stopped = page.get_by_text(STOPPED)
    stopped.wait_for()
    screenshot(page, "stop-stopped")

    run = load_run(run_id, runs_dir)
    assert run.state == "stopped"
    step = run.status.step
    assert 0 < step < LONG_STEPS
    assert len(run.read_metrics()["step"]) == step  # one metrics row per step trained, none lost
    assert STOPPED.match(stopped.inner_text().strip()).group(1) == f"{step:,}"
    assert main.get_by_role("button", name="Stop", exact=True).count() == 0
    assert page.get_by_role("button", name="Train", exact=True).is_enabled()
    assert_no_error_shown(page)
