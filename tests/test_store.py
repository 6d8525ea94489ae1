"""Tests for core.store: which runs exist, made, listed, loaded by id, deleted; a run whose trainer or queue entry
went away reads as interrupted. They write folders in tmp_path and read them back."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import core.store
from core.access import OPERATOR, PermissionRefused, member, new_guest, reader
from core.config import TrainConfig
from core.records import CONFIG_FILE, STATUS_FILE, FailureKind, RunNotFound, RunState, RunStoreError, Status
from core.queue_files import QUEUE_DIR
from core.store import (
    best_run, create_run, default_runs_dir, delete_run, is_run_id, list_runs, load_run, load_runs, watch_run,
)
from tests.factories import TINY, dead_pid, finish_later, finished_summary, make_run

ALICE = member({"iss": "https://id.example.org", "sub": "alice", "name": "Alice Liddell"}, operators=frozenset())
BOB = member({"iss": "https://id.example.org", "sub": "bob", "name": "Bob"}, operators=frozenset())


@pytest.fixture
def ticking_clock(monkeypatch):
    """Make core.store see a clock that moves one second per reading, so run ids differ in their stamps."""
    start = datetime(2024, 5, 1, 12, 0, 0)
    readings = iter(range(10_000))

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return start + timedelta(seconds=next(readings))

    monkeypatch.setattr(core.store, "datetime", Clock)


@pytest.fixture
def frozen_clock(monkeypatch):
    """Make core.store see a clock stopped at one second, as for runs created within the same second."""
    frozen = datetime(2024, 5, 1, 12, 0, 0)

    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return frozen

    monkeypatch.setattr(core.store, "datetime", FrozenClock)


# --- creating and listing ------------------------------------------------------------------------


def test_create_run_writes_config_and_a_running_status(tmp_path):
    run = create_run(TINY, tmp_path)

    assert run.path == tmp_path / run.run_id and run.path.is_dir()
    assert TrainConfig.load(run.path / CONFIG_FILE) == TINY
    status = json.loads((run.path / STATUS_FILE).read_text())
    assert status["status"] == "running"  # the state's JSON key is "status"
    assert status["pid"] == os.getpid()
    assert status["step"] == 0 and status["total_steps"] == TINY.steps
    assert status["started_at"]
    assert "func-sgd-16" in run.run_id  # the id says what the run is, for a folder listing
    assert is_run_id(run.run_id)

    again = load_run(run.run_id, tmp_path)
    assert again.state is RunState.RUNNING and again.config == TINY and again.summary is None
    assert isinstance(again.status, Status) and again.status.pid == os.getpid()
    assert again.damaged is None


def test_create_run_queued_writes_its_queue_file_before_the_folder_shows(tmp_path):
    run = create_run(TINY, tmp_path, state=RunState.QUEUED, owner=ALICE)

    status = json.loads((run.path / STATUS_FILE).read_text())
    assert status["status"] == "queued" and status["message"] == "waiting for a worker"
    assert status["pid"] is None  # no process trains it yet; a worker writes its own pid when it takes it
    assert (status["owner"], status["owner_name"]) == (ALICE.key, "Alice Liddell")
    entry = status["queue_entry"]
    assert entry.endswith(f"-{run.run_id}") and len(entry.split("-", 1)[0]) == 20
    assert (tmp_path / QUEUE_DIR / entry).is_file()
    again = load_run(run.run_id, tmp_path)
    assert again.state is RunState.QUEUED and again.state.active and again.damaged is None
    assert (again.status.owner, again.status.queue_entry) == (ALICE.key, entry)
    assert again.status.step == 0 and again.status.total_steps == TINY.steps and again.status.started_at
    assert [found.run_id for found in list_runs(tmp_path)] == [run.run_id]  # the queue folder is not a run


def test_list_runs_is_newest_first(tmp_path, ticking_clock):
    created = [make_run(tmp_path, TINY.replace(seed=seed)).run_id for seed in range(4)]

    listed = [run.run_id for run in list_runs(tmp_path)]

    assert listed == created[::-1]


def test_list_runs_is_newest_first_within_one_second(tmp_path, monkeypatch, frozen_clock):
    # Tokens that sort against creation order (as random ones do half of the time).
    tokens = iter(["ffff", "eeee", "0000", "1111"])
    monkeypatch.setattr(core.store.secrets, "token_hex", lambda nbytes=None: next(tokens, "abcdef"))
    first = make_run(tmp_path).run_id
    second = make_run(tmp_path).run_id

    assert [run.run_id for run in list_runs(tmp_path)] == [second, first]


def test_list_runs_of_a_missing_folder_is_empty(tmp_path):
    assert list_runs(tmp_path / "never-made") == []


def test_list_runs_ignores_names_that_are_not_run_ids(tmp_path):
    good = make_run(tmp_path)
    # Readable run folders under names the store never gives: a visitor could not ask for them by id.
    for name in (".trash", "with space", "x" * 101, "ünïcode", "-dash-first"):
        shutil.copytree(good.path, tmp_path / name)
    (tmp_path / "20240101-000000-abcd-a-file").write_text("a file named like a run")

    assert [run.run_id for run in list_runs(tmp_path)] == [good.run_id]


def test_default_runs_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HYBRID_LAB_RUNS", str(tmp_path / "elsewhere"))
    assert default_runs_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("HYBRID_LAB_RUNS")
    assert default_runs_dir() == Path("runs")


def test_create_run_into_a_file_says_it_is_a_file(tmp_path):
    runs_dir = tmp_path / "runs"
    runs_dir.write_text("not a folder")

    with pytest.raises(RunStoreError) as raised:
        create_run(TINY, runs_dir)

    assert str(runs_dir) in str(raised.value) and "is a file" in str(raised.value)
    assert isinstance(raised.value, OSError)
    assert runs_dir.read_text() == "not a folder"


def test_create_run_into_a_read_only_folder_leaves_nothing(tmp_path):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    runs_dir.chmod(0o500)
    try:
        if os.geteuid() == 0 or os.access(runs_dir, os.W_OK):
            pytest.skip("running as root (as in CI): chmod does not stop root from writing")
        with pytest.raises(RunStoreError, match=str(runs_dir)):
            create_run(TINY, runs_dir)
        assert list(runs_dir.iterdir()) == []
    finally:
        runs_dir.chmod(0o700)


def test_create_run_refused_its_folder_says_so(tmp_path, monkeypatch):
    # What a read-only runs directory does to a user who is not root, simulated so that it runs as root too.
    make_folder = Path.mkdir

    def refuse_run_folders(self, *args, **kwargs):
        if self.parent == tmp_path:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return make_folder(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse_run_folders)

    with pytest.raises(RunStoreError, match="Permission denied") as raised:
        create_run(TINY, tmp_path)

    assert str(tmp_path) in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_create_run_that_fails_half_way_leaves_no_folder(tmp_path, monkeypatch):
    # The folder is made, then writing config.json fails (a full disk): the half-made folder must go,
    # or it would be listed as a damaged run. This runs as root too, unlike the read-only test above.
    def full_disk(self, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TrainConfig, "save", full_disk)

    with pytest.raises(RunStoreError, match="No space left on device"):
        create_run(TINY, tmp_path)

    assert list(tmp_path.iterdir()) == []


def test_a_queued_run_that_cannot_be_put_in_place_leaves_no_queue_entry(tmp_path, monkeypatch):
    # The queue file goes in just before the folder is renamed into place; if that rename fails, a queue
    # entry left behind would name a run that never appeared.
    def full_disk(source, destination):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(core.store.os, "rename", full_disk)

    with pytest.raises(RunStoreError, match="No space left on device"):
        create_run(TINY, tmp_path, state=RunState.QUEUED)

    assert [path.name for path in tmp_path.iterdir() if path.name != QUEUE_DIR] == []
    assert list((tmp_path / QUEUE_DIR).iterdir()) == []


def test_create_run_never_deletes_a_run_whose_id_it_collides_with(tmp_path, monkeypatch, frozen_clock):
    # Same second, same config and the same two random bytes: one chance in 65,536 per pair of runs.
    monkeypatch.setattr(core.store.secrets, "token_hex", lambda nbytes=None: "abcd")
    first = make_run(tmp_path, model=True)

    try:
        create_run(TINY, tmp_path)
    except RunStoreError:
        pass  # refusing is fine; destroying the other run is not

    assert first.path.is_dir() and first.has_model
    assert load_run(first.run_id, tmp_path).state is RunState.COMPLETED


# --- hostile ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", [
    "x" * 300, "", ".", "..", "../elsewhere", "a/b", "a/../b", "/etc", ".hidden", "./x", "a\\b", "a\x00b",
    "run id", "x" * 101, None, 7,
])
def test_load_run_refuses_ids_that_could_not_be_runs_before_touching_the_file_system(tmp_path, hostile):
    with pytest.MonkeyPatch.context() as patch:
        for name in ("stat", "lstat", "listdir", "scandir"):
            patch.setattr(os, name, lambda *args, **kwargs: pytest.fail(f"touched the file system for {hostile!r}"))
        patch.setattr(core.store, "read_run", lambda path: pytest.fail(f"read a folder for {hostile!r}"))
        with pytest.raises(RunNotFound) as raised:
            load_run(hostile, tmp_path)

    assert "not a run id" in str(raised.value)
    assert len(str(raised.value)) < 80  # a 300-character id is not echoed back whole
    assert not is_run_id(hostile)


def test_ids_with_dots_and_slashes_are_refused_even_where_a_run_folder_exists(tmp_path):
    runs_dir = tmp_path / "runs"
    elsewhere = make_run(tmp_path / "elsewhere")
    hidden = runs_dir / ".hidden"
    shutil.copytree(elsewhere.path, hidden)

    for reachable in (f"../elsewhere/{elsewhere.run_id}", ".hidden", f"./{elsewhere.run_id}",
                      str(elsewhere.path)):
        with pytest.raises(RunNotFound):
            load_run(reachable, runs_dir)
    assert list_runs(runs_dir) == []
    assert load_run(elsewhere.run_id, elsewhere.path.parent).state is RunState.COMPLETED  # the folders are fine


def test_load_run_of_an_unknown_id_raises_run_not_found(tmp_path):
    make_run(tmp_path)

    with pytest.raises(RunNotFound, match="20990101-000000-zzzz"):
        load_run("20990101-000000-zzzz", tmp_path)
    assert issubclass(RunNotFound, ValueError)  # pages catch ValueError subclasses by name


def test_load_runs_keeps_the_readable_ones_in_the_order_asked(tmp_path):
    first, second = make_run(tmp_path), make_run(tmp_path, TINY.replace(seed=1), state=RunState.RUNNING)
    damaged = make_run(tmp_path, TINY.replace(seed=2))
    (damaged.path / CONFIG_FILE).unlink()

    ids = [second.run_id, "20990101-000000-zzzz", damaged.run_id, "../etc", first.run_id]

    assert [run.run_id for run in load_runs(ids, tmp_path)] == [second.run_id, first.run_id]
    assert load_runs([], tmp_path) == []


# --- deleting ------------------------------------------------------------------------------------------


def test_delete_run_removes_the_folder(tmp_path):
    keep, remove = make_run(tmp_path), make_run(tmp_path, TINY.replace(seed=1), model=True)
    remove.append_metrics([(0, 2.3, 0.1)])

    delete_run(remove.run_id, tmp_path, identity=OPERATOR)

    assert not remove.path.exists()
    assert [run.run_id for run in list_runs(tmp_path)] == [keep.run_id]
    with pytest.raises(RunNotFound):
        delete_run(remove.run_id, tmp_path, identity=OPERATOR)


def test_only_the_owner_or_an_operator_deletes_a_run(tmp_path):
    alices = make_run(tmp_path, owner=ALICE)

    with pytest.raises(PermissionRefused) as refused:
        delete_run(alices.run_id, tmp_path, identity=BOB)

    assert str(refused.value) == (f"only Alice Liddell, who started run {alices.run_id}, or an operator may "
                                  "delete it")
    assert alices.path.is_dir()
    delete_run(alices.run_id, tmp_path, identity=ALICE)
    assert not alices.path.exists()
    bobs = make_run(tmp_path, owner=BOB)
    delete_run(bobs.run_id, tmp_path, identity=OPERATOR)
    assert list_runs(tmp_path) == []


def test_guests_and_readers_delete_nothing_not_even_their_own(tmp_path):
    guest = new_guest()
    theirs, operators = make_run(tmp_path, owner=guest), make_run(tmp_path)

    with pytest.raises(PermissionRefused, match="guests cannot delete runs"):
        delete_run(theirs.run_id, tmp_path, identity=guest)
    with pytest.raises(PermissionRefused, match=f"only an operator may delete run {operators.run_id}"):
        delete_run(operators.run_id, tmp_path, identity=reader())

    assert {run.run_id for run in list_runs(tmp_path)} == {theirs.run_id, operators.run_id}


def test_a_refusal_to_delete_comes_before_anything_about_the_run_is_acted_on(tmp_path):
    running = make_run(tmp_path, state=RunState.RUNNING, owner=ALICE)

    with pytest.raises(PermissionRefused):  # not "still training": it is not Bob's to delete at all
        delete_run(running.run_id, tmp_path, identity=BOB)


def test_delete_run_refuses_a_run_still_training(tmp_path):
    run = make_run(tmp_path, state=RunState.RUNNING)  # its pid is this process: alive

    with pytest.raises(ValueError, match="still training"):
        delete_run(run.run_id, tmp_path, identity=OPERATOR)
    assert load_run(run.run_id, tmp_path).state is RunState.RUNNING

    run.write_status(RunState.STOPPED, "stopped at step 0")
    delete_run(run.run_id, tmp_path, identity=OPERATOR)
    assert not run.path.exists()


def test_delete_run_of_an_interrupted_run_removes_it(tmp_path):
    run = make_run(tmp_path, state=RunState.RUNNING, pid=dead_pid())
    assert load_run(run.run_id, tmp_path).state is RunState.INTERRUPTED

    delete_run(run.run_id, tmp_path, identity=OPERATOR)

    assert not run.path.exists()


def test_delete_run_of_a_symlinked_folder_removes_only_the_link(tmp_path):
    outside = make_run(tmp_path / "outside", model=True)
    files = sorted(p.name for p in outside.path.iterdir())
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    link = runs_dir / outside.run_id
    link.symlink_to(outside.path, target_is_directory=True)
    assert [run.run_id for run in list_runs(runs_dir)] == [outside.run_id]

    delete_run(outside.run_id, runs_dir, identity=OPERATOR)

    assert not os.path.lexists(link)
    assert sorted(p.name for p in outside.path.iterdir()) == files
    assert load_run(outside.run_id, outside.path.parent).has_model


def test_delete_run_does_not_follow_a_link_inside_the_folder(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep me")
    run = make_run(tmp_path / "runs")
    (run.path / "data").symlink_to(precious, target_is_directory=True)

    delete_run(run.run_id, tmp_path / "runs", identity=OPERATOR)

    assert not run.path.exists()
    assert (precious / "data.txt").read_text() == "keep me"


# --- best_run --------------------------------------------------------------------------------------


def test_best_run_is_the_most_accurate_completed_run_with_a_model(tmp_path):
    make_run(tmp_path, test_accuracy=0.90, model=True)
    mnist_best = make_run(tmp_path, test_accuracy=0.95, model=True)
    make_run(tmp_path, test_accuracy=0.99)  # no model to draw with
    running = make_run(tmp_path, state=RunState.RUNNING, model=True)  # pid is this process: still running
    running.write_summary(finished_summary(TINY, 0.999))
    make_run(tmp_path, state=RunState.FAILED, test_accuracy=0.98, model=True)
    make_run(tmp_path, state=RunState.STOPPED, test_accuracy=0.97, model=True)
    make_run(tmp_path, state=RunState.DIVERGED, test_accuracy=None, model=True)
    fashion = make_run(tmp_path, TINY.replace(dataset="fashion_mnist"), test_accuracy=0.96, model=True)
    (tmp_path / "20240101-000009-iiii").mkdir()  # damaged
    assert load_run(running.run_id, tmp_path).state is RunState.RUNNING

    assert best_run(tmp_path).run_id == fashion.run_id
    assert best_run(tmp_path, dataset="mnist").run_id == mnist_best.run_id
    assert best_run(tmp_path, dataset="fashion_mnist").run_id == fashion.run_id


def test_best_run_picks_among_the_runs_it_is_given(tmp_path):
    worse = make_run(tmp_path, test_accuracy=0.90, model=True)
    better = make_run(tmp_path, test_accuracy=0.95, model=True)
    listed = list_runs(tmp_path)

    assert best_run(runs=listed).run_id == better.run_id
    assert best_run(runs=[run for run in listed if run.run_id == worse.run_id]).run_id == worse.run_id
    assert best_run(tmp_path, runs=[]) is None  # the given list wins over the folder


def test_best_run_of_no_finished_runs_is_none(tmp_path):
    assert best_run(tmp_path) is None
    make_run(tmp_path, state=RunState.RUNNING, model=True)
    make_run(tmp_path, state=RunState.FAILED, test_accuracy=0.98, model=True)

    assert best_run(tmp_path) is None


# --- runs whose process went away -------------------------------------------------------------------


def test_a_running_run_whose_process_died_reads_as_interrupted(tmp_path):
    run = make_run(tmp_path, state=RunState.RUNNING)
    run.write_status(RunState.RUNNING, "training", pid=dead_pid(), step=12)

    reread = load_run(run.run_id, tmp_path)

    assert reread.state is RunState.INTERRUPTED and reread.damaged is None
    assert reread.status.failure is FailureKind.PROCESS_ENDED  # what a page words, with no message to read
    assert "ended" in reread.message
    assert reread.status.step == 12 and reread.step == 12
    # ... but a run whose process is alive (this one) is still running.
    run.write_status(RunState.RUNNING, "training", pid=os.getpid())
    assert load_run(run.run_id, tmp_path).state is RunState.RUNNING


def test_a_run_records_its_host_and_its_pid_is_judged_only_on_that_host(tmp_path):
    run = make_run(tmp_path, state=RunState.RUNNING)
    assert load_run(run.run_id, tmp_path).status.host == socket.gethostname()  # the command line's run: here
    # A run another machine of a Ray cluster trains: its pid means nothing here, so it is not taken for dead.
    run.write_status(RunState.RUNNING, "training", pid=dead_pid(), host="another-machine", node_id="ab" * 28)
    elsewhere = load_run(run.run_id, tmp_path)
    assert elsewhere.state is RunState.RUNNING
    assert (elsewhere.status.host, elsewhere.status.node_id) == ("another-machine", "ab" * 28)
    # The same dead pid on this host is a run whose trainer ended.
    run.write_status(RunState.RUNNING, "training", pid=dead_pid(), host=socket.gethostname())
    assert load_run(run.run_id, tmp_path).state is RunState.INTERRUPTED


def test_a_queued_run_whose_queue_entry_went_away_reads_as_interrupted_having_left_the_queue(tmp_path):
    run = create_run(TINY, tmp_path, state=RunState.QUEUED)
    (tmp_path / QUEUE_DIR / run.status.queue_entry).unlink()

    reread = load_run(run.run_id, tmp_path)

    assert reread.state is RunState.INTERRUPTED and reread.damaged is None
    assert reread.status.failure is FailureKind.LEFT_QUEUE
    assert reread.message == "it left the queue without starting"


def test_a_finished_run_stays_finished_whatever_its_pid(tmp_path):
    run = make_run(tmp_path, pid=dead_pid())

    assert load_run(run.run_id, tmp_path).state is RunState.COMPLETED


def test_a_status_written_through_another_view_is_seen_through_the_folder(tmp_path):
    run = make_run(tmp_path, state=RunState.RUNNING)
    trainer_view = load_run(run.run_id, tmp_path)  # e.g. the worker process's own Run object

    trainer_view.write_status(RunState.STOPPED, f"stopped at step 3 of {TINY.steps}", step=3)

    final = load_run(run.run_id, tmp_path)
    assert final.state is RunState.STOPPED
    assert final.status.step == 3 and final.status.pid == os.getpid()


def test_a_running_status_whose_worker_exited_unreaped_reads_as_interrupted(tmp_path):
    # A worker that died without writing its last status is a zombie until its parent waits for it:
    # it still "exists" for os.kill, but must not keep its run "running".
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.05)
    run = make_run(tmp_path, state=RunState.RUNNING)
    run.write_status(RunState.RUNNING, "training", pid=child.pid)
    try:
        assert load_run(run.run_id, tmp_path).state is RunState.INTERRUPTED
    finally:
        child.wait()


# watch_run: how the Train page learns of a run's end between two refreshes.
LONG_WATCH_S = 60  # a watch that never saw the end would hold the test this long, then fail on the state


def test_a_watch_returns_the_run_once_it_has_ended_not_when_its_time_is_up(tmp_path):
    run = make_run(tmp_path, state=RunState.RUNNING)
    finish_later(run)

    ended = watch_run(run, LONG_WATCH_S)

    assert ended.state is RunState.COMPLETED and ended.test_accuracy == 0.93


def test_a_watch_of_a_run_that_keeps_training_returns_it_as_last_read(tmp_path):
    run = make_run(tmp_path, state=RunState.RUNNING)
    looks = []

    watched = watch_run(run, 0.3, between=lambda: looks.append(1))

    assert watched.state is RunState.RUNNING and looks  # `between` was called before the looks


def test_what_between_raises_ends_the_watch(tmp_path):
    # The app's `between` is where Streamlit ends a script run that a click replaced: it raises.
    run = make_run(tmp_path, state=RunState.RUNNING)

    class Replaced(Exception):
        pass

    def replaced():
        raise Replaced

    with pytest.raises(Replaced):
        watch_run(run, LONG_WATCH_S, between=replaced)


def test_a_run_deleted_while_watched_ends_the_watch(tmp_path):
    run = make_run(tmp_path, state=RunState.RUNNING)
    threading.Timer(0.2, shutil.rmtree, args=(run.path,)).start()

    gone = watch_run(run, LONG_WATCH_S)

    assert not gone.state.active


def test_a_run_that_says_it_ends_soon_is_watched_until_its_end(tmp_path):
    run = make_run(tmp_path, state=RunState.RUNNING)
    run.write_progress(990, 1000, 1000.0)
    finish_later(run)

    ended = watch_run(run, 0.0, longest=LONG_WATCH_S)

    assert ended.state is RunState.COMPLETED


def test_a_run_with_no_speed_yet_or_far_from_its_end_is_watched_only_the_seconds_asked(tmp_path):
    loading = make_run(tmp_path, state=RunState.RUNNING)  # no steps_per_second yet
    far = make_run(tmp_path, state=RunState.RUNNING)
    far.write_progress(10, 10_000_000, 100.0)

    assert watch_run(loading, 0.0, longest=LONG_WATCH_S).state is RunState.RUNNING
    assert watch_run(far, 0.0, longest=0.1).state is RunState.RUNNING


def test_a_status_file_swapped_for_a_fifo_while_watched_ends_the_watch_with_the_run_damaged(tmp_path):
    # A hand edit of the folder while a page watches it: the FIFO is never opened for reading (it would hang the
    # page), the run reads as damaged, and a damaged run is no longer active.
    run = make_run(tmp_path, state=RunState.RUNNING)

    def swap():
        (run.path / STATUS_FILE).unlink()
        os.mkfifo(run.path / STATUS_FILE)

    threading.Timer(0.2, swap).start()

    watched = watch_run(run, LONG_WATCH_S)

    assert watched.state is RunState.DAMAGED
