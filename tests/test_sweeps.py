"""Sweeps: values read the way each setting declares them, grids checked whole, queued whole or not at all."""

from __future__ import annotations

import pytest

from core import queue, service, sweeps

from core.records import RunState
from core.store import list_runs
from tests.factories import TINY


@pytest.fixture
def no_workers(monkeypatch):
    """Queue runs without starting worker processes."""
    monkeypatch.setattr(service, "ensure_pool", lambda runs_dir=None: None)


@pytest.mark.parametrize(("setting", "text", "expected"), [
    ("learning_rate", "0.05, 0.1 ,0.5", (0.05, 0.1, 0.5)),
    ("batch_size", "50,200", (50, 200)),
    ("optimizer", "sgd, Adam, rmsprop", ("sgd", "adam", "rmsprop")),
    ("optimizer", "SGD with momentum 0.9", ("momentum",)),  # a choice by its label
    ("xla", "auto, on, off", (None, True, False)),
    ("hidden_units", "128-128, 64, 256x32", ([128, 128], [64], [256, 32])),
    ("learning_rate", "0.1, 0.1, 0.5", (0.1, 0.5)),  # repeats count once
])
def test_values_are_read_as_the_setting_declares_them(setting, text, expected):
    assert sweeps.parse_axis(setting, text).values == expected


@pytest.mark.parametrize(("setting", "text", "named"), [
    ("learning_rate", "0.1, fast", "'fast' is not a number"),
    ("learning_rate", "0.1, 20", "learning_rate must be from 1e-05 to 10; got 20"),
    ("batch_size", "50, 2.5", "not a whole number"),
    ("optimizer", "sgd, lbfgs", "'lbfgs' is not one of"),
    ("hidden_units", "128-8", "hidden_units[1] must be"),
    ("learning_rate", " , ", "at least one value"),
    ("data_path", "/etc", "a sweep varies one of"),
    ("colour", "red", "a sweep varies one of"),
])
def test_a_bad_value_is_refused_naming_the_setting_and_the_value(setting, text, named):
    with pytest.raises(ValueError) as raised:
        sweeps.parse_axis(setting, text)

    assert named in str(raised.value)


def test_the_grid_is_every_combination_with_the_first_axis_slowest():
    axes = [sweeps.parse_axis("learning_rate", "0.1, 0.5"), sweeps.parse_axis("batch_size", "20, 50")]

    configs = sweeps.grid(TINY, axes)

    assert [(c.learning_rate, c.batch_size) for c in configs] == [(0.1, 20), (0.1, 50), (0.5, 20), (0.5, 50)]
    assert all(c.replace(learning_rate=TINY.learning_rate, batch_size=TINY.batch_size) == TINY for c in configs)


def test_grids_that_are_too_big_or_vary_one_setting_twice_are_refused():
    big = [sweeps.parse_axis("seed", ",".join(map(str, range(5)))), sweeps.parse_axis("batch_size", "1,2,3,4")]
    twice = [sweeps.parse_axis("seed", "1,2"), sweeps.parse_axis("seed", "3,4")]

    with pytest.raises(ValueError, match="20 runs; at most 16"):
        sweeps.grid(TINY, big)
    with pytest.raises(ValueError, match="given twice"):
        sweeps.grid(TINY, twice)
    with pytest.raises(ValueError, match="1 or 2 settings"):
        sweeps.grid(TINY, [])


def test_a_combination_the_settings_forbid_is_refused_before_anything_is_queued(tmp_path, no_workers):
    axes = [sweeps.parse_axis("engine", "function, session"), sweeps.parse_axis("xla", "on")]

    with pytest.raises(ValueError, match="xla=True is a function-engine option"):
        service.submit_sweep(TINY, axes, tmp_path)

    assert list_runs(tmp_path) == []


def test_a_sweep_is_queued_whole_under_one_name(tmp_path, no_workers):
    axes = [sweeps.parse_axis("learning_rate", "0.1, 0.5"), sweeps.parse_axis("batch_size", "20, 50")]

    name, runs = service.submit_sweep(TINY, axes, tmp_path, visitor="a")

    assert len(runs) == 4 and len({run.run_id for run in runs}) == 4
    assert queue.queued_ids(tmp_path) == [run.run_id for run in runs]  # in grid order
    found = sweeps.sweep_runs(name, tmp_path)
    assert [run.run_id for run in found] == [run.run_id for run in runs]
    assert all(run.state is RunState.QUEUED and run.status.sweep == name for run in found)
    other, _ = service.submit_sweep(TINY, axes[:1], tmp_path, visitor="a")
    assert other != name and len(sweeps.sweep_runs(other, tmp_path)) == 2


def test_a_sweep_over_the_visitors_limit_is_refused_whole(tmp_path, no_workers, monkeypatch):
    monkeypatch.setenv("HYBRID_LAB_QUEUE_LIMIT", "5")
    service.submit(TINY, tmp_path, visitor="a")
    axes = [sweeps.parse_axis("learning_rate", "0.1, 0.5"), sweeps.parse_axis("batch_size", "20, 50, 100")]

    with pytest.raises(service.SubmissionRefused, match="this asks for 6 more"):
        service.submit_sweep(TINY, axes, tmp_path, visitor="a")

    assert len(list_runs(tmp_path)) == 1  # not a single run of the sweep was queued


def test_the_cli_flag_takes_the_setting_by_flag_or_by_name():
    assert sweeps.parse_flag("--learning-rate=0.1,0.2") == sweeps.Axis("learning_rate", (0.1, 0.2))
    assert sweeps.parse_flag("batch_size=8") == sweeps.Axis("batch_size", (8,))
    with pytest.raises(ValueError, match="SETTING=VALUE"):
        sweeps.parse_flag("learning_rate")


def test_sweep_names_differ_and_say_when():
    first, second = sweeps.new_sweep_name(), sweeps.new_sweep_name()

    assert first != second and first.startswith("sweep-20")


def test_the_train_page_follows_a_sweep_to_its_table_and_chart(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.factories import make_run

    name = sweeps.new_sweep_name()
    for rate, accuracy in ((0.1, 0.8), (0.5, 0.9)):
        make_run(tmp_path, TINY.replace(learning_rate=rate), test_accuracy=accuracy, sweep=name)
    monkeypatch.setenv("HYBRID_LAB_RUNS", str(tmp_path))
    app = AppTest.from_file("../Home.py", default_timeout=60)
    app.switch_page("pages/1_Train.py")
    app.query_params["sweep"] = name
    app.run()

    assert not app.exception
    assert f"Sweep `{name}`" in [header.value for header in app.subheader]
    assert "2 runs: 2 done, 0 training, 0 queued" in [bar.text for bar in app.get("progress")][0]
    table = app.dataframe[0].value
    assert list(table["learning_rate"]) == [0.1, 0.5] and list(table["test_accuracy"]) == [0.8, 0.9]
    assert any("parcoords" in chart.proto.spec for chart in app.get("plotly_chart"))
