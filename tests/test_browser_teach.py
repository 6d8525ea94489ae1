"""The Draw page's teaching loop in a real browser: draw a slashed zero, keep it as a 0, fine-tune, and find the
fine-tuned run offered (selected in the picker, with its two accuracies).

Lean on purpose: four zeros are kept through core before the page opens (the fifth, drawn here, is the one held
out), and the model is the tiny test network. The fine-tuning run goes through the page's one submit path to the
app's own warm worker. The figures of fine-tuning itself are tests/test_fine_tune.py's.
"""

from __future__ import annotations

import pytest

from core import collection
from core.access import OPERATOR
from core.digits import preprocess_drawing
from core.training import train
from tests.browser_support import running_app
from tests.factories import TINY
from tests.handwriting import HAND, drawings, render
from tests.test_browser_draw import draw_until_predicted

sync_api = pytest.importorskip("playwright.sync_api")

WAIT_MS = 60_000
TRAIN_WAIT_MS = 240_000  # a worker that starts cold on a busy machine imports TensorFlow first


@pytest.fixture(scope="module")
def teaching_app(tmp_path_factory):
    """The app over a runs directory with one tiny run and four slashed zeros kept by the person at the machine."""
    runs_dir = tmp_path_factory.mktemp("runs")
    assert train(TINY, runs_dir).state == "completed"
    for digit, strokes in drawings([0], 4, seed=1):
        collection.keep_drawing(runs_dir, preprocess_drawing(render(strokes)), digit, identity=OPERATOR)
    with running_app(runs_dir) as url:
        yield url, runs_dir


def test_draw_keep_fine_tune_and_the_fine_tuned_run_is_offered(teaching_app, browser):
    url, runs_dir = teaching_app
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(WAIT_MS)
    page.goto(url + "/Draw")
    page.get_by_role("heading", name="Teach it your handwriting").wait_for()

    draw_until_predicted(page, HAND[0])
    keep = page.locator(".st-key-draw_keep")
    keep.get_by_text("Keep this drawing as a …").wait_for()
    keep.get_by_role("radio", name="0", exact=True).click()  # the ten digits are a radio group
    keep.get_by_role("button", name="Keep").click()
    page.get_by_text("Kept as a 0: you have 5 drawings of 0").wait_for()
    assert [d.label for d in collection.list_drawings(runs_dir, identity=OPERATOR)] == [0] * 5

    page.get_by_role("button", name="Fine-tune on my drawings").click()

    picker = page.get_by_role("combobox", name="Model", exact=True)
    page.get_by_text("Your held-out drawings").wait_for(timeout=TRAIN_WAIT_MS)
    assert "fine-tuned on your drawings" in picker.input_value()
    assert page.get_by_text("Original test set").is_visible()
    page.close()
