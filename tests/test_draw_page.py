"""The Draw page (AppTest) and what it calls in ui.drawing.

AppTest cannot draw, but it can hand the canvas a drawing: the canvas (a components-v2 widget) keeps its
value in session_state under its key, as {"drawing": {"raw": fabric_json, "data": png_data_url}}, which
is exactly what the browser sends after a stroke. Real strokes are in test_browser_draw.py.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
import streamlit.runtime.context
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

import core.service
from core import queue
from core.config import TrainConfig
from core.digits import classify, preprocess_drawing
from core.network import load_model
from core.runs import CONFIG_FILE, RUNS_DIR_ENV, SUMMARY_FILE, RunState, create_run, load_run
from core.training import train
from tests.factories import TINY, make_run, rewrite_json
from ui.drawing import (
    DrawingModel,
    choose_run,
    classify_drawing,
    preview_image,
    training_failure,
    training_run,
)
from ui.texts import progress_view

HOME = str(Path(__file__).resolve().parents[1] / "Home.py")
PAGE = "pages/4_Draw.py"
CANVAS_SIZE = 280
PAGE_TIMEOUT = 120  # seconds; the first run of a module imports TensorFlow and loads a model
HINT = "Draw a digit on the canvas"


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_runs_dir(tmp_path_factory):
    """A runs directory holding one tiny completed run."""
    runs_dir = tmp_path_factory.mktemp("runs")
    run = train(TINY, runs_dir)
    assert run.state == RunState.COMPLETED, run.status
    return runs_dir


@pytest.fixture
def runs_dir(tiny_runs_dir, monkeypatch):
    """The tiny runs directory, as the page's runs directory."""
    monkeypatch.setenv(RUNS_DIR_ENV, str(tiny_runs_dir))
    return tiny_runs_dir


@pytest.fixture
def loopback_visitor(monkeypatch):
    """The visitor on this machine, as a real server sees it: st.context.ip_address is None.

    Under AppTest, st.context.ip_address is a MagicMock (AppTest mocks the runtime and cannot seed the
    client's address), and ui.widgets.visitor_id cannot hash that; a loopback client has no client context
    address at all, which this reproduces.
    """
    monkeypatch.setattr(streamlit.runtime.context, "_get_client_context", lambda: None)


def only_run_id(runs_dir) -> str:
    (folder,) = [path for path in runs_dir.iterdir() if path.is_dir()]
    return folder.name


def seven_drawing(alpha: int = 255) -> np.ndarray:
    """A "7" as the canvas returns it: uint8 RGBA (280, 280, 4), white ink on opaque black."""
    image = Image.new("RGBA", (CANVAS_SIZE, CANVAS_SIZE), (0, 0, 0, alpha))
    ImageDraw.Draw(image).line((70, 60, 210, 60, 120, 240), fill=(255, 255, 255, 255), width=18)
    return np.asarray(image)


def canvas_value(image: np.ndarray) -> dict:
    """What the canvas widget holds after a stroke: the fabric JSON and the canvas as a PNG data URL."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"drawing": {"raw": {"objects": [{"type": "Path"}], "background": "#000000"}, "data": data_url}}


def plotly_array(values) -> np.ndarray:
    """A number array from a figure's JSON: a plain list, or Plotly's base64 {"dtype", "bdata"} form."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values)


def draw_page() -> AppTest:
    """The app, switched to the Draw page, not run yet (so that a test can set session state first)."""
    page = AppTest.from_file(HOME, default_timeout=PAGE_TIMEOUT)
    page.switch_page(PAGE)
    return page


def open_page(query_run: str | None = None) -> AppTest:
    page = draw_page()
    if query_run is not None:
        page.query_params["run"] = query_run
    return page.run()


def texts(elements) -> list[str]:
    return [element.value for element in elements]


def prediction_headers(page: AppTest) -> list[str]:
    return [text for text in texts(page.header) if text.startswith("Prediction:")]


# --- the page without a model -------------------------------------------------------------


def test_with_no_runs_the_page_offers_to_train_the_article_model(tmp_path, monkeypatch):
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path / "runs"))

    page = open_page()

    assert not page.exception
    assert not page.error
    assert [button.label for button in page.button] == ["Train the article's model"]
    assert not page.button(key="draw_train").disabled
    assert not page.selectbox
    assert any("no trained model" in text for text in texts(page.info))


def test_the_train_button_trains_a_model_and_then_the_page_lets_you_draw(tmp_path, monkeypatch, loopback_visitor):
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv(RUNS_DIR_ENV, str(runs_dir))
    asked, started, workers = [], [], []

    def submit_tiny(config, runs_dir=None, visitor=None, limits=True, files=True):
        # The page asks for the article's configuration; a tiny offline one keeps the test quick. It is
        # queued as the service queues it and trained on a thread of this process as a worker trains it
        # (take the next queued run, train it), so the page sees it queued, then running, then done.
        asked.append((config, visitor, limits, files))
        run = create_run(TINY, runs_dir, state=RunState.QUEUED, visitor=visitor)
        worker = threading.Thread(target=lambda: train(TINY, run=queue.take_next(runs_dir)))
        worker.start()
        workers.append(worker)
        started.append(run.run_id)
        return run

    # The page calls service.submit through the module on every press, so it picks this up.
    monkeypatch.setattr(core.service, "submit", submit_tiny)
    page = open_page()

    # The page follows the run until it ends, then reruns itself and offers the new model.
    page.button(key="draw_train").click().run()
    for worker in workers:
        worker.join(timeout=PAGE_TIMEOUT)

    assert not page.exception
    assert asked == [(TrainConfig(), "local", True, True)]  # a visitor on this machine, limits on, files offered
    assert len(started) == 1
    assert load_run(started[0], runs_dir).state == RunState.COMPLETED
    assert page.selectbox(key="draw_run").value == started[0]
    assert any(HINT in text for text in texts(page.info))


def test_a_failed_training_is_reported_and_can_be_retried(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv(RUNS_DIR_ENV, str(runs_dir))
    failed = make_run(runs_dir, state=RunState.FAILED, test_accuracy=None, message="DatasetError: no MNIST available")
    page = draw_page()
    page.session_state["draw_started_run"] = failed.run_id

    page.run()

    assert not page.exception
    assert texts(page.error) == ["Training the model ended failed: DatasetError: no MNIST available."]
    assert not page.button(key="draw_train").disabled


# --- the page with a trained run ----------------------------------------------------------


def test_the_select_box_defaults_to_the_trained_run_and_an_empty_canvas_gets_a_hint(runs_dir):
    page = open_page()

    assert not page.exception
    assert not page.error
    assert page.selectbox(key="draw_run").value == only_run_id(runs_dir)
    assert any(HINT in text for text in texts(page.info))
    assert not prediction_headers(page)
    assert not page.get("plotly_chart")
    # The address names the run, so a reload or a shared link shows the same model.
    assert page.query_params["run"] == only_run_id(runs_dir)


def test_a_drawing_shows_the_prediction_the_confidence_the_chart_and_the_28x28_image(runs_dir):
    drawing = seven_drawing()
    page = draw_page()
    page.session_state["draw_canvas_0"] = canvas_value(drawing)

    page.run()

    assert not page.exception
    model = load_model(load_run(only_run_id(runs_dir), runs_dir).model_path)
    expected = classify(model, preprocess_drawing(drawing))
    assert prediction_headers(page) == [f"Prediction: {int(expected.argmax())}"]
    assert page.metric[0].label == "Confidence"
    assert page.metric[0].value == f"{expected.max():.1%}"
    assert re.fullmatch(r"Preprocessing and classification took \d+\.\d ms\.", texts(page.caption)[-1])
    (chart,) = page.get("plotly_chart")
    (bars,) = json.loads(chart.proto.spec)["data"]
    np.testing.assert_allclose(plotly_array(bars["y"]), expected, atol=1e-5)
    (preview,) = page.image
    assert preview.captions == ["What the model saw (28 × 28)"]
    assert not page.info


def test_a_blank_canvas_after_the_toolbar_reset_shows_the_hint_again(runs_dir):
    page = draw_page()
    page.session_state["draw_canvas_0"] = canvas_value(np.zeros((CANVAS_SIZE, CANVAS_SIZE, 4), np.uint8))

    page.run()

    assert not page.exception
    assert any(HINT in text for text in texts(page.info))
    assert not prediction_headers(page)


def test_clear_empties_the_canvas(runs_dir):
    page = draw_page()
    page.session_state["draw_canvas_0"] = canvas_value(seven_drawing())
    page.run()
    assert prediction_headers(page)

    (clear,) = [button for button in page.button if button.label == "Clear"]
    clear.click().run()

    assert not page.exception
    assert not prediction_headers(page)
    assert any(HINT in text for text in texts(page.info))


def test_a_link_to_a_run_selects_it(runs_dir, tmp_path, monkeypatch):
    # A second, less accurate copy of the run: best_run would not pick it, the link does.
    other_dir = tmp_path / "runs"
    shutil.copytree(runs_dir, other_dir)
    best_id = only_run_id(runs_dir)
    linked = other_dir / f"{best_id[:-4]}-cpy"
    shutil.copytree(other_dir / best_id, linked)
    rewrite_json(linked / SUMMARY_FILE, lambda summary: {**summary, "test_accuracy": summary["test_accuracy"] / 2})
    monkeypatch.setenv(RUNS_DIR_ENV, str(other_dir))

    assert open_page().selectbox(key="draw_run").value == best_id
    page = open_page(query_run=linked.name)

    assert not page.exception
    assert page.selectbox(key="draw_run").value == linked.name
    assert not page.warning


def test_a_link_to_an_unknown_run_warns_and_selects_the_best_run(runs_dir):
    page = open_page(query_run="no-such-run")

    assert not page.exception
    assert page.selectbox(key="draw_run").value == only_run_id(runs_dir)
    (warning,) = texts(page.warning)
    assert "there is no run 'no-such-run'" in warning


# --- ui.drawing ----------------------------------------------------------------------------


def test_choose_run_explains_why_a_linked_run_cannot_draw(runs_dir, tmp_path):
    other_dir = tmp_path / "runs"
    shutil.copytree(runs_dir, other_dir)
    fashion = other_dir / "fashion-run"
    shutil.copytree(other_dir / only_run_id(runs_dir), fashion)
    rewrite_json(fashion / CONFIG_FILE, lambda config: {**config, "dataset": "fashion_mnist"})
    queued = create_run(TINY, other_dir, state=RunState.QUEUED)
    running = make_run(other_dir, state=RunState.RUNNING)  # created by this process, which is alive

    fashion_choice = choose_run(other_dir, "fashion-run")
    running_choice = choose_run(other_dir, running.run_id)
    queued_choice = choose_run(other_dir, queued.run_id)

    assert [run.run_id for run in fashion_choice.runs] == [only_run_id(runs_dir)]
    assert fashion_choice.default_run_id == only_run_id(runs_dir)
    assert "fashion_mnist, not handwritten digits" in fashion_choice.notice
    assert "is still training" in running_choice.notice
    assert f"run {queued.run_id} is still queued" in queued_choice.notice
    assert queued_choice.default_run_id == only_run_id(runs_dir)
    assert training_run(other_dir).run_id == running.run_id


def test_choose_run_with_no_runs_has_nothing_to_select(tmp_path):
    choice = choose_run(tmp_path, "anything")

    assert choice.runs == [] and choice.default_run_id is None
    assert "there is no run to draw with yet" in choice.notice


def test_training_progress_and_failure_read_the_run_folder(tmp_path):
    # What the page shows while it waits for its model: ui.texts.progress_view, as on the Train page.
    queued = create_run(TINY, tmp_path, state=RunState.QUEUED)
    run = make_run(tmp_path, state=RunState.RUNNING)
    run.write_status(RunState.RUNNING, "training", step=14, total_steps=TINY.steps, steps_per_second=7.0)

    assert TINY.steps == 35
    view = progress_view(load_run(run.run_id, tmp_path), queue.position(run.run_id, tmp_path))
    assert (view.fraction, view.text) == (0.4, "Step 14 of 35 · 7 steps/s · about 3.0 s left")
    waiting = progress_view(load_run(queued.run_id, tmp_path), queue.position(queued.run_id, tmp_path))
    assert waiting.fraction == 0.0 and waiting.text.startswith("Queued: 1st in the queue.")
    assert training_run(tmp_path).run_id == run.run_id  # the newest run still to finish
    assert training_failure(run.run_id, tmp_path) is None
    assert training_failure(queued.run_id, tmp_path) is None
    run.write_status(RunState.DIVERGED, "the loss became nan")
    assert training_failure(run.run_id, tmp_path) == "Training the model ended diverged: the loss became nan."
    assert training_failure(None, tmp_path) is None
    assert training_run(tmp_path).run_id == queued.run_id  # a queued run is waited for too


def test_the_compiled_model_matches_keras_even_after_streamlit_clears_the_keras_session(runs_dir):
    model_path = load_run(only_run_id(runs_dir), runs_dir).model_path
    drawing_model = DrawingModel(model_path)
    digit = preprocess_drawing(seven_drawing())
    expected = classify(load_model(model_path), digit)

    # Streamlit calls this after every script run; the compiled model must survive it.
    keras.backend.clear_session(free_memory=False)
    prediction = classify_drawing(drawing_model, seven_drawing())

    np.testing.assert_allclose(prediction.probabilities, expected, atol=1e-5)
    assert prediction.predicted == int(expected.argmax())
    np.testing.assert_array_equal(prediction.digit, digit)
    assert classify_drawing(drawing_model, None) is None
    assert classify_drawing(drawing_model, np.zeros((CANVAS_SIZE, CANVAS_SIZE, 3), np.uint8)) is None


def test_preview_image_enlarges_each_pixel_into_a_sharp_square():
    digit = np.zeros((28, 28), np.float32)
    digit[3, 5] = 1.0
    digit[20, 7] = 0.5

    preview = preview_image(digit, scale=6)

    assert preview.shape == (168, 168) and preview.dtype == np.uint8
    assert (preview[18:24, 30:36] == 255).all() and (preview[120:126, 42:48] == 128).all()
    assert int(preview.sum()) == 36 * (255 + 128)
