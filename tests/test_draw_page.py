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
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

import core.service
from core import insight, queue
from core.access import OPERATOR
from core.config import TrainConfig
from core.digits import classify, preprocess_drawing
from core.network import load_model
from core.records import CONFIG_FILE, SUMMARY_FILE, RunState
from core.store import RUNS_DIR_ENV, create_run, load_run
from core.training import train
from tests.factories import TINY, make_run, rewrite_json
from ui.drawing import (
    DrawingModel,
    canvas_label_html,
    choose_run,
    classify_drawing,
    explain_prediction,
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
WHY = "Why this prediction"
TOP_UNIT = re.compile(r"unit (\d+) \((-?\d+\.\d\d)\)")


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


def in_page_order(block) -> list:
    """Every element under a block, top to bottom as the page shows them (columns left to right)."""
    elements = []
    for index in sorted(block.children):
        child = block.children[index]
        elements += in_page_order(child) if hasattr(child, "children") else [child]
    return elements


def position(elements: list, matches) -> int:
    """The index of the only element that `matches`."""
    (found,) = [index for index, element in enumerate(elements) if matches(element)]
    return found


def chart_traces(element) -> list[dict]:
    return json.loads(element.proto.spec)["data"] if element.type == "plotly_chart" else []


def is_saliency_chart(element) -> bool:
    return any(trace.get("name") == "saliency" for trace in chart_traces(element))


def top_units_shown(page: AppTest) -> list[tuple[str, list[tuple[int, float]]]]:
    """The layers and (unit, activation) pairs of the page's top-units list."""
    shown = []
    for text in texts(page.markdown):
        for line in text.splitlines():
            layer = re.match(r"- `(\w+)`: ", line)
            if layer:
                shown.append((layer.group(1), [(int(unit), float(value)) for unit, value in TOP_UNIT.findall(line)]))
    return shown


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

    def submit_tiny(config, runs_dir=None, *, identity, limits=True):
        # The page asks for the article's configuration; a tiny offline one keeps the test quick. It is
        # queued as the service queues it and trained on a thread of this process as a worker trains it
        # (take the next queued run, train it), so the page sees it queued, then running, then done.
        asked.append((config, identity, limits))
        run = create_run(TINY, runs_dir, state=RunState.QUEUED, owner=identity)
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
    assert asked == [(TrainConfig(), OPERATOR, True)]  # the person at the machine (personal mode), limits on
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


def stop_the_run_once_queued(runs_dir: Path) -> threading.Thread:
    """A thread that stops the first run queued in `runs_dir`, as Stop on the Train page would.

    With no worker, the page waits for a queued run until it ends; this ends it.
    """
    def stop_it():
        for _ in range(PAGE_TIMEOUT * 20):
            waiting = queue.queued_ids(runs_dir)
            if waiting:
                core.service.stop(load_run(waiting[0], runs_dir), OPERATOR)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=stop_it, daemon=True)
    thread.start()
    return thread


def test_a_runs_directory_that_is_a_file_is_one_sentence_when_training_from_here(tmp_path, monkeypatch,
                                                                                   loopback_visitor):
    runs_dir = tmp_path / "runs"
    runs_dir.write_text("not a folder")
    monkeypatch.setenv(RUNS_DIR_ENV, str(runs_dir))
    page = open_page()

    page.button(key="draw_train").click().run()

    assert not page.exception, page.exception
    (error,) = texts(page.error)
    assert error == f"Cannot train: cannot keep runs in {runs_dir}: it is a file, not a folder."
    assert runs_dir.read_text() == "not a folder"


def test_a_worker_that_cannot_start_is_one_sentence_when_training_from_here(tmp_path, monkeypatch, loopback_visitor):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (runs_dir / core.service.WORKERS_DIR).write_text("not a folder")  # the pool cannot make its log folder
    monkeypatch.setenv(RUNS_DIR_ENV, str(runs_dir))
    page = open_page()
    stopper = stop_the_run_once_queued(runs_dir)

    page.button(key="draw_train").click().run()
    stopper.join(timeout=PAGE_TIMEOUT)

    assert not page.exception, page.exception
    (error,) = texts(page.error)
    assert "File exists" in error and str(runs_dir / core.service.WORKERS_DIR) in error, error
    assert error.endswith(".") and "Errno" not in error, error
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
    assert WHY not in texts(page.subheader) and not top_units_shown(page)
    # The address names the run, so a reload or a shared link shows the same model.
    assert page.query_params["run"] == only_run_id(runs_dir)


def page_with_a_seven(runs_dir) -> tuple[AppTest, np.ndarray, object]:
    """The Draw page run once with a "7" on its canvas: (the page, the 28 x 28 digit it read, the run's model)."""
    drawing = seven_drawing()
    page = draw_page()
    page.session_state["draw_canvas_0"] = canvas_value(drawing)
    page.run()
    assert not page.exception
    return page, preprocess_drawing(drawing), load_model(load_run(only_run_id(runs_dir), runs_dir).model_path)


def test_a_drawing_shows_the_prediction_the_confidence_the_chart_and_the_28x28_image(runs_dir):
    page, digit, model = page_with_a_seven(runs_dir)

    expected = classify(model, digit)
    assert prediction_headers(page) == [f"Prediction: {int(expected.argmax())}"]
    assert page.metric[0].label == "Confidence"
    assert page.metric[0].value == f"{expected.max():.1%}"
    assert any(re.fullmatch(r"Preprocessing and classification took \d+\.\d ms\.", text)
               for text in texts(page.caption))
    bars_chart, _saliency_chart = page.get("plotly_chart")
    (bars,) = json.loads(bars_chart.proto.spec)["data"]
    np.testing.assert_allclose(plotly_array(bars["y"]), expected, atol=1e-5)
    (preview,) = page.image
    assert preview.captions == ["What the model saw (28 × 28)"]
    assert not page.info


def test_a_drawing_is_explained_under_its_prediction_by_saliency_and_top_units(runs_dir):
    page, digit, model = page_with_a_seven(runs_dir)

    elements = in_page_order(page.main)
    header = position(elements, lambda element: element.type == "header"
                      and str(element.value).startswith("Prediction:"))
    why = position(elements, lambda element: element.type == "subheader" and element.value == WHY)
    chart = position(elements, is_saliency_chart)
    units = position(elements, lambda element: element.type == "markdown" and TOP_UNIT.search(element.value))
    assert header < why < chart < units  # the prediction first, its explanation under it
    saliency_trace, outline_trace = chart_traces(elements[chart])
    np.testing.assert_allclose(plotly_array(outline_trace["z"]).reshape(28, 28), digit, atol=1e-6)
    np.testing.assert_allclose(plotly_array(saliency_trace["customdata"]).reshape(28, 28),
                               insight.saliency(model, digit), rtol=1e-4, atol=1e-7)
    expected = insight.top_units(model, digit, count=5)
    shown = top_units_shown(page)
    assert [layer for layer, _ in shown] == [layer for layer, _ in expected] == ["hidden_1"]  # TINY: one layer
    for (_, shown_units), (_, expected_units) in zip(shown, expected):
        assert [unit for unit, _ in shown_units] == [unit for unit, _ in expected_units]
        np.testing.assert_allclose([value for _, value in shown_units], [value for _, value in expected_units],
                                   atol=0.005 + 1e-6)
    assert any(re.fullmatch(r"Saliency and top units: \d+ ms, after the prediction was shown\.", text)
               for text in texts(page.caption))


def test_a_cnns_prediction_is_explained_with_its_convolution_layers_too(tmp_path_factory, monkeypatch):
    runs_dir = tmp_path_factory.mktemp("cnn-runs")
    run = train(TINY.replace(architecture="cnn", optimizer="adam", learning_rate=0.001), runs_dir)
    assert run.state == RunState.COMPLETED, run.status
    monkeypatch.setenv(RUNS_DIR_ENV, str(runs_dir))
    drawing = seven_drawing()
    page = draw_page()
    page.session_state["draw_canvas_0"] = canvas_value(drawing)

    page.run()

    assert not page.exception
    assert prediction_headers(page)
    model = load_model(run.model_path)
    digit = preprocess_drawing(drawing)
    (chart,) = [element for element in in_page_order(page.main) if is_saliency_chart(element)]
    np.testing.assert_allclose(plotly_array(chart_traces(chart)[0]["customdata"]).reshape(28, 28),
                               insight.saliency(model, digit), rtol=1e-4, atol=1e-7)
    shown = top_units_shown(page)
    assert [layer for layer, _ in shown] == [layer for layer, _ in insight.top_units(model, digit)]
    assert [layer for layer, _ in shown][:2] == ["conv_1", "conv_2"]  # filters, averaged over the image
    assert all(len(units) == 5 for _, units in shown)


def test_the_prediction_is_on_the_page_before_its_explanation_is_computed(runs_dir, monkeypatch):
    def broken_saliency(model, digit):
        raise RuntimeError("the explanation broke")

    # If the page computed the explanation first, this failure would leave no prediction behind it.
    monkeypatch.setattr(insight, "saliency", broken_saliency)
    page = draw_page()
    page.session_state["draw_canvas_0"] = canvas_value(seven_drawing())

    page.run()

    assert "the explanation broke" in page.exception[0].value
    assert len(prediction_headers(page)) == 1
    assert page.metric[0].label == "Confidence"
    assert len(page.get("plotly_chart")) == 1  # the probabilities, but no saliency
    assert not top_units_shown(page)


def test_a_blank_canvas_after_the_toolbar_reset_shows_the_hint_again(runs_dir):
    page = draw_page()
    page.session_state["draw_canvas_0"] = canvas_value(np.zeros((CANVAS_SIZE, CANVAS_SIZE, 4), np.uint8))

    page.run()

    assert not page.exception
    assert any(HINT in text for text in texts(page.info))
    assert not prediction_headers(page)
    assert not page.get("plotly_chart")
    assert WHY not in texts(page.subheader) and not top_units_shown(page)


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


def test_the_drawing_model_explains_with_the_keras_model_on_its_tensorflow_thread(runs_dir, monkeypatch):
    model_path = load_run(only_run_id(runs_dir), runs_dir).model_path
    drawing_model = DrawingModel(model_path)
    threads = []

    def on_thread(function):
        def recorded(*args, **kwargs):
            threads.append(threading.current_thread().name)
            return function(*args, **kwargs)
        return recorded

    monkeypatch.setattr(insight, "saliency", on_thread(insight.saliency))
    monkeypatch.setattr(insight, "top_units", on_thread(insight.top_units))
    keras.backend.clear_session(free_memory=False)  # as Streamlit does after every script run
    prediction = classify_drawing(drawing_model, seven_drawing())

    explanation = explain_prediction(drawing_model, prediction, count=3)

    keras_model = load_model(model_path)
    np.testing.assert_allclose(explanation.saliency, insight.saliency(keras_model, prediction.digit),
                               rtol=1e-4, atol=1e-7)
    assert explanation.saliency.shape == (28, 28) and explanation.saliency.max() > 0
    ((layer, units),) = explanation.top_units
    ((expected_layer, expected_units),) = insight.top_units(keras_model, prediction.digit, count=3)
    assert layer == expected_layer and [unit for unit, _ in units] == [unit for unit, _ in expected_units]
    assert len(units) == 3 and explanation.seconds > 0
    # Both ran on the page's one long-lived TensorFlow thread, not on the caller's (a new one per rerun).
    assert threads[:2] == ["drawing-model_0", "drawing-model_0"]


def test_a_drawing_model_owns_its_thread_and_the_thread_ends_when_the_model_is_dropped(runs_dir):
    model_path = load_run(only_run_id(runs_dir), runs_dir).model_path
    first, second = DrawingModel(model_path), DrawingModel(model_path)
    threads = [first._call(threading.current_thread), second._call(threading.current_thread)]

    assert threads[0] is not threads[1] and all(thread.is_alive() for thread in threads)
    assert threading.current_thread() not in threads
    del first, second  # as st.cache_resource drops a model it no longer keeps

    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)


def test_the_line_above_the_canvas_says_the_prediction_for_a_narrow_row(runs_dir):
    page = open_page()
    page.session_state["draw_canvas_0"] = canvas_value(seven_drawing())

    page.run()

    assert not page.exception
    (header,) = prediction_headers(page)
    (label,) = [html.proto.body for html in page.get("html") if html.proto.body.startswith('<div class="draw-label">')]
    # Both versions are there; the page's style shows the narrow one only when the results are under the canvas.
    assert '<span class="wide">Your digit</span>' in label
    assert f'<span class="narrow"><strong>{header}</strong> · ' in label and "% confident</span>" in label
    assert canvas_label_html(None).count("Your digit") == 2 and "Prediction" not in canvas_label_html(None)


def test_preview_image_enlarges_each_pixel_into_a_sharp_square():
    digit = np.zeros((28, 28), np.float32)
    digit[3, 5] = 1.0
    digit[20, 7] = 0.5

    preview = preview_image(digit, scale=6)

    assert preview.shape == (168, 168) and preview.dtype == np.uint8
    assert (preview[18:24, 30:36] == 255).all() and (preview[120:126, 42:48] == 128).all()
    assert int(preview.sum()) == 36 * (255 + 128)
