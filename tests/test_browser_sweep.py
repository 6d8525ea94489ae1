"""A 2 x 2 sweep from the Train page, in Chromium against `streamlit run app.py`: queued as one named sweep,
followed on the page, and ending with its table and its parallel-coordinates chart.

The sweep's setting lists are long (every setting a sweep can vary) and sit in an expander under the page's
other widgets, so the test picks their options with `choose`, which types the option to
filter the list and tries again if a rerun or a scroll closes the list under it (see tests/browser_support.py).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from core import sweeps
from core.records import RunState
from tests.browser_support import IDLE, SIDEBAR, choose, running_app, type_into

pytest.importorskip("playwright.sync_api")

WAIT_MS = 180_000  # the pool warms up (TensorFlow, the article's network) before the first run starts
SWEEP_MS = 300_000  # four runs one after the other; on a busy 2-core machine a whole test took 170 s
SHOTS = Path("/tmp/shots")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def app_url(runs_dir):
    with running_app(runs_dir) as url:
        yield url


def test_a_two_by_two_sweep_queues_four_runs_and_ends_with_its_table_and_chart(browser, app_url, runs_dir):
    page = browser.new_page(viewport={"width": 1280, "height": 1200})
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(app_url + "/Train")
        page.locator(IDLE).wait_for()
        choose(page, "Source", "offline sample", within=SIDEBAR)
        type_into(page, "Steps", "200", within=SIDEBAR)

        page.get_by_text("Sweep: a grid of runs over one or two settings").click()
        choose(page, "Setting 1", "Learning rate")
        type_into(page, "Values 1", "0.1, 0.5")
        choose(page, "Setting 2", "Batch size")
        type_into(page, "Values 2", "20, 50")
        page.get_by_role("button", name="Queue sweep (4 runs)").click()

        progress = page.get_by_text("4 runs: 4 done, 0 training, 0 queued")
        progress.wait_for(timeout=SWEEP_MS)
        chart = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot .parcoords')
        chart.first.wait_for()
        page.locator(IDLE).wait_for()
        # The page scrolls inside Streamlit's main area, not the document: bring the table and chart into view.
        progress.evaluate("element => element.scrollIntoView({block: 'start'})")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "sweep-done.png"), full_page=True)

        name = parse_qs(urlparse(page.url).query)["sweep"][0]
        runs = sweeps.sweep_runs(name, runs_dir)
        assert len(runs) == 4 and all(run.state is RunState.COMPLETED for run in runs)
        assert sorted((run.config.learning_rate, run.config.batch_size) for run in runs) == [
            (0.1, 20), (0.1, 50), (0.5, 20), (0.5, 50)]
        assert all(run.config.steps == 200 and run.config.source == "offline" for run in runs)
        table = page.get_by_test_id("stDataFrame").last
        assert table.is_visible()
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        page.close()
