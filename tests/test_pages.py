"""Every page through Streamlit's AppTest, on real runs made once per module, plus what the pages say.

Pages are run as the app runs them: Home.py first, then `switch_page`, with HYBRID_LAB_RUNS pointing at a
temporary runs directory. The Train page is driven through its widgets and followed to the end of a run that
the training service queues and a warm worker process trains, so the test polls, as the browser does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import streamlit
from streamlit.testing.v1 import AppTest

import core.service
import core.store
from core import queue, service, tensorboard_server
from core.access import OPERATOR
from core.config import SETTINGS_BY_NAME, TrainConfig
from core.records import CONFIG_FILE, METRICS_FIELDS, RunState, Status
from core.run_files import CsvFollower
from core.run_folder import Run
from core.store import create_run, list_runs, load_run
from core.training import train
from tests.apptest_support import open_app
from tests.factories import DIVERGING, TINY, finish_now, make_run, wait_until_finished
from ui import texts as page_texts
from ui.form import config_from_form, form_values, stops_with

REPO_ROOT = Path(__file__).resolve().parents[1]
HOME = str(REPO_ROOT / "Home.py")
PAGES = ["Home.py", "pages/1_Train.py", "pages/2_Runs.py", "pages/3_TensorBoard.py", "pages/4_Draw.py"]
WARM_UP = 240  # seconds for a first run on a fresh pool: the worker imports TensorFlow and compiles first


# --- fixtures and helpers ------------------------------------------------------------------------------


def make_damaged(runs_dir: Path) -> Run:
    """A run folder whose config.json was cut short: written through the store, then broken."""
    run = make_run(runs_dir)
    (run.path / CONFIG_FILE).write_text("{not json")
    return run


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """Several real runs: completed (twice, different settings), diverged, failed, plus a damaged folder."""
    runs_dir = tmp_path_factory.mktemp("runs")
    completed = train(TINY, runs_dir)
    adam = train(TINY.replace(optimizer="adam", learning_rate=0.01, hidden_units=[32]), runs_dir)
    diverged = train(DIVERGING, runs_dir)
    failed = train(TINY.replace(source="path", data_path=str(runs_dir / "missing.npz")), runs_dir)
    damaged = make_damaged(runs_dir)
    assert [completed.state, adam.state, diverged.state, failed.state] == [
        RunState.COMPLETED, RunState.COMPLETED, RunState.DIVERGED, RunState.FAILED]
    return SimpleNamespace(runs_dir=runs_dir, completed=completed, adam=adam, diverged=diverged, failed=failed,
                           damaged=damaged)


@pytest.fixture
def empty_runs_dir(tmp_path):
    return tmp_path / "runs"


@pytest.fixture(scope="module")
def service_runs(tmp_path_factory):
    """A runs directory whose queued runs a real pool of one warm worker trains; the pool stops with the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HYBRID_LAB_WORKERS", "1")  # one worker whatever the machine (the one paying the warm-up)
        yield tmp_path_factory.mktemp("service-runs")
        service.stop_pools()



@pytest.fixture
def no_workers(monkeypatch):
    """core.service.submit queues runs as usual, but no worker pool starts: queued runs stay queued."""
    monkeypatch.setattr(core.service, "ensure_pool", lambda runs_dir=None: None)


def open_page(page: str, runs_dir: Path, monkeypatch, **query) -> AppTest:
    """Run the app on `page` with runs in `runs_dir` and these query parameters."""
    monkeypatch.setenv("HYBRID_LAB_RUNS", str(runs_dir))
    return open_app(page, **query)


def texts(app: AppTest) -> str:
    """Everything a person can read on the page, as one string."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "success", "warning", "error",
                 "code", "metric"):
        for element in getattr(app, kind):
            parts.append(str(getattr(element, "value", "")))
            parts.append(str(getattr(element, "label", "")))
    parts += [element.text for element in app.progress]
    parts += [str(element.proto.label) for element in app.get("page_link")]
    return "\n".join(parts)


def assert_no_exception(app: AppTest) -> None:
    assert not app.exception, [element.value for element in app.exception]


# --- every page, three situations --------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_no_runs(page, empty_runs_dir, monkeypatch):
    app = open_page(page, empty_runs_dir, monkeypatch)

    assert_no_exception(app)
    assert not app.error
    if page not in ("pages/1_Train.py", "pages/4_Draw.py"):
        assert "Train your first model" in texts(app)
    if page == "pages/4_Draw.py":
        assert [button.label for button in app.button] == ["Train the article's model"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_several_runs_and_a_damaged_one(page, populated, monkeypatch):
    app = open_page(page, populated.runs_dir, monkeypatch)

    assert_no_exception(app)
    assert "Traceback" not in texts(app)


def test_home_says_what_this_is_the_data_the_best_run_and_the_latest_runs(populated, monkeypatch):
    app = open_page("Home.py", populated.runs_dir, monkeypatch)

    shown = texts(app)
    assert "Keras layers called on raw TensorFlow tensors" in shown
    assert "TensorFlow owns the training" in shown
    assert "offline sample: 5,000 real MNIST digits" in shown and "To train on full MNIST" in shown
    best = max(populated.completed, populated.adam, key=lambda run: run.test_accuracy)
    assert app.metric[0].value == f"{best.test_accuracy:.4f}"
    assert f"run `{best.run_id}`" in shown
    table = next(element.value for element in app.markdown if element.value.startswith("| Started"))
    rows = table.splitlines()[2:]
    assert len(rows) == 5 and any("damaged (unreadable)" in row for row in rows)
    assert any(f"{populated.adam.test_accuracy:.4f}" in row and "adam at 0.01" in row for row in rows)
    assert any("diverged (loss blew up)" in row for row in rows) and any("| failed |" in row for row in rows)
    assert {"Train", "Runs", "TensorBoard", "Draw"} <= {label.split("**")[1] for label in shown.splitlines()
                                                        if label.startswith("**")}


def test_home_page_does_not_import_tensorflow(populated):
    probe = (
        "import json, os, sys\n"
        f"os.environ['HYBRID_LAB_RUNS'] = {str(populated.runs_dir)!r}\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"app = AppTest.from_file({HOME!r}, default_timeout=30).run()\n"
        "print(json.dumps({'exception': len(app.exception), 'metrics': len(app.metric),\n"
        "                  'heavy': [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"exception": 0, "metrics": 1, "heavy": []}


# --- Runs --------------------------------------------------------------------------------------------


def test_runs_table_lists_every_run_newest_first_and_flags_the_damaged_one(populated, monkeypatch):
    app = open_page("pages/2_Runs.py", populated.runs_dir, monkeypatch)

    table = app.dataframe[0].value
    assert list(table["run"]) == [run.run_id for run in list_runs(populated.runs_dir)]
    assert len(table) == 5
    damaged = table[table["run"] == populated.damaged.run_id].iloc[0]
    assert damaged["status"] == "damaged (unreadable)"
    assert "config.json is not readable JSON" in damaged["problem"] and "JSONDecodeError" in damaged["problem"]
    assert "1 run folder(s) cannot be read" in app.warning[0].value
    assert set(table.columns) >= {"started", "engine", "data", "architecture", "optimizer", "learning_rate",
                                  "batch_size", "steps", "status", "test_accuracy", "seconds", "problem"}


def test_runs_page_examines_the_run_in_the_address_on_its_test_set(populated, monkeypatch):
    run = populated.adam
    app = open_page("pages/2_Runs.py", populated.runs_dir, monkeypatch, run=run.run_id)

    assert_no_exception(app)
    shown = texts(app)
    assert f"Run `{run.run_id}`" in shown
    assert f"Test accuracy: {run.test_accuracy:.4f}" in shown
    assert "1,000 test images" in shown and "Misclassified test images" in shown
    assert len(app.get("plotly_chart")) == 4  # loss, test accuracy, confusion matrix, per-class accuracy
    downloads = {button.proto.label for button in app.get("download_button")}
    assert downloads == {"model.keras", "config.json", "Download as a script"}
    script = next(button for button in app.get("download_button") if button.proto.label == "Download as a script")
    assert "one Python file in the article's style" in script.proto.help


def test_runs_page_explains_a_diverged_and_a_failed_run_in_plain_words(populated, monkeypatch):
    diverged = open_page("pages/2_Runs.py", populated.runs_dir, monkeypatch, run=populated.diverged.run_id)
    failed = open_page("pages/2_Runs.py", populated.runs_dir, monkeypatch, run=populated.failed.run_id)

    assert "The loss blew up" in diverged.error[0].value and "smaller learning rate" in diverged.error[0].value
    assert "saved no model" in texts(diverged)
    message = failed.error[0].value
    assert message.startswith("Training failed:") and "missing.npz does not exist" in message
    assert "DatasetError" not in message and "Traceback" not in texts(failed)


def test_selecting_two_runs_overlays_them_and_lists_only_the_settings_that_differ(populated, monkeypatch):
    runs = list_runs(populated.runs_dir)
    app = open_page("pages/2_Runs.py", populated.runs_dir, monkeypatch)
    rows = [index for index, run in enumerate(runs) if run.run_id in (populated.completed.run_id,
                                                                       populated.adam.run_id)]
    app.session_state[f"runs_table_{page_texts.runs_signature(runs)}"] = {"selection": {"rows": rows, "columns": []}}
    app.run()

    assert_no_exception(app)
    assert "Settings that differ" in texts(app)
    differences = app.dataframe[1].value
    assert set(differences["field"]) == {"hidden_units", "optimizer", "learning_rate"}
    loss_chart = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert {trace.get("name") for trace in loss_chart["data"]} >= {populated.completed.run_id, populated.adam.run_id}
    assert app.selectbox(key="runs_examine").options == [run.run_id for run in runs if run.run_id in
                                                         (populated.completed.run_id, populated.adam.run_id)]


def select_runs(app: AppTest, runs_dir: Path, run_ids: list[str]) -> AppTest:
    """Tick these runs' rows in the Runs table, as a click does, and rerun."""
    runs = list_runs(runs_dir)
    rows = [index for index, run in enumerate(runs) if run.run_id in run_ids]
    app.session_state[f"runs_table_{page_texts.runs_signature(runs)}"] = {"selection": {"rows": rows, "columns": []}}
    return app.run()


def parallel_coordinates(app: AppTest) -> list[dict]:
    """The Parcoords traces of the page's Plotly charts."""
    return [trace for chart in app.get("plotly_chart") for trace in json.loads(chart.proto.spec)["data"]
            if trace["type"] == "parcoords"]


def plotly_numbers(values) -> list[float]:
    """A number array from a figure's JSON: a plain list, or Plotly's base64 {"dtype", "bdata"} form."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)


def test_two_selected_runs_plot_the_settings_that_differ_against_test_accuracy(populated, monkeypatch):
    app = open_page("pages/2_Runs.py", populated.runs_dir, monkeypatch)
    chosen = [populated.completed.run_id, populated.adam.run_id]

    select_runs(app, populated.runs_dir, chosen)

    assert_no_exception(app)
    assert "Settings against test accuracy" in texts(app)
    (chart,) = parallel_coordinates(app)
    axes = {axis["label"]: axis for axis in chart["dimensions"]}
    # Exactly the settings of the "Settings that differ" table (hidden units, optimizer, learning rate), in the
    # order of the settings, then test accuracy.
    assert set(app.dataframe[1].value["field"]) == {"hidden_units", "optimizer", "learning_rate"}
    assert list(axes) == ["Hidden layers", "Optimizer", "Learning rate (log)", "Test accuracy"]
    in_table_order = [run for run in list_runs(populated.runs_dir) if run.run_id in chosen]
    assert plotly_numbers(axes["Test accuracy"]["values"]) == pytest.approx(
        [run.test_accuracy for run in in_table_order])
    assert plotly_numbers(chart["line"]["color"]) == pytest.approx([run.test_accuracy for run in in_table_order])
    optimizers = [axes["Optimizer"]["ticktext"][int(value)] for value in plotly_numbers(axes["Optimizer"]["values"])]
    assert optimizers == [run.config.optimizer for run in in_table_order]
    layers = [axes["Hidden layers"]["ticktext"][int(value)]
              for value in plotly_numbers(axes["Hidden layers"]["values"])]
    assert layers == ["-".join(map(str, run.config.hidden_units)) for run in in_table_order]


def test_one_selected_run_has_no_parallel_coordinates_chart(populated, monkeypatch):
    app = open_page("pages/2_Runs.py", populated.runs_dir, monkeypatch, run=populated.adam.run_id)

    assert_no_exception(app)
    assert len(app.get("plotly_chart")) == 4  # the run's own charts only
    assert not parallel_coordinates(app)
    assert "Settings against test accuracy" not in texts(app)


def test_a_run_without_test_accuracy_leaves_too_few_runs_for_the_chart(populated, monkeypatch):
    app = open_page("pages/2_Runs.py", populated.runs_dir, monkeypatch)

    select_runs(app, populated.runs_dir, [populated.completed.run_id, populated.diverged.run_id])

    assert_no_exception(app)
    assert "Settings that differ" in texts(app)  # the diverged run has other settings
    assert not parallel_coordinates(app)
    assert "needs two runs that reached their test" in texts(app)


def test_deleting_a_run_asks_first_then_removes_its_folder(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    run = train(TINY, runs_dir)
    app = open_page("pages/2_Runs.py", runs_dir, monkeypatch, run=run.run_id)

    app.button(key="runs_delete").click().run()
    assert run.path.exists() and "cannot be undone" in texts(app)

    next(button for button in app.button if button.label == "Delete").click().run()

    assert not run.path.exists()
    assert_no_exception(app)
    assert "Train your first model" in texts(app)


# --- Train -------------------------------------------------------------------------------------------


def poll(app: AppTest, done, seconds: float = 60) -> AppTest:
    """Rerun the page until done(app) holds, as the browser's refresh does; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not done(app):
        assert time.monotonic() < deadline, f"gave up after {seconds} s; the page says:\n{texts(app)}"
        time.sleep(0.3)
        app.run()
    return app


def fill_tiny_form(app: AppTest, steps: int = TINY.steps) -> None:
    """Set the Train page's widgets to the tiny offline run: one layer of 16 units, evaluated every 10 steps."""
    app.slider(key="form_layer_count").set_value(len(TINY.hidden_units))
    app.select_slider(key="form_units_0").set_value(TINY.hidden_units[0])
    app.number_input(key="form_steps").set_value(steps)
    app.number_input(key="form_eval_every").set_value(TINY.eval_every)
    app.selectbox(key="form_source").set_value("offline")
    app.run()


def train_button(app: AppTest):
    return next(button for button in app.button if button.label == "Train")


def test_train_page_trains_a_tiny_configuration_through_its_widgets(service_runs, monkeypatch, loopback_visitor):
    runs_dir = service_runs
    app = open_page("pages/1_Train.py", runs_dir, monkeypatch)
    fill_tiny_form(app)

    train_button(app).click().run()
    poll(app, lambda page: "Test accuracy:" in texts(page), seconds=WARM_UP)

    assert_no_exception(app)
    run = load_run(app.query_params["run"], runs_dir)
    assert run.state == RunState.COMPLETED
    assert run.status.pid not in (None, os.getpid())  # trained by a worker process, not by the page's
    assert run.status.owner == OPERATOR.key  # the person at the machine, in personal mode
    assert (run.config.hidden_units, run.config.steps, run.config.eval_every) == (TINY.hidden_units, TINY.steps,
                                                                                  TINY.eval_every)
    assert f"Test accuracy: {run.test_accuracy:.4f}" in texts(app)
    assert f"{TINY.steps} steps in" in texts(app) and "steps/s" in texts(app)
    links = {link.proto.label: link.proto for link in app.get("page_link")}
    assert links["See this run in TensorBoard"].page == "TensorBoard"
    assert f"run={run.run_id}" in links["See this run in TensorBoard"].query_string
    assert f"run={run.run_id}" in links["Confusion matrix and mistakes"].query_string
    assert f"run={run.run_id}" in links["Draw a digit for this model"].query_string


def test_compare_engines_trains_both_engines_and_overlays_their_losses(service_runs, monkeypatch, loopback_visitor):
    runs_dir = service_runs
    app = open_page("pages/1_Train.py", runs_dir, monkeypatch)
    fill_tiny_form(app)

    next(button for button in app.button if button.label == "Compare engines").click().run()
    poll(app, lambda page: texts(page).count("Test accuracy:") >= 2, seconds=WARM_UP)

    assert_no_exception(app)
    run_ids = app.query_params["compare"].split(",")
    runs = [load_run(run_id, runs_dir) for run_id in run_ids]
    assert sorted(run.config.engine for run in runs) == ["function", "session"]
    assert all(run.state == RunState.COMPLETED and run.config.steps == TINY.steps for run in runs)
    shown = texts(app)
    assert "Engines compared" in shown
    for run in runs:
        assert f"Test accuracy: {run.test_accuracy:.4f}" in shown
    legend = {trace["name"] for chart in app.get("plotly_chart")
              for trace in json.loads(chart.proto.spec)["data"]}
    assert {"function engine", "session engine"} <= legend
    # A few steps on the plain graph with SGD: the two constructions give bit-identical losses.
    assert f"identical over all {TINY.steps} steps" in shown


def test_stop_ends_a_long_run_and_keeps_what_it_logged(service_runs, monkeypatch, loopback_visitor):
    runs_dir = service_runs
    app = open_page("pages/1_Train.py", runs_dir, monkeypatch)
    fill_tiny_form(app, steps=200_000)
    train_button(app).click().run()
    run_id = app.query_params["run"]
    # Past the queue and the worker's start-up: steps are being made.
    poll(app, lambda page: "steps/s" in texts(page), seconds=WARM_UP)

    app.button(key="train_stop").click().run()
    run = wait_until_finished(run_id, runs_dir, timeout=60)
    poll(app, lambda page: "Stopped at step" in texts(page))

    assert run.state == RunState.STOPPED
    assert 0 < run.step < 200_000
    assert len(run.read_metrics()["step"]) == run.step and run.has_model
    assert f"Stopped at step {run.step:,} of 200,000." in texts(app)


def test_a_run_that_ends_while_its_page_watches_shows_its_outcome_in_that_same_visit(tmp_path, monkeypatch):
    # Between two refreshes the page watches the run's status file (core.store.watch_run). The end is written
    # the moment the watch has taken its first look, after the page drew the bar: it is on the page when this
    # one visit is over, with no refresh of the fragment (which AppTest never makes). The progress fragment puts
    # it where the bar was, with no rerun of the whole page: the browser would show the answer only once it had
    # drawn the settings form and the charts again (issue 17). The rerun that stops the refreshing comes at a
    # later refresh, once the outcome has been on screen for a moment.
    run = make_run(tmp_path, state=RunState.RUNNING)  # its pid is this process: alive
    first_look = core.store._file_stamp

    def look_then_finish(path):
        stamp = first_look(path)
        monkeypatch.setattr(core.store, "_file_stamp", first_look)
        finish_now(run, test_accuracy=0.93)
        return stamp

    reruns, rerun = [], streamlit.rerun

    def counted_rerun(*args, **kwargs):
        reruns.append((args, kwargs))
        rerun(*args, **kwargs)

    monkeypatch.setattr(core.store, "_file_stamp", look_then_finish)
    monkeypatch.setattr(streamlit, "rerun", counted_rerun)
    app = open_page("pages/1_Train.py", tmp_path, monkeypatch, run=run.run_id)

    assert_no_exception(app)
    assert "Test accuracy: 0.9300" in texts(app)
    assert not app.progress
    assert reruns == []
    # The curves' fragment was drawn while the run had no steps; nothing under the outcome says they are to come.
    assert "loss curve appears" not in texts(app)


def test_until_its_first_steps_a_followed_run_says_its_curves_are_to_come(tmp_path, monkeypatch):
    run = make_run(tmp_path, state=RunState.RUNNING)  # its pid is this process: alive; no step yet
    app = open_page("pages/1_Train.py", tmp_path, monkeypatch, run=run.run_id)
    assert_no_exception(app)
    assert "The loss curve appears below with the first training steps." in texts(app)

    run.append_metrics([(step, 2.0, 0.1) for step in range(1, 11)])
    run.write_progress(10, run.config.steps, 500.0)
    app.run()

    assert_no_exception(app)
    assert app.progress and "Step 10 of" in texts(app)
    assert "loss curve appears" not in texts(app)


def test_a_reloaded_train_page_follows_its_run_and_shows_its_settings(populated, monkeypatch):
    app = open_page("pages/1_Train.py", populated.runs_dir, monkeypatch, run=populated.adam.run_id)

    assert_no_exception(app)
    assert f"Test accuracy: {populated.adam.test_accuracy:.4f}" in texts(app)
    assert app.selectbox(key="form_optimizer").value == "adam"
    assert app.select_slider(key="form_units_0").value == 32
    assert app.select_slider(key="form_learning_rate").value == 0.01


def test_train_page_explains_a_diverged_run_and_suggests_a_smaller_learning_rate(populated, monkeypatch):
    app = open_page("pages/1_Train.py", populated.runs_dir, monkeypatch, run=populated.diverged.run_id)

    assert "The loss blew up" in app.error[0].value and "smaller learning rate" in app.error[0].value


def test_an_unknown_run_in_the_address_is_a_warning_not_a_crash(populated, monkeypatch):
    app = open_page("pages/1_Train.py", populated.runs_dir, monkeypatch, run="20990101-000000-none")

    assert_no_exception(app)
    warning = app.warning[0].value
    assert "cannot be shown" in warning and "no run '20990101-000000-none'" in warning
    assert "run" not in app.query_params


def test_reset_restores_the_articles_settings(tmp_path, monkeypatch):
    app = open_page("pages/1_Train.py", tmp_path / "runs", monkeypatch)
    app.selectbox(key="form_optimizer").set_value("adam")
    app.select_slider(key="form_learning_rate").set_value(0.001)
    app.slider(key="form_layer_count").set_value(3)
    app.selectbox(key="form_xla").set_value("on")
    app.run()
    assert "784-128-128-128-10" in texts(app)

    next(button for button in app.button if button.label == "Reset to the article's settings").click().run()

    article = TrainConfig()
    assert app.selectbox(key="form_optimizer").value == article.optimizer
    assert app.select_slider(key="form_learning_rate").value == article.learning_rate
    assert app.slider(key="form_layer_count").value == len(article.hidden_units)
    assert app.selectbox(key="form_xla").value == "auto"
    assert "784-128-128-10" in texts(app)


def test_a_number_out_of_range_or_cleared_is_named_under_its_box_and_blocks_training(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    app = open_page("pages/1_Train.py", runs_dir, monkeypatch)

    app.number_input(key="form_steps").set_value(999_999).run()
    assert "Steps must be from 1 to 200,000; got 999,999." in [error.value for error in app.error]
    assert train_button(app).disabled

    app.number_input(key="form_steps").set_value(None).run()
    assert "Steps is empty: enter a value from 1 to 200,000." in [error.value for error in app.error]
    assert train_button(app).disabled
    assert_no_exception(app)
    assert list_runs(runs_dir) == []


def test_a_missing_data_path_is_refused_before_any_run_starts(tmp_path, monkeypatch, loopback_visitor, no_workers):
    runs_dir = tmp_path / "runs"
    app = open_page("pages/1_Train.py", runs_dir, monkeypatch)
    app.selectbox(key="form_source").set_value("path").run()
    app.text_input(key="form_data_path").input(str(tmp_path / "nowhere.npz")).run()

    train_button(app).click().run()

    assert any("nowhere.npz does not exist" in error.value for error in app.error)
    assert list_runs(runs_dir) == []


def test_train_submits_through_the_training_service(tmp_path, monkeypatch, loopback_visitor):
    """The page queues runs through core.service.submit (patched here: trained at once, in this process)."""
    runs_dir = tmp_path / "runs"
    submitted = []

    def train_here(config, runs_directory=None, *, identity, limits=True):
        submitted.append((config, runs_directory, identity, limits))
        return train(config, runs_directory)

    monkeypatch.setattr(core.service, "submit", train_here)
    app = open_page("pages/1_Train.py", runs_dir, monkeypatch)
    fill_tiny_form(app)

    train_button(app).click().run()

    assert_no_exception(app)
    # The person at the machine (personal mode: the operator), under the limits.
    assert submitted == [(TINY, runs_dir, OPERATOR, True)]
    run = load_run(app.query_params["run"], runs_dir)
    assert run.config == TINY and run.state is RunState.COMPLETED
    assert f"Test accuracy: {run.test_accuracy:.4f}" in texts(app)


def test_train_stays_enabled_while_a_run_waits_and_queues_another(tmp_path, monkeypatch, loopback_visitor,
                                                                    no_workers):
    runs_dir = tmp_path / "runs"
    waiting = create_run(TINY, runs_dir, state=RunState.QUEUED)
    app = open_page("pages/1_Train.py", runs_dir, monkeypatch, run=waiting.run_id)
    assert_no_exception(app)
    assert "Queued: 1st in the queue." in texts(app)
    assert not train_button(app).disabled
    assert "Queues another run" in train_button(app).help

    train_button(app).click().run()

    assert_no_exception(app)
    second = app.query_params["run"]
    assert second != waiting.run_id  # the tab follows the new run
    assert queue.queued_ids(runs_dir) == [waiting.run_id, second]
    assert load_run(second, runs_dir).config == TINY  # the settings shown were those of the followed run
    assert "Queued: 2nd in the queue." in texts(app)
    assert load_run(waiting.run_id, runs_dir).state is RunState.QUEUED  # the first one still waits


# --- a runs directory that cannot take a run, on every button that submits -------------------------------


def runs_dir_that_is_a_file(tmp_path: Path) -> Path:
    """HYBRID_LAB_RUNS naming a plain file: the store refuses to make a run there (RunStoreError)."""
    runs_dir = tmp_path / "runs"
    runs_dir.write_text("not a folder")
    return runs_dir


def runs_dir_where_no_worker_starts(tmp_path: Path) -> Path:
    """A usable runs directory whose workers' log folder is a file: runs are queued, then no worker can start."""
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (runs_dir / core.service.WORKERS_DIR).write_text("not a folder")
    return runs_dir


def press_queue_sweep(app: AppTest) -> None:
    app.selectbox(key="sweep_setting_0").set_value("learning_rate").run()
    app.text_input(key="sweep_values_0").input("0.1, 0.5").run()
    app.button(key="sweep_queue").click().run()


PRESSES = {
    "Train": lambda app: train_button(app).click().run(),
    "Compare engines": lambda app: next(button for button in app.button
                                        if button.label == "Compare engines").click().run(),
    "Queue sweep": press_queue_sweep,
}


@pytest.mark.parametrize("button", PRESSES)
@pytest.mark.parametrize(("broken", "cause"), [(runs_dir_that_is_a_file, "it is a file, not a folder"),
                                               (runs_dir_where_no_worker_starts, "File exists")])
def test_a_runs_directory_that_cannot_take_a_run_is_one_sentence_on_every_button(button, broken, cause, tmp_path,
                                                                                  monkeypatch, loopback_visitor):
    runs_dir = broken(tmp_path)
    app = open_page("pages/1_Train.py", runs_dir, monkeypatch)
    fill_tiny_form(app)

    PRESSES[button](app)

    assert_no_exception(app)
    (error,) = [element.value for element in app.error]
    assert cause in error and str(runs_dir) in error, error
    assert error.endswith(".") and "Traceback" not in error and "Errno" not in error, error
    assert "run" not in app.query_params and "compare" not in app.query_params and "sweep" not in app.query_params


# --- TensorBoard -------------------------------------------------------------------------------------


def asgi_get(app, path: str, query: str = "") -> tuple[int, bytes]:
    """One GET request through an ASGI app, as the app's server would pass it on; (status, body)."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query.encode(),
             "headers": [(b"host", b"127.0.0.1:8501")], "server": ("127.0.0.1", 8501), "client": ("127.0.0.1", 50000)}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(message.get("body", b"") for message in sent[1:])


def test_tensorboard_page_embeds_the_apps_tensorboard_and_links_one_run(populated, monkeypatch):
    run_id = populated.completed.run_id
    app = open_page("pages/3_TensorBoard.py", populated.runs_dir, monkeypatch, run=run_id)

    assert_no_exception(app)
    assert app.selectbox(key="run").value == run_id
    command = app.code[0].value
    assert command == f"tensorboard --logdir {populated.runs_dir.resolve()}"
    # Served by the app itself, under its own origin: a relative address that works from any browser.
    expected = f"/tensorboard/?runFilter=%5E{run_id}%24#timeseries"
    assert app.get("link_button")[0].proto.url == expected
    (frame,) = app.get("iframe")
    assert frame.proto.src == expected

    app.selectbox(key="run").set_value("All runs").run()

    assert app.get("link_button")[0].proto.url == "/tensorboard/#timeseries"
    assert app.get("iframe")[0].proto.src == "/tensorboard/#timeseries"


@pytest.fixture(scope="module")
def tensorboard_mount(populated):
    """The app's /tensorboard/ mount over the populated runs: one TensorBoard process for the module."""
    mount = tensorboard_server.TensorBoardMount(populated.runs_dir)
    yield mount
    mount.stop()


def test_the_apps_tensorboard_serves_the_runs_directory(populated, tensorboard_mount):
    mount = tensorboard_mount
    run_id = populated.completed.run_id
    deadline = time.monotonic() + 120
    status, body = asgi_get(mount, "/data/runs")
    while run_id not in json.loads(body or b"[]") and time.monotonic() < deadline:
        time.sleep(0.5)  # TensorBoard reads the logs on a thread of its own
        status, body = asgi_get(mount, "/data/runs")

    assert status == 200 and run_id in json.loads(body)
    status, body = asgi_get(mount, "/data/plugin/scalars/scalars", f"run={run_id}&tag=loss")
    assert status == 200
    losses = json.loads(body)  # [wall time, step, value] per point
    assert [step for _, step, _ in losses] == list(range(TINY.steps))
    assert [value for _, _, value in losses] == pytest.approx(populated.completed.read_metrics()["loss"], rel=1e-6)


def test_the_apps_tensorboard_names_the_runs_folder_but_never_where_the_server_keeps_it(populated,
                                                                                     tensorboard_mount):
    # The hostile sweep: /tensorboard/data/logdir (and /data/environment) gave any visitor the server's path.
    mount = tensorboard_mount
    where = str(populated.runs_dir.resolve()).encode()

    for route, key in (("/data/logdir", "logdir"), ("/data/environment", "data_location")):
        status, body = asgi_get(mount, route)

        assert status == 200, (route, body[:200])
        assert json.loads(body)[key] == populated.runs_dir.name, (route, body[:200])
        assert where not in body, route
    assert json.loads(asgi_get(mount, "/data/environment")[1])["window_title"] is not None  # the rest is kept


def test_the_apps_tensorboard_asks_for_its_fonts_under_its_own_mount(tensorboard_mount):
    """TensorBoard's page names its fonts from the root of the host (/font-roboto/...), where nobody serves them,
    least of all under a path prefix; the mount makes them relative to the page. (Served under a prefix, in a
    browser: test_browser_sharing.py.)"""
    mount = tensorboard_mount

    status, page = asgi_get(mount, "/")
    fonts = sorted(set(re.findall(rb"url\(([^)]+\.woff2)\)", page)))

    assert status == 200 and len(fonts) >= 10
    assert all(font.startswith(b"font-roboto/") for font in fonts), fonts[:3]
    status, font = asgi_get(mount, "/" + fonts[0].decode())
    assert status == 200 and font.startswith(b"wOF2")


def test_tensorboard_that_cannot_start_says_why_in_its_place(tmp_path, monkeypatch):
    (tmp_path / "a file").write_text("")
    mount = tensorboard_server.TensorBoardMount(tmp_path / "a file" / "runs")  # its process cannot make it

    status, body = asgi_get(mount, "/")

    # What the embedded frame shows instead of TensorBoard (its process's last words; the folder's name, not
    # where it is); the page keeps showing the command.
    assert (status, body.decode()) == (
        503, "TensorBoard could not start here: the runs folder 'runs' cannot be made (Not a directory)")
    app = open_page("pages/3_TensorBoard.py", tmp_path / "elsewhere", monkeypatch)
    assert_no_exception(app)
    assert app.code[0].value.startswith("tensorboard --logdir ")


def test_tensorboard_urls_filter_one_run_with_an_anchored_regex():
    url = tensorboard_server.dashboard_url("20260101-a.b")

    assert url == "/tensorboard/?runFilter=%5E20260101-a%5C.b%24#timeseries"
    assert tensorboard_server.dashboard_url() == "/tensorboard/#timeseries"
    assert tensorboard_server.dashboard_url("r", "http://127.0.0.1:6006") == (
        "http://127.0.0.1:6006/?runFilter=%5Er%24#timeseries")
    assert tensorboard_server.tensorboard_command(Path("/tmp/my runs")) == "tensorboard --logdir '/tmp/my runs'"


def test_the_served_config_gives_visitors_no_developer_toolbar():
    """What `streamlit run app.py` reads from .streamlit/config.toml: no Deploy, Rerun or Clear cache for visitors."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("STREAMLIT_")}
    shown = subprocess.run([sys.executable, "-c", "from streamlit import config; "
                            "print(config.get_option('client.toolbarMode'))"],
                           cwd=REPO_ROOT, env=environment, capture_output=True, text=True, check=True)

    assert shown.stdout.strip() == "viewer"


# --- what the pages say (ui.form, ui.texts) ----------------------------------------------------------


@pytest.mark.parametrize(("xla", "label"), [(None, "auto"), (True, "on"), (False, "off")])
def test_the_form_round_trips_the_xla_choice(xla, label):
    config = TrainConfig(xla=xla)
    values = form_values(config)

    assert values["form_xla"] == label
    assert config_from_form(values) == (config, {})
    assert config_from_form(values)[0].xla is xla


def test_the_form_round_trips_every_config_field():
    config = TrainConfig(hidden_units=[64, 32, 16], activation="tanh", dropout_rate=0.2, optimizer="rmsprop",
                         learning_rate=0.003, batch_size=128, steps=500, eval_every=50, seed=7,
                         dataset="fashion_mnist", source="keras", engine="session")
    values = form_values(config)

    assert (values["form_layer_count"], values["form_units_0"], values["form_units_2"], values["form_steps"]) == (
        3, 64, 16, 500)
    assert config_from_form(values) == (config, {})
    learning_rate = SETTINGS_BY_NAME["learning_rate"]
    assert 0.003 in stops_with(learning_rate, 0.003) and 0.003 not in learning_rate.stops
    assert 0.5 in learning_rate.stops


def test_the_learning_rate_slider_is_logarithmic_from_1e_5_to_10():
    rates = SETTINGS_BY_NAME["learning_rate"].stops

    assert rates[0] == 1e-5 and rates[-1] == 10.0 and list(rates) == sorted(rates)
    assert max(b / a for a, b in zip(rates, rates[1:])) <= 2.5


def test_metrics_follower_reads_only_complete_new_lines(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss,batch_accuracy\n0,2.3,0.1\n1,2.0,0.2\n2,1.")
    follower = CsvFollower(path, METRICS_FIELDS)

    assert follower.read()["step"] == [0, 1]
    with open(path, "a") as handle:
        handle.write("5,0.3\n3,1.2,0.5\n")

    assert follower.read() == {"step": [0, 1, 2, 3], "loss": [2.3, 2.0, 1.5, 1.2],
                               "batch_accuracy": [0.1, 0.2, 0.3, 0.5]}
    assert CsvFollower(tmp_path / "missing.csv", METRICS_FIELDS).read()["step"] == []


def test_progress_says_steps_speed_and_time_left(tmp_path):
    run = Run("r", tmp_path, TINY, Status(RunState.RUNNING, step=400, total_steps=1000, steps_per_second=200.0))

    view = page_texts.progress_view(run)

    assert view.fraction == pytest.approx(0.4)
    assert view.text == "Step 400 of 1,000 · 200 steps/s · about 3.0 s left"


def test_format_seconds_reads_like_a_person_would_say_it():
    assert [page_texts.format_seconds(s) for s in (0.84, 42, 185, 3720, None)] == [
        "0.8 s", "42 s", "3 min 05 s", "1 h 02 min", "—"]


def test_the_home_table_of_recent_runs_names_engine_and_accuracy(tmp_path):
    run = make_run(tmp_path, TrainConfig(engine="session", steps=300), test_accuracy=0.9123)

    table = page_texts.recent_runs_markdown([load_run(run.run_id, tmp_path)])
    header, rule, row = table.splitlines()
    assert header.split("|")[4].strip() == "Engine"
    assert "| completed | 0.9123 | session | 784-128-128-10 | sgd at 0.5 | 300 |" in row
