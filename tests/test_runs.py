"""Tests for core.runs: the run folder is the truth, so these write folders in tmp_path and read them back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import core.runs
from core.config import TrainConfig
from core.runs import (
    Run,
    RunNotFound,
    best_run,
    create_run,
    default_runs_dir,
    delete_run,
    list_runs,
    load_run,
    wait_for,
)

TINY = TrainConfig(steps=30, eval_every=10, hidden_units=[16], source="offline")


@pytest.fixture
def ticking_clock(monkeypatch):
    """Make core.runs see a clock that moves one second per reading, so run ids differ in their stamps."""
    start = datetime(2024, 5, 1, 12, 0, 0)
    readings = iter(range(10_000))

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return start + timedelta(seconds=next(readings))

    monkeypatch.setattr(core.runs, "datetime", Clock)


def dead_pid() -> int:
    """The id of a process that has just ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def fake_run(runs_dir: Path, run_id: str, status: str, test_accuracy: float | None = None, model: bool = True,
             dataset: str = "mnist") -> Path:
    """A run folder written by hand, as a finished (or running) training would leave it."""
    path = runs_dir / run_id
    path.mkdir(parents=True)
    TINY.replace(dataset=dataset).save(path / "config.json")
    (path / "status.json").write_text(json.dumps({"status": status, "message": "", "pid": os.getpid()}))
    if test_accuracy is not None:
        (path / "summary.json").write_text(json.dumps({"test_accuracy": test_accuracy, "steps": 30}))
    if model:
        (path / "model.keras").write_bytes(b"placeholder: best_run only checks that the file exists")
    return path


# --- creating and listing ------------------------------------------------------------------------


def test_create_run_writes_config_and_a_running_status(tmp_path):
    run = create_run(TINY, tmp_path)

    assert run.path == tmp_path / run.run_id and run.path.is_dir()
    assert TrainConfig.load(run.path / "config.json") == TINY
    status = json.loads((run.path / "status.json").read_text())
    assert status["status"] == "running"
    assert status["pid"] == os.getpid()
    assert status["step"] == 0 and status["total_steps"] == 30
    assert status["started_at"]
    assert "func-sgd-16" in run.run_id  # the id says what the run is, for a folder listing

    again = load_run(run.run_id, tmp_path)
    assert again.state == "running" and again.config == TINY and again.summary is None


def test_list_runs_is_newest_first(tmp_path, ticking_clock):
    created = [create_run(TINY.replace(seed=seed), tmp_path).run_id for seed in range(4)]

    listed = [run.run_id for run in list_runs(tmp_path)]

    assert listed == created[::-1]


def test_list_runs_is_newest_first_within_one_second(tmp_path, monkeypatch):
    # Tokens that sort against creation order (as random ones do half of the time).
    tokens = iter(["ffff", "eeee", "0000", "1111"])
    monkeypatch.setattr(core.runs.secrets, "token_hex", lambda nbytes=None: next(tokens, "abcdef"))
    frozen = datetime(2024, 5, 1, 12, 0, 0)

    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return frozen

    monkeypatch.setattr(core.runs, "datetime", FrozenClock)
    first = create_run(TINY, tmp_path).run_id
    second = create_run(TINY, tmp_path).run_id

    assert [run.run_id for run in list_runs(tmp_path)] == [second, first]


def test_list_runs_of_a_missing_folder_is_empty(tmp_path):
    assert list_runs(tmp_path / "never-made") == []


def test_default_runs_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HYBRID_LAB_RUNS", str(tmp_path / "elsewhere"))
    assert default_runs_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("HYBRID_LAB_RUNS")
    assert default_runs_dir() == Path("runs")


# --- damaged folders -------------------------------------------------------------------------------


def test_damaged_folders_are_listed_as_damaged_not_raised(tmp_path):
    good = create_run(TINY, tmp_path)
    good.write_status("completed", "fine")
    no_config = fake_run(tmp_path, "20240101-000001-aaaa-no-config", "completed", 0.9)
    (no_config / "config.json").unlink()
    garbage_status = fake_run(tmp_path, "20240101-000002-bbbb-garbage-status", "completed", 0.9)
    (garbage_status / "status.json").write_text("{ this is not json")
    bad_summary = fake_run(tmp_path, "20240101-000003-cccc-bad-summary", "completed", 0.9)
    (bad_summary / "summary.json").write_text('{"test_accuracy": 0.9')
    bad_config = fake_run(tmp_path, "20240101-000004-dddd-bad-config", "completed", 0.9)
    (bad_config / "config.json").write_text(json.dumps({**TINY.to_dict(), "learning_rate": 99}))
    list_status = fake_run(tmp_path, "20240101-000005-eeee-list-status", "completed", 0.9)
    (list_status / "status.json").write_text("[1, 2]")

    runs = {run.run_id: run for run in list_runs(tmp_path)}

    assert runs[good.run_id].state == "completed" and runs[good.run_id].damaged is None
    for path in (no_config, garbage_status, bad_summary, bad_config, list_status):
        run = runs[path.name]
        assert run.state == "damaged", path.name
        assert run.damaged, path.name
    assert "config.json" in runs[no_config.name].damaged
    assert "summary.json" in runs[bad_summary.name].damaged
    assert "learning_rate" in runs[bad_config.name].damaged
    assert "status.json" in runs[list_status.name].damaged
    # A damaged run never wins best_run, and loading it by id does not raise either.
    assert best_run(tmp_path) is None
    assert load_run(garbage_status.name, tmp_path).state == "damaged"


def test_damaged_message_names_the_unreadable_file(tmp_path):
    path = fake_run(tmp_path, "20240101-000002-bbbb-garbage-status", "completed", 0.9)
    (path / "status.json").write_text("{ this is not json")

    assert "status.json" in load_run(path.name, tmp_path).damaged


def test_dotted_folders_are_not_runs(tmp_path):
    (tmp_path / ".trash").mkdir()
    (tmp_path / "notes.txt").write_text("not a folder")
    run = create_run(TINY, tmp_path)

    assert [r.run_id for r in list_runs(tmp_path)] == [run.run_id]


# --- loading and deleting ------------------------------------------------------------------------


def test_load_run_of_an_unknown_id_raises_run_not_found(tmp_path):
    create_run(TINY, tmp_path)

    with pytest.raises(RunNotFound, match="20990101-000000-zzzz"):
        load_run("20990101-000000-zzzz", tmp_path)
    for not_an_id in ("", "../etc", ".hidden", "a/b"):
        with pytest.raises(RunNotFound):
            load_run(not_an_id, tmp_path)
    assert issubclass(RunNotFound, ValueError)  # pages catch ValueError subclasses by name


def test_delete_run_removes_the_folder(tmp_path):
    keep, remove = create_run(TINY, tmp_path), create_run(TINY.replace(seed=1), tmp_path)
    remove.append_metrics([(0, 2.3, 0.1)])

    delete_run(remove.run_id, tmp_path)

    assert not remove.path.exists()
    assert [run.run_id for run in list_runs(tmp_path)] == [keep.run_id]
    with pytest.raises(RunNotFound):
        delete_run(remove.run_id, tmp_path)


# --- best_run --------------------------------------------------------------------------------------


def test_best_run_is_the_most_accurate_completed_run_with_a_model(tmp_path):
    fake_run(tmp_path, "20240101-000001-aaaa", "completed", 0.90)
    fake_run(tmp_path, "20240101-000002-bbbb", "completed", 0.95)
    fake_run(tmp_path, "20240101-000003-cccc", "completed", 0.99, model=False)  # no model to draw with
    fake_run(tmp_path, "20240101-000004-dddd", "running", 0.999)  # pid is this process: still running
    fake_run(tmp_path, "20240101-000005-eeee", "failed", 0.98)
    fake_run(tmp_path, "20240101-000006-ffff", "stopped", 0.97)
    fake_run(tmp_path, "20240101-000007-gggg", "diverged", None)
    fake_run(tmp_path, "20240101-000008-hhhh", "completed", 0.96, dataset="fashion_mnist")
    (tmp_path / "20240101-000009-iiii").mkdir()  # damaged

    assert best_run(tmp_path).run_id == "20240101-000008-hhhh"
    assert best_run(tmp_path, dataset="mnist").run_id == "20240101-000002-bbbb"
    assert best_run(tmp_path, dataset="fashion_mnist").run_id == "20240101-000008-hhhh"


def test_best_run_picks_among_the_runs_it_is_given(tmp_path):
    fake_run(tmp_path, "20240101-000001-aaaa", "completed", 0.90)
    fake_run(tmp_path, "20240101-000002-bbbb", "completed", 0.95)
    listed = list_runs(tmp_path)

    assert best_run(runs=listed).run_id == "20240101-000002-bbbb"
    assert best_run(runs=[run for run in listed if run.run_id.endswith("aaaa")]).run_id == "20240101-000001-aaaa"
    assert best_run(tmp_path, runs=[]) is None  # the given list wins over the folder


def test_best_run_of_no_finished_runs_is_none(tmp_path):
    assert best_run(tmp_path) is None
    fake_run(tmp_path, "20240101-000004-dddd", "running", 0.999)
    fake_run(tmp_path, "20240101-000005-eeee", "failed", 0.98)

    assert best_run(tmp_path) is None


# --- status -------------------------------------------------------------------------------------------


def test_status_is_written_atomically_while_someone_reads_it(tmp_path):
    run = create_run(TINY, tmp_path)
    status_file = run.path / "status.json"
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
    leftovers = sorted(p.name for p in run.path.iterdir() if p.name not in ("config.json", "status.json"))
    assert leftovers == []  # no temp files left behind


def test_write_status_keeps_start_time_and_progress(tmp_path):
    run = create_run(TINY, tmp_path)
    started_at = run.status["started_at"]

    run.write_progress(20, 30, 456.0)
    run.write_status("completed", "test accuracy 0.5000 after 30 steps", step=30)

    status = load_run(run.run_id, tmp_path).status
    assert status["status"] == "completed"
    assert status["started_at"] == started_at
    assert status["steps_per_second"] == 456.0 and status["step"] == 30
    assert status["finished_at"]
    with pytest.raises(ValueError, match="finished"):
        run.write_status("finished")


def test_a_running_run_whose_process_died_reads_as_interrupted(tmp_path):
    run = create_run(TINY, tmp_path)
    run.write_status("running", "training", pid=dead_pid(), step=12)

    reread = load_run(run.run_id, tmp_path)

    assert reread.state == "interrupted"
    assert "ended" in reread.status["message"]
    assert reread.status["step"] == 12
    # ... but a run whose process is alive (this one) is still running.
    run.write_status("running", "training", pid=os.getpid())
    assert load_run(run.run_id, tmp_path).state == "running"


def test_a_finished_run_stays_finished_whatever_its_pid(tmp_path):
    run = create_run(TINY, tmp_path)
    run.write_status("completed", "done", pid=dead_pid())

    assert load_run(run.run_id, tmp_path).state == "completed"


# --- metrics and evaluations -----------------------------------------------------------------------


def test_metrics_and_evaluations_round_trip(tmp_path):
    run = create_run(TINY, tmp_path)
    assert run.read_metrics() == {"step": [], "loss": [], "batch_accuracy": []}

    run.append_metrics([(0, 2.30, 0.10), (1, 2.10, 0.20)])
    run.append_metrics([(2, 1.90, 0.35)])
    run.append_evaluation(10, 0.75, 0.8125)
    run.append_evaluation(20, 0.5, 0.875)

    metrics = load_run(run.run_id, tmp_path).read_metrics()
    assert metrics == {"step": [0, 1, 2], "loss": [2.30, 2.10, 1.90], "batch_accuracy": [0.10, 0.20, 0.35]}
    assert run.read_evaluations() == {"step": [10, 20], "test_loss": [0.75, 0.5], "test_accuracy": [0.8125, 0.875]}
    assert (run.path / "metrics.csv").read_text().splitlines()[0] == "step,loss,batch_accuracy"


def test_read_metrics_skips_a_half_written_row(tmp_path):
    run = create_run(TINY, tmp_path)
    run.append_metrics([(0, 2.3, 0.1), (1, 2.2, 0.2)])
    with open(run.path / "metrics.csv", "a") as handle:
        handle.write("2,2.1")  # a row another process is writing right now

    assert run.read_metrics()["step"] == [0, 1]


def test_metrics_keep_full_float_precision(tmp_path):
    run = create_run(TINY, tmp_path)
    loss = 2.302585092994046

    run.append_metrics([(0, loss, 1 / 3)])

    assert run.read_metrics()["loss"] == [loss]
    assert run.read_metrics()["batch_accuracy"] == [1 / 3]


# --- stopping ------------------------------------------------------------------------------------------


def test_request_stop_is_seen_through_the_folder(tmp_path):
    run = create_run(TINY, tmp_path)
    other_view = load_run(run.run_id, tmp_path)  # e.g. the training thread's own Run object
    assert not run.stop_requested() and not other_view.stop_requested()

    run.request_stop()

    assert other_view.stop_requested()
    assert load_run(run.run_id, tmp_path).stop_requested()


def test_wait_for_returns_a_finished_run_and_gives_up_after_its_timeout(tmp_path):
    finished = create_run(TINY, tmp_path)
    finished.write_status("completed", "done")
    running = create_run(TINY.replace(seed=1), tmp_path)

    assert wait_for(finished.run_id, tmp_path, timeout=5).state == "completed"
    assert wait_for(running.run_id, tmp_path, timeout=0.3).state == "running"


def test_wait_for_follows_a_run_finished_by_another_thread(tmp_path):
    run = create_run(TINY, tmp_path)
    finisher = threading.Timer(0.3, lambda: Run(run.run_id, run.path, TINY, dict(run.status)).write_status(
        "stopped", "stopped at step 3 of 30", step=3))
    finisher.start()

    final = wait_for(run.run_id, tmp_path, timeout=10)
    finisher.join()

    assert final.state == "stopped"
    assert final.status["step"] == 3


def test_a_running_status_whose_worker_exited_unreaped_reads_as_interrupted(tmp_path):
    # A worker that died without writing its last status is a zombie until its parent waits for it:
    # it still "exists" for os.kill, but must not keep its run "running".
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.05)
    run = create_run(TrainConfig(steps=10, hidden_units=[16]), tmp_path)
    run.write_status("running", "training", pid=child.pid)
    try:
        assert load_run(run.run_id, tmp_path).state == "interrupted"
    finally:
        child.wait()
