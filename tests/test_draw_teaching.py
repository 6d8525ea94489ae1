"""The Draw page's teaching loop under AppTest: keep a drawing as a digit, the gallery and its delete buttons,
fine-tuning refused in a sentence until a drawing can be held out, and a fine-tuned run's two accuracies.

The whole loop with real strokes and a real worker is in test_browser_teach.py.
"""

from __future__ import annotations

import pytest

from core import collection
from core.access import OPERATOR
from core.records import RunState
from core.store import RUNS_DIR_ENV, load_run
from core.training import train
from tests.factories import TINY, finished_summary, make_run
from tests.handwriting import drawings, render
from tests.test_access_pages import DRAW, auth_section, page as access_page, provider  # noqa: F401 (a fixture)
from tests.test_draw_page import canvas_value, draw_page

KEEP_LABEL = "Keep this drawing as a …"


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """A fresh runs directory with one tiny completed run, as the page's runs directory."""
    runs_dir = tmp_path / "runs"
    assert train(TINY, runs_dir).state == RunState.COMPLETED
    monkeypatch.setenv(RUNS_DIR_ENV, str(runs_dir))
    return runs_dir


def page_with_a_zero():
    page = draw_page()
    (_, strokes), = drawings([0], 1, seed=5)
    page.session_state["draw_canvas_0"] = canvas_value(render(strokes))
    return page.run()


def keep_control(page):
    (control,) = [widget for widget in page.get("button_group") if widget.label == KEEP_LABEL]
    return control


def test_a_drawing_is_kept_as_the_digit_picked_and_shows_in_the_gallery(runs_dir, loopback_visitor):
    page = page_with_a_zero()
    assert not page.exception
    predicted = int(next(h.value for h in page.header if h.value.startswith("Prediction:")).split()[-1])
    assert keep_control(page).value == [predicted] or keep_control(page).value == predicted

    keep_control(page).set_value(0)
    page.button(key="draw_keep_button").click().run()

    assert not page.exception
    (kept,) = collection.list_drawings(runs_dir, identity=OPERATOR)
    assert kept.label == 0
    assert any("Kept as a 0: you have 1 drawing of 0" in message.value for message in page.success)
    assert page.session_state["draw_canvas_generation"] == 1  # a clean canvas for the next drawing
    delete = page.button(key=f"draw_delete_{kept.drawing_id}")
    delete.click().run()
    assert collection.list_drawings(runs_dir, identity=OPERATOR) == []


def test_fine_tuning_with_too_few_drawings_is_refused_in_a_sentence(runs_dir, loopback_visitor):
    for digit, strokes in drawings([3], 2, seed=1):
        from core.digits import preprocess_drawing
        collection.keep_drawing(runs_dir, preprocess_drawing(render(strokes)), digit, identity=OPERATOR)
    page = draw_page().run()

    page.button(key="draw_fine_tune").click().run()

    assert not page.exception
    assert [error.value for error in page.error] == [
        "Cannot fine-tune yet: fine-tuning needs at least 5 kept drawings of one digit, so that one of every 5 can "
        "be held out to measure it; you have 2 (2 of 3); keep some more."]


def test_a_fine_tuned_run_shows_both_accuracies_before_and_after(runs_dir, loopback_visitor):
    source = load_run(next(p.name for p in runs_dir.iterdir() if not p.name.startswith(".")), runs_dir)
    tuned = make_run(runs_dir, TINY.replace(init_from=source.run_id, collection="0123456789abcdef0123"),
                     test_accuracy=0.9, model=True)
    tuned.write_summary(finished_summary(tuned.config, 0.9, initial_test_accuracy=0.905, collection_accuracy=1.0,
                                         initial_collection_accuracy=0.2, collection_held_out=10))
    page = draw_page()
    page.query_params["run"] = tuned.run_id
    page.run()

    metrics = {metric.label: (metric.value, metric.proto.delta) for metric in page.metric}
    assert metrics["Original test set"] == ("90.0%", "-0.5 points")
    assert metrics["Your held-out drawings"] == ("100%", "+80.0 points")
    captions = [caption.value for caption in page.caption]
    assert any(f"fine-tuned from run {source.run_id} on your drawings" in caption for caption in captions)
    assert any("every 5th drawing you kept (the 5th, 10th …) is held out" in caption for caption in captions)


def test_before_signing_in_a_visitor_is_offered_no_keeping(runs_dir, provider):  # noqa: F811
    app = access_page(DRAW, auth=auth_section(provider))
    (_, strokes), = drawings([0], 1, seed=5)
    app.session_state["draw_canvas_0"] = canvas_value(render(strokes))
    app.run()

    assert not app.exception
    assert any(h.value.startswith("Prediction:") for h in app.header)
    assert not [widget for widget in app.get("button_group") if widget.label == KEEP_LABEL]
    assert "draw_fine_tune" not in [button.key for button in app.button]
    assert any("Sign in to keep your drawings" in caption.value for caption in app.caption)
