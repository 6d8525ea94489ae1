"""Tests for core.run_folder and core.run_files: one run's files, written by the trainer and read by everyone,
atomically and while they grow."""

from __future__ import annotations

import errno
import json
import os
import threading
from datetime import datetime, timedelta

import pytest

import core.run_files
from core.records import CONFIG_FILE, METRICS_FILE, RESERVE_FILE, STATUS_FILE, SUMMARY_FILE, RunFormatError, RunState
from core.run_files import CsvFollower, write_json_atomic
from core.store import create_run, load_run
from tests.factories import TINY, finished_summary, make_run, rewrite_json

METRICS_HEADER = "step,loss,batch_accuracy"


# --- metrics being written ------------------------------------------------------------------------


@pytest.mark.parametrize("being_written, complete_steps", [
    pytest.param("", [], id="empty"),
    pytest.param("step,lo", [], id="half-a-header"),
    pytest.param(METRICS_HEADER + "\r\n", [], id="header-only"),
    pytest.param(METRICS_HEADER + "\r\n0,2.3,0.1\r\n1,2.2,0.2\r\n2,2.1", [0, 1], id="half-a-row"),
    pytest.param(METRICS_HEADER + "\r\n0,2.3,0.1\r\n1,2.2,0.2\r", [0], id="row-without-its-newline"),  # \r, no \n yet
])
def test_metrics_being_written_are_not_damage(tmp_path, being_written, complete_steps):
    run = make_run(tmp_path, state=RunState.RUNNING)
    (run.path / METRICS_FILE).write_text(being_written, newline="")

    reread = load_run(run.run_id, tmp_path)

    assert reread.damaged is None and reread.state is RunState.RUNNING
    assert reread.read_metrics()["step"] == complete_steps


def test_csv_follower_reads_only_complete_rows_and_then_the_rows_added_since(tmp_path):
    run = make_run(tmp_path, state=RunState.RUNNING)
    follower = run.follow_metrics()
    assert isinstance(follower, CsvFollower)
    assert follower.read() == {"step": [], "loss": [], "batch_accuracy": []}  # no metrics.csv yet

    run.append_metrics([(0, 2.3, 0.1), (1, 2.2, 0.2)])
    with open(run.path / METRICS_FILE, "a", newline="") as handle:
        handle.write("2,2.1")  # the trainer is writing this row right now
    first = {name: list(values) for name, values in follower.read().items()}
    with open(run.path / METRICS_FILE, "a", newline="") as handle:
        handle.write(",0.3\r\n")  # ... and has finished it
    run.append_metrics([(3, 2.0, 0.4)])
    second = follower.read()

    assert first == {"step": [0, 1], "loss": [2.3, 2.2], "batch_accuracy": [0.1, 0.2]}
    assert second == {"step": [0, 1, 2, 3], "loss": [2.3, 2.2, 2.1, 2.0], "batch_accuracy": [0.1, 0.2, 0.3, 0.4]}
    assert follower.read()["step"] == [0, 1, 2, 3]  # nothing new: nothing added twice


# --- status -------------------------------------------------------------------------------------------


def test_status_is_written_atomically_while_someone_reads_it(tmp_path):
    run = create_run(TINY, tmp_path)
    status_file = run.path / STATUS_FILE
    done = threading.Event()

    def keep_writing():
        for step in range(400):
            run.write_progress(step, 400, steps_per_second=123.0)
        done.set()

    writer = threading.Thread(target=keep_writing)
    writer.start()
    reads, broken = 0, []
    while not done.is_set():
        text = status_file.read_text()
        reads += 1
        try:
            json.loads(text)
        except ValueError:
            broken.append(text)
    writer.join()

    assert reads > 5
    assert broken == []
    assert json.loads(status_file.read_text())["step"] == 399
    # No temp files left behind (the space a running run keeps aside, RESERVE_FILE, is no temp file).
    leftovers = sorted(p.name for p in run.path.iterdir() if p.name not in (CONFIG_FILE, STATUS_FILE, RESERVE_FILE))
    assert leftovers == []


def test_write_json_atomic_leaves_no_temp_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / STATUS_FILE
    target.write_text('{"status": "running"}')
    seen = []

    def failing_replace(source, destination):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(core.run_files.os, "replace", failing_replace)

    with pytest.raises(OSError):
        write_json_atomic(target, {"status": "completed"})

    assert len(seen) == 1 and any(name.endswith(".tmp") for name in seen[0])  # there was a temp file ...
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_FILE]  # ... and it is gone
    assert json.loads(target.read_text()) == {"status": "running"}


def test_write_status_keeps_start_time_and_progress(tmp_path):
    run = create_run(TINY, tmp_path)
    started_at = run.status.started_at

    run.write_progress(20, TINY.steps, 456.0)
    run.write_status(RunState.COMPLETED, "test accuracy 0.5000 after 35 steps", step=TINY.steps)

    status = load_run(run.run_id, tmp_path).status
    assert status.state is RunState.COMPLETED
    assert status.started_at == started_at
    assert status.steps_per_second == 456.0 and status.step == TINY.steps
    assert status.finished_at
    assert status.message == "test accuracy 0.5000 after 35 steps"


def test_seconds_of_finished_and_running_runs(tmp_path):
    finished = make_run(tmp_path)
    failed = make_run(tmp_path, state=RunState.FAILED, message="boom")
    (failed.path / SUMMARY_FILE).unlink()
    running = make_run(tmp_path, state=RunState.RUNNING)
    started = datetime.fromisoformat(running.status.started_at)

    assert load_run(finished.run_id, tmp_path).seconds() == finished_summary(TINY).seconds
    reread = load_run(failed.run_id, tmp_path)
    ended = datetime.fromisoformat(reread.status.finished_at) - datetime.fromisoformat(reread.status.started_at)
    assert reread.seconds() == ended.total_seconds()
    assert load_run(running.run_id, tmp_path).seconds(now=started + timedelta(seconds=7)) == 7.0


def test_seconds_of_a_run_with_a_time_zone_in_its_status_does_not_raise(tmp_path):
    run = make_run(tmp_path, state=RunState.FAILED, message="boom")
    (run.path / SUMMARY_FILE).unlink()
    rewrite_json(run.path / STATUS_FILE, lambda values: {**values, "started_at": "2024-01-01T00:00:00+00:00"})

    reread = load_run(run.run_id, tmp_path)

    # Either the store calls the time damage, or it can tell how long the run took (the Runs table asks).
    assert reread.damaged or reread.seconds() is not None


# --- metrics and evaluations -----------------------------------------------------------------------


def test_metrics_and_evaluations_round_trip(tmp_path):
    run = make_run(tmp_path, state=RunState.RUNNING)
    assert run.read_metrics() == {"step": [], "loss": [], "batch_accuracy": []}

    run.append_metrics([(0, 2.30, 0.10), (1, 2.10, 0.20)])
    run.append_metrics([(2, 1.90, 0.35)])
    run.append_evaluation(10, 0.75, 0.8125)
    run.append_evaluation(20, 0.5, 0.875)

    reread = load_run(run.run_id, tmp_path)
    assert reread.damaged is None
    assert reread.read_metrics() == {"step": [0, 1, 2], "loss": [2.30, 2.10, 1.90],
                                     "batch_accuracy": [0.10, 0.20, 0.35]}
    assert run.read_evaluations() == {"step": [10, 20], "test_loss": [0.75, 0.5], "test_accuracy": [0.8125, 0.875]}
    assert (run.path / METRICS_FILE).read_text().splitlines()[0] == METRICS_HEADER


def test_metrics_keep_full_float_precision(tmp_path):
    run = make_run(tmp_path, state=RunState.RUNNING)
    loss = 2.302585092994046

    run.append_metrics([(0, loss, 1 / 3)])

    assert run.read_metrics()["loss"] == [loss]
    assert run.read_metrics()["batch_accuracy"] == [1 / 3]


# --- stopping ------------------------------------------------------------------------------------------


def test_request_stop_is_seen_through_the_folder(tmp_path):
    run = make_run(tmp_path, state=RunState.RUNNING)
    other_view = load_run(run.run_id, tmp_path)  # e.g. the training thread's own Run object
    assert not run.stop_requested() and not other_view.stop_requested()

    run.request_stop()

    assert other_view.stop_requested()
    assert load_run(run.run_id, tmp_path).stop_requested()


# --- downloads never follow a link out of the folder ---------------------------------------------------


def test_a_model_that_is_a_link_to_a_file_of_the_server_is_neither_offered_nor_read(tmp_path):
    # The hostile sweep: model.keras -> /etc/passwd was served to a remote visitor as "model.keras".
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    run = make_run(tmp_path / "runs", model=True)
    run.model_path.unlink()
    run.model_path.symlink_to(secret)

    reread = load_run(run.run_id, tmp_path / "runs")

    assert not reread.has_model
    assert reread.damaged == "model.keras is a link, not a file this store wrote"
    with pytest.raises(RunFormatError, match="model.keras is a link"):
        reread.model_bytes()


def test_a_config_that_is_a_link_is_neither_offered_nor_read(tmp_path):
    # A damaged run's config.json is still offered for download, to look at: never through a link.
    run = make_run(tmp_path / "runs")
    outside = tmp_path / "config-elsewhere.json"
    outside.write_bytes(run.config_path.read_bytes())  # a perfectly good config: only the link is wrong
    run.config_path.unlink()
    run.config_path.symlink_to(outside)

    reread = load_run(run.run_id, tmp_path / "runs")

    assert reread.damaged == "config.json is a link, not a file this store wrote"
    assert not reread.has_config
    with pytest.raises(RunFormatError, match="config.json is a link"):
        reread.config_bytes()


def test_a_link_swapped_in_after_the_check_is_refused_by_the_open(tmp_path, monkeypatch):
    # Between has_model (when the page drew the button) and the click, the file can change: the open itself
    # must refuse to follow a link (O_NOFOLLOW), not only the check before it.
    secret = tmp_path / "secret.txt"
    secret.write_text("the server's secret")
    run = make_run(tmp_path / "runs", model=True)
    assert run.has_model and run.model_bytes() == b"placeholder: not a Keras file"
    run.model_path.unlink()
    run.model_path.symlink_to(secret)
    monkeypatch.setattr(core.run_files, "is_regular_file", lambda path: True)  # the check saw a file

    with pytest.raises(RunFormatError, match="cannot be read"):
        run.model_bytes()


def test_a_fifo_in_place_of_the_model_does_not_hang_the_reader(tmp_path, monkeypatch):
    run = make_run(tmp_path / "runs", model=True)
    run.model_path.unlink()
    os.mkfifo(run.model_path)
    monkeypatch.setattr(core.run_files, "is_regular_file", lambda path: True)

    with pytest.raises(RunFormatError, match="model.keras is not a file"):
        run.model_bytes()


def test_a_runs_own_files_are_read_as_written(tmp_path):
    run = make_run(tmp_path, model=True)

    assert run.has_model and run.has_config
    assert run.model_bytes() == b"placeholder: not a Keras file"
    assert json.loads(run.config_bytes()) == json.loads(run.config_path.read_text())
