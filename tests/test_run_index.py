"""Tests for core.run_index: a page's list of runs costs what changed, not what the runs directory holds. Folders
are made through the run store in tmp_path; the files the index opens are recorded."""

from __future__ import annotations

import builtins
import io
import os
import shutil
from pathlib import Path

import pytest

from core.records import EVALUATIONS_FILE, METRICS_FILE, MODEL_FILE, STATUS_FILE, SUMMARY_FILE, RunState
from core.run_index import RunIndex
from core.store import list_runs
from tests.factories import dead_pid, make_run, rewrite_json


@pytest.fixture
def opened(monkeypatch) -> list[Path]:
    """Every file opened from now on (by open, io.open or os.open), as it was named."""
    paths: list[Path] = []
    real_open, real_io_open, real_os_open = builtins.open, io.open, os.open

    def recording(real):
        def wrapper(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)):
                paths.append(Path(file))
            return real(file, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(builtins, "open", recording(real_open))
    monkeypatch.setattr(io, "open", recording(real_io_open))
    monkeypatch.setattr(os, "open", recording(real_os_open))
    return paths


def fill_with_metrics(run) -> None:
    """A finished run's logs as the trainer leaves them: metrics, evaluations and a model file."""
    run.append_metrics([(step, 0.5, 0.9) for step in range(1, 201)])
    run.append_evaluation(200, 0.3, 0.9)
    run.model_path.write_bytes(b"placeholder: not a Keras file")


def summary(run_id: str, runs: list) -> tuple:
    """What a page shows of a listed run."""
    run = next(run for run in runs if run.run_id == run_id)
    return run.state, run.test_accuracy, run.damaged


def test_listing_fifty_runs_opens_no_model_and_no_metrics_rows_and_a_relist_opens_nothing(tmp_path, opened):
    for _ in range(50):
        fill_with_metrics(make_run(tmp_path))
    index = RunIndex(tmp_path)
    opened.clear()
    runs = index.runs()
    assert len(runs) == 50 and all(run.state is RunState.COMPLETED for run in runs)
    assert not [path for path in opened if path.name == MODEL_FILE]
    # metrics.csv and evaluations.csv are opened only for their header (damage), once per folder, never read whole
    assert sum(path.name == METRICS_FILE for path in opened) == 50
    opened.clear()
    assert [run.run_id for run in index.runs()] == [run.run_id for run in runs]
    assert opened == []  # nothing changed: stats only
    assert index.folders_read == 50


def test_a_changed_run_is_the_only_folder_read_again(tmp_path, opened):
    runs = [make_run(tmp_path) for _ in range(5)]
    index = RunIndex(tmp_path)
    index.runs()
    rewrite_json(runs[2].path / SUMMARY_FILE, lambda values: {**values, "test_accuracy": 0.5})
    opened.clear()
    listed = index.runs()
    assert summary(runs[2].run_id, listed) == (RunState.COMPLETED, 0.5, None)
    assert {path.parent.name for path in opened} == {runs[2].run_id}
    assert index.folders_read == 6


def test_the_index_picks_up_new_changed_damaged_and_deleted_folders(tmp_path):
    first, second = make_run(tmp_path), make_run(tmp_path)
    index = RunIndex(tmp_path)
    assert {run.run_id for run in index.runs()} == {first.run_id, second.run_id}
    third = make_run(tmp_path, test_accuracy=0.7)
    assert summary(third.run_id, index.runs()) == (RunState.COMPLETED, 0.7, None)
    first.write_status(RunState.FAILED, "out of memory")  # atomically replaced, as the trainer writes
    (second.path / STATUS_FILE).write_text("{not json")  # rewritten in place, as a hand edit would
    listed = index.runs()
    assert summary(first.run_id, listed)[0] is RunState.FAILED
    damaged = next(run for run in listed if run.run_id == second.run_id)
    assert damaged.state is RunState.DAMAGED and STATUS_FILE in damaged.damaged
    shutil.rmtree(third.path)
    assert {run.run_id for run in index.runs()} == {first.run_id, second.run_id}
    # the same answer as reading every folder, in the same order
    assert [(run.run_id, run.state, run.damaged) for run in index.runs()] == \
        [(run.run_id, run.state, run.damaged) for run in list_runs(tmp_path)]


def test_a_running_run_is_read_at_every_look_and_its_dead_trainer_is_seen(tmp_path):
    run = make_run(tmp_path, state=RunState.RUNNING)
    index = RunIndex(tmp_path)
    assert index.runs()[0].state is RunState.RUNNING
    run.append_metrics([(1, 0.5, 0.9)])  # progress that changes no record the key watches
    run.write_progress(1, 35, 10.0)
    assert index.runs()[0].step == 1
    run.write_status(RunState.RUNNING, "training", pid=dead_pid())
    assert index.runs()[0].state is RunState.INTERRUPTED
    assert index.folders_read == 3


def test_a_garbage_csv_written_before_the_first_look_makes_the_run_damaged(tmp_path):
    run = make_run(tmp_path)
    (run.path / EVALUATIONS_FILE).write_bytes(b"\x00\x01garbage")
    (listed,) = RunIndex(tmp_path).runs()
    assert listed.state is RunState.DAMAGED and EVALUATIONS_FILE in listed.damaged


def test_a_listed_run_changed_by_a_caller_leaves_the_index_as_the_folder_says(tmp_path):
    make_run(tmp_path)
    index = RunIndex(tmp_path)
    index.runs()[0].summary = None
    assert index.runs()[0].test_accuracy == 0.9


def test_no_runs_directory_lists_nothing(tmp_path):
    assert RunIndex(tmp_path / "missing").runs() == []
