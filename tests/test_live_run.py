"""Tests for ui.live_run: the Train page's view of a run redraws only what changed (the curves when there are new
rows, the weights picture when there is a new evaluation), with at most charts.MAX_POINTS points a trace."""

from __future__ import annotations

import time

import numpy as np
import pytest
import streamlit.runtime.context
from streamlit.testing.v1 import AppTest

import core.service

from core.records import RunState
from ui import charts, live_run
from tests.factories import make_run
from tests.test_following_a_run import auto_reruns  # noqa: F401 (a fixture)
from tests.apptest_support import HOME, TIMEOUT


def view_script(run_path: str) -> None:
    """A page that shows one run's live view, and what the view kept."""
    from pathlib import Path

    import streamlit as st

    from core.run_folder import read_folder
    from ui import live_run

    run = read_folder(Path(run_path))
    if st.session_state.get("outcome sent"):
        live_run.outcome_shown(run.run_id)
    live_run.show_curves(run, live=True)
    view = st.session_state[live_run.STATE_KEY]
    st.session_state["seen"] = (view.figure_builds, view.weights_version, view.weights)


@pytest.fixture
def finished_run(tmp_path):
    run = make_run(tmp_path, state=RunState.COMPLETED)
    run.append_metrics([(step, 1.0 / step, 0.5) for step in range(1, 5001)])
    run.append_evaluation(5000, 0.3, 0.9)
    run.write_first_layer(np.linspace(-1, 1, 16 * 28 * 28, dtype=np.float32).reshape(16, 28, 28))
    return run


def open_view(run) -> AppTest:
    app = AppTest.from_function(view_script, args=(str(run.path),), default_timeout=60)
    return app.run()


def test_a_redraw_with_nothing_new_builds_no_figure_and_no_picture(finished_run):
    app = open_view(finished_run)
    builds, version, picture = app.session_state["seen"]
    assert builds == 1 and version is not None and picture
    assert len(app.get("image")) == 1  # the weights, one picture
    app.run()
    assert app.session_state["seen"] == (1, version, picture)
    assert len(app.get("image")) == 1 and len(app.get("plotly_chart")) == 2  # shown again, each chart once


def test_a_new_evaluation_makes_a_new_picture_and_new_rows_new_curves_once_the_outcome_is_sent(
        finished_run, monkeypatch):
    monkeypatch.setattr(live_run, "OUTCOME_FIRST_SECONDS", 0.0)
    app = open_view(finished_run)
    _, version, picture = app.session_state["seen"]
    finished_run.append_metrics([(5001, 0.1, 0.9)])
    finished_run.write_first_layer(np.ones((16, 28, 28), np.float32))
    app.run()
    builds, new_version, new_picture = app.session_state["seen"]
    assert builds == 1 and new_version != version and new_picture != picture  # the curves wait for the outcome
    app.session_state["outcome sent"] = True
    app.run()
    assert app.session_state["seen"][0] == 2


def test_curves_of_5000_steps_send_at_most_1000_points_a_trace(finished_run):
    app = open_view(finished_run)
    figure = app.session_state["train_live_view"].figures[0]
    assert max(len(trace.x) for trace in figure.data) <= charts.MAX_POINTS + 1 <= 1001


def open_train_page(runs_dir, run_id: str, monkeypatch) -> AppTest:
    """The Train page following `run_id`, as a loopback visitor opens it."""
    monkeypatch.setenv("HYBRID_LAB_RUNS", str(runs_dir))
    monkeypatch.setattr(streamlit.runtime.context, "_get_client_context", lambda: None)
    monkeypatch.setattr(core.service, "ensure_pool", lambda runs_dir=None: None)
    app = AppTest.from_file(HOME, default_timeout=TIMEOUT)
    app.switch_page("pages/1_Train.py")
    app.query_params["run"] = run_id
    return app.run()


def test_the_train_page_on_a_finished_run_shows_its_outcome_and_refreshes_nothing(tmp_path, monkeypatch,
                                                                                 auto_reruns):
    # Fragments that kept refreshing after a run ended lost the next press of Train (issue 17): none here.
    run = make_run(tmp_path, test_accuracy=0.9123)
    run.append_metrics([(step, 1.0 / step, 0.5) for step in range(1, 36)])
    app = open_train_page(tmp_path, run.run_id, monkeypatch)
    assert "Test accuracy: 0.9123" in [element.value for element in app.success]
    assert len(app.get("plotly_chart")) == 2 and auto_reruns == []


def test_the_train_page_on_a_training_run_refreshes_its_progress_and_its_curves(tmp_path, monkeypatch, auto_reruns):
    run = make_run(tmp_path, state=RunState.RUNNING)  # trained by this process, which is alive
    run.append_metrics([(step, 1.0 / step, 0.5) for step in range(1, 11)])
    app = open_train_page(tmp_path, run.run_id, monkeypatch)
    assert len(app.get("plotly_chart")) == 2
    assert len(set(auto_reruns)) == 2  # the progress and the curves, each a fragment on its own timer


def outcome_script() -> None:
    """A page that sends a run's outcome on every visit, as the Train page's refreshes do once the run has ended."""
    import streamlit as st

    from ui import live_run

    live_run.outcome_shown("a-run")
    st.session_state["on screen"] = live_run.outcome_on_screen("a-run")


def test_an_outcome_is_on_screen_from_its_first_sending_not_its_last():
    # Each refresh after a run's end sends its outcome again. Were each sending to restart the clock, the Train
    # page would never rerun as a whole and its fragments would refresh for ever (issue 17).
    app = AppTest.from_function(outcome_script, default_timeout=60).run()
    assert app.session_state["on screen"] is False
    time.sleep(live_run.OUTCOME_FIRST_SECONDS)
    app.run()
    assert app.session_state["on screen"] is True
