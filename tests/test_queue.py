"""Tests for core.queue and the parts of core.service that need no worker: the queue is files in tmp_path,
read back through the run store as a page would. No TensorFlow here (no worker is ever started)."""

from __future__ import annotations

import ast
import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import core.service
from core import queue, queue_files, service
from core.access import OPERATOR, PermissionRefused, member, new_guest, reader
from core.data import DatasetError
from core.queue_files import QUEUE_DIR
from core.records import STATUS_FILE, STOP_FILE, FailureKind, RunState, RunStoreError, StopReason
from core.run_index import shared_index
from core.store import create_run, delete_run, list_runs, load_run, staging_folder
from core.service import SubmissionRefused
from tests.factories import TINY, dead_pid, make_run

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICE_VARIABLES = tuple(setting.variable for setting in service.SERVICE_SETTINGS)
ALICE = member({"iss": "https://id.example.org", "sub": "alice", "name": "Alice Liddell"}, operators=frozenset())
BOB = member({"iss": "https://id.example.org", "sub": "bob", "name": "Bob"}, operators=frozenset())
# What the hostile sweep edited a queued run's config.json to: 3.2e15 multiply-adds.
HUGE = {"steps": 200_000, "batch_size": 4096, "hidden_units": [1024] * 4}


@pytest.fixture(autouse=True)
def service_defaults(monkeypatch):
    """Every service setting at its default, whatever the shell that runs the tests has set."""
    for variable in SERVICE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def no_workers(monkeypatch):
    """service.submit queues runs but starts no worker pool (these tests look at the queue only)."""
    started = []
    monkeypatch.setattr(core.service, "ensure_pool", lambda runs_dir=None: started.append(runs_dir))
    return started


def queue_runs(runs_dir: Path, count: int) -> list[str]:
    """Queue `count` tiny runs, one after another; their ids in the order they were queued."""
    return [create_run(TINY, runs_dir, state=RunState.QUEUED).run_id for _ in range(count)]


def queue_names(runs_dir: Path) -> list[str]:
    """What is in the queue folder, but for the folder of rejected names."""
    return sorted(name for name in os.listdir(runs_dir / QUEUE_DIR) if name != queue_files.REJECTED_DIR)


def rejected(runs_dir: Path) -> dict[str, str]:
    """The names moved aside into .queue/.rejected/, each with the reason its log line gives."""
    log = queue_files.rejected_folder(runs_dir) / queue_files.REJECTED_LOG
    reasons = {}
    for line in (log.read_text().splitlines() if log.exists() else []):
        name, _, reason = line.split(" ", 1)[1].partition(": ")
        reasons[ast.literal_eval(name)] = reason  # the log writes the name as a Python string literal
    return reasons


def edit_config(run, **changes) -> None:
    """Change a run's config.json by hand, as someone with access to the runs directory could."""
    values = json.loads(run.config_path.read_text())
    values.update(changes)
    run.config_path.write_text(json.dumps(values))


# --- order --------------------------------------------------------------------------------------------


def test_queue_is_first_come_first_served(tmp_path):
    ids = queue_runs(tmp_path, 4)
    finished = make_run(tmp_path)

    assert queue.queued_ids(tmp_path) == ids
    assert [queue.position(run_id, tmp_path) for run_id in ids] == [1, 2, 3, 4]
    assert queue.position(finished.run_id, tmp_path) is None
    for run_id in ids:
        run = load_run(run_id, tmp_path)
        assert run.state is RunState.QUEUED, run.message
        assert run.message == "waiting for a worker"
        assert (tmp_path / QUEUE_DIR / run.status.queue_entry).is_file()


def test_an_empty_or_missing_queue_has_nothing_to_take(tmp_path):
    assert queue.queued_ids(tmp_path / "not-there") == []
    assert queue.take_next(tmp_path / "not-there") is None
    make_run(tmp_path)  # a finished run is never in the queue

    assert queue.queued_ids(tmp_path) == []
    assert queue.take_next(tmp_path) is None


def test_take_next_takes_the_oldest_and_marks_it_running_here(tmp_path):
    ids = queue_runs(tmp_path, 3)

    taken = [queue.take_next(tmp_path) for _ in ids]

    assert [run.run_id for run in taken] == ids
    for run in taken:
        assert run.state is RunState.RUNNING
        reread = load_run(run.run_id, tmp_path)
        assert reread.state is RunState.RUNNING, reread.message  # this process is alive, so it stays running
        assert reread.status.pid == os.getpid()
        assert (reread.status.host, reread.status.node_id) == (socket.gethostname(), None)  # the local pool's
        assert reread.status.queue_entry is None
    assert queue.take_next(tmp_path) is None
    assert queue.queued_ids(tmp_path) == []
    assert queue_names(tmp_path) == []  # no .taken-… marker is left behind


def test_a_worker_on_a_ray_node_records_the_node_with_the_run_it_takes(tmp_path):
    (run_id,) = queue_runs(tmp_path, 1)

    queue.take_next(tmp_path, node_id="0f" * 28)

    assert load_run(run_id, tmp_path).status.node_id == "0f" * 28


def test_a_position_moves_up_as_runs_are_taken(tmp_path):
    first, second, third = queue_runs(tmp_path, 3)

    queue.take_next(tmp_path)

    assert [queue.position(run_id, tmp_path) for run_id in (first, second, third)] == [None, 1, 2]


def test_two_takes_never_return_the_same_run(tmp_path):
    queue_runs(tmp_path, 2)

    one, two = queue.take_next(tmp_path), queue.take_next(tmp_path)

    assert one.run_id != two.run_id
    assert queue.take_next(tmp_path) is None


def test_a_run_another_worker_takes_between_listing_and_rename_is_skipped(tmp_path, monkeypatch):
    first, second = queue_runs(tmp_path, 2)
    other_worker = os.getppid()  # a live process that is not this one
    listed = queue._entries

    def entries_then_lose_the_first(runs_dir):
        entries = listed(runs_dir)
        _, entry = entries[0]
        folder = Path(runs_dir) / QUEUE_DIR
        os.rename(folder / entry, folder / f".taken-{other_worker}-{entry}")  # the other worker wins the rename
        return entries

    monkeypatch.setattr(queue, "_entries", entries_then_lose_the_first)
    taken = queue.take_next(tmp_path)

    assert taken.run_id == second
    lost = load_run(first, tmp_path)
    assert lost.state is RunState.QUEUED  # still the other worker's to start: this one did not write it
    assert lost.status.pid is None


def test_competing_processes_each_get_different_runs(tmp_path):
    ids = queue_runs(tmp_path, 40)
    go = tmp_path / "go"
    taker = (
        "import sys, time; from pathlib import Path; from core import queue\n"
        "runs_dir, go = Path(sys.argv[1]), Path(sys.argv[2])\n"
        "while not go.exists(): time.sleep(0.001)\n"  # all start taking at once, to compete
        "while (run := queue.take_next(runs_dir)) is not None:\n"
        "    print(run.run_id, run.status.pid, flush=True)\n"
    )
    takers = [subprocess.Popen([sys.executable, "-c", taker, str(tmp_path), str(go)], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    go.touch()
    outputs = [process.communicate(timeout=120) for process in takers]

    assert all(process.returncode == 0 for process in takers), [error for _, error in outputs]
    taken = [(line.split()[0], int(line.split()[1]), process.pid)
             for (output, _), process in zip(outputs, takers) for line in output.splitlines()]
    twice = [run_id for run_id, count in Counter(run_id for run_id, _, _ in taken).items() if count > 1]
    assert twice == [], f"taken by two processes: {twice}"
    assert sorted(run_id for run_id, _, _ in taken) == sorted(ids)  # every run taken
    assert all(status_pid == taker_pid for _, status_pid, taker_pid in taken)
    assert queue_names(tmp_path) == []


# --- leaving the queue --------------------------------------------------------------------------------


def test_cancel_takes_a_queued_run_out_of_the_queue(tmp_path):
    stays, cancelled = queue_runs(tmp_path, 2)

    assert queue.cancel(load_run(cancelled, tmp_path)) is True

    assert queue.queued_ids(tmp_path) == [stays]
    # cancel only removes the entry; whoever cancels writes the status (service.stop does)
    left = load_run(cancelled, tmp_path)
    assert left.state is RunState.INTERRUPTED
    assert left.message == "it left the queue without starting"
    assert queue.cancel(load_run(stays, tmp_path)) is True
    assert queue.take_next(tmp_path) is None


def test_cancel_after_a_worker_took_the_run_fails(tmp_path):
    (run_id,) = queue_runs(tmp_path, 1)
    seen_queued = load_run(run_id, tmp_path)
    queue.take_next(tmp_path)

    assert queue.cancel(seen_queued) is False
    assert queue.cancel(load_run(run_id, tmp_path)) is False  # running: no queue entry at all


def test_stopping_a_queued_run_cancels_it(tmp_path):
    stays, stopped = queue_runs(tmp_path, 2)

    service.stop(load_run(stopped, tmp_path), OPERATOR)

    run = load_run(stopped, tmp_path)
    assert run.state is RunState.STOPPED
    assert run.message == "cancelled while queued: it never started"
    assert run.status.stop_reason is StopReason.CANCELLED
    assert run.step == 0 and run.status.finished_at
    assert queue.queued_ids(tmp_path) == [stays]
    assert queue.take_next(tmp_path).run_id == stays
    assert queue.take_next(tmp_path) is None


def test_stopping_a_running_run_asks_its_trainer_to_stop(tmp_path):
    run = create_run(TINY, tmp_path)

    service.stop(load_run(run.run_id, tmp_path), OPERATOR)

    assert (run.path / STOP_FILE).is_file()
    assert load_run(run.run_id, tmp_path).stop_requested()
    assert load_run(run.run_id, tmp_path).state is RunState.RUNNING  # until the trainer sees it


def test_stopping_a_run_a_worker_has_just_taken_asks_the_worker(tmp_path):
    (run_id,) = queue_runs(tmp_path, 1)
    seen_queued = load_run(run_id, tmp_path)  # what a page read a moment before the worker took it
    queue.take_next(tmp_path)

    service.stop(seen_queued, OPERATOR)

    run = load_run(run_id, tmp_path)
    assert run.state is RunState.RUNNING, run.message  # not marked "cancelled": it did start
    assert run.stop_requested()


def test_a_queued_run_whose_entry_was_deleted_reads_interrupted(tmp_path):
    (run_id,) = queue_runs(tmp_path, 1)
    (tmp_path / QUEUE_DIR / load_run(run_id, tmp_path).status.queue_entry).unlink()

    run = load_run(run_id, tmp_path)

    assert run.state is RunState.INTERRUPTED
    assert run.message == "it left the queue without starting"
    assert run_id not in queue.queued_ids(tmp_path)


def test_a_run_a_live_worker_is_taking_stays_queued(tmp_path):
    (run_id,) = queue_runs(tmp_path, 1)
    entry = load_run(run_id, tmp_path).status.queue_entry
    folder = tmp_path / QUEUE_DIR
    os.rename(folder / entry, folder / f".taken-{os.getpid()}-{entry}")

    assert load_run(run_id, tmp_path).state is RunState.QUEUED
    assert queue.queued_ids(tmp_path) == []  # taken: no other worker may start it


def test_a_run_a_dead_worker_was_taking_reads_interrupted(tmp_path):
    (run_id,) = queue_runs(tmp_path, 1)
    entry = load_run(run_id, tmp_path).status.queue_entry
    folder = tmp_path / QUEUE_DIR
    os.rename(folder / entry, folder / f".taken-{dead_pid()}-{entry}")

    run = load_run(run_id, tmp_path)

    assert run.state is RunState.INTERRUPTED
    assert run.message == "it left the queue without starting"


def test_a_run_still_being_created_goes_back_into_the_queue(tmp_path):
    building, ready = queue_runs(tmp_path, 2)
    # As create_run leaves it between writing the queue entry and renaming the folder into place.
    os.rename(tmp_path / building, staging_folder(tmp_path, building))

    taken = queue.take_next(tmp_path)

    assert taken.run_id == ready
    assert queue.queued_ids(tmp_path) == [building]
    assert queue.take_next(tmp_path) is None
    assert queue.queued_ids(tmp_path) == [building]  # a second look leaves it in line too
    os.rename(staging_folder(tmp_path, building), tmp_path / building)
    assert queue.take_next(tmp_path).run_id == building


def test_an_entry_whose_run_was_deleted_is_dropped(tmp_path):
    gone, ready = queue_runs(tmp_path, 2)
    entry = load_run(gone, tmp_path).status.queue_entry
    os.rename(tmp_path / gone, tmp_path / ".elsewhere")  # no folder, no staging folder: the run is gone

    assert queue.take_next(tmp_path).run_id == ready
    assert entry not in queue_names(tmp_path)
    assert f"there is no run {gone}" in rejected(tmp_path)[entry]


# --- names a worker cannot use --------------------------------------------------------------------------


def test_an_entry_too_long_to_rename_never_stops_the_queue(tmp_path):
    # Renamed to .taken-<pid>-<name>, a 250-digit stamp passes the 255-byte limit: ENAMETOOLONG killed the
    # worker before any run behind it could start, every time it was restarted.
    garbage = "1" * 250 + "-x"
    (tmp_path / QUEUE_DIR).mkdir()
    (tmp_path / QUEUE_DIR / garbage).touch()
    (run_id,) = queue_runs(tmp_path, 1)

    taken = queue.take_next(tmp_path)

    assert taken.run_id == run_id
    assert queue.tidy(tmp_path, set()) == 1
    assert queue_names(tmp_path) == []
    assert "not a queue entry" in rejected(tmp_path)[garbage]
    assert (queue_files.rejected_folder(tmp_path) / garbage).exists()


def test_an_entry_that_cannot_be_taken_is_moved_aside_once(tmp_path, monkeypatch):
    stuck, ready = queue_runs(tmp_path, 2)
    entry = load_run(stuck, tmp_path).status.queue_entry
    rename = os.rename

    def rename_fails_for_one(source, target):
        if Path(source).name == entry:
            raise OSError(errno.ENAMETOOLONG, "File name too long")
        return rename(source, target)

    monkeypatch.setattr(os, "rename", rename_fails_for_one)

    assert queue.take_next(tmp_path).run_id == ready
    assert rejected(tmp_path) == {entry: "cannot be taken: File name too long"}
    assert queue.take_next(tmp_path) is None  # not tried again: it is out of the queue
    assert load_run(stuck, tmp_path).state is RunState.INTERRUPTED  # and its run says it left the queue


def test_a_folder_named_like_an_entry_costs_no_run(tmp_path):
    # A folder with an older stamp, naming a queued run: taking it used to mark the run running, then crash
    # on removing the "file" (IsADirectoryError), leaving the run interrupted.
    (run_id,) = queue_runs(tmp_path, 1)
    impostor = f"{0:020d}-{run_id}"
    (tmp_path / QUEUE_DIR / impostor).mkdir()

    taken = queue.take_next(tmp_path)

    assert taken.run_id == run_id  # through its own entry
    assert load_run(run_id, tmp_path).state is RunState.RUNNING
    assert queue_names(tmp_path) == []
    assert rejected(tmp_path)[impostor].startswith(f"run {run_id} waits under another entry")
    assert (queue_files.rejected_folder(tmp_path) / impostor).is_dir()


def test_a_run_whose_entry_became_a_folder_still_trains(tmp_path):
    (run_id,) = queue_runs(tmp_path, 1)
    entry = tmp_path / QUEUE_DIR / load_run(run_id, tmp_path).status.queue_entry
    entry.unlink()
    entry.mkdir()
    (entry / "inside").touch()  # a folder that cannot simply be removed

    assert queue.take_next(tmp_path).run_id == run_id
    assert queue_names(tmp_path) == []
    assert queue.take_next(tmp_path) is None


def test_a_pipe_as_a_runs_entry_is_taken_without_waiting_for_a_writer(tmp_path, no_workers):
    run = service.submit(TINY, tmp_path, identity=ALICE)
    entry = tmp_path / QUEUE_DIR / run.status.queue_entry
    entry.unlink()
    os.mkfifo(entry)  # opening it to read its text would wait for a writer forever
    taken = []
    taker = threading.Thread(target=lambda: taken.append(queue.take_next(tmp_path, refuse=service.refusal)),
                             daemon=True)

    taker.start()
    taker.join(60)  # not a measure of speed: a worker stuck on the pipe would never return

    assert not taker.is_alive(), "take_next is stuck opening a pipe"
    assert taken[0].run_id == run.run_id
    assert queue_names(tmp_path) == []


@pytest.mark.parametrize("state", [RunState.COMPLETED, RunState.RUNNING])
def test_an_entry_naming_a_run_that_is_not_waiting_leaves_the_run_alone(tmp_path, state):
    run = make_run(tmp_path, state=state)
    before = (run.path / STATUS_FILE).read_text()
    stray = queue_files.entry_name(run.run_id)
    (tmp_path / QUEUE_DIR).mkdir(exist_ok=True)
    (tmp_path / QUEUE_DIR / stray).touch()

    assert queue.take_next(tmp_path) is None

    assert (run.path / STATUS_FILE).read_text() == before
    assert rejected(tmp_path)[stray] == f"run {run.run_id} is {state}, not waiting for a worker"


def test_garbage_names_are_moved_aside_once(tmp_path):
    ids = queue_runs(tmp_path, 2)
    folder = tmp_path / QUEUE_DIR
    garbage = [f"garbage-{i}" for i in range(300)] + [f"{i:020d}" for i in range(300)] + \
              [f".dot-{i}" for i in range(300)] + [f"{1:020d}-.hidden", "9" * 200 + "-x", "\u0660" * 20 + "-x"]
    for name in garbage:
        (folder / name).touch()
    (folder / queue_files.taken_name(dead_pid(), f"{2:020d}-{ids[0]}")).touch()  # a worker's: the store reads it

    assert queue.tidy(tmp_path, set()) == len(garbage)
    assert queue.tidy(tmp_path, set()) == 0

    assert sorted(rejected(tmp_path)) == sorted(garbage)
    assert len(queue_names(tmp_path)) == 3  # the two entries and the taken name
    assert queue.queued_ids(tmp_path) == ids
    assert [queue.take_next(tmp_path).run_id for _ in ids] == ids


def test_a_name_that_cannot_be_moved_aside_is_ignored_from_then_on(tmp_path, monkeypatch):
    (tmp_path / QUEUE_DIR).mkdir()
    (tmp_path / QUEUE_DIR / "garbage").touch()
    tried = []
    monkeypatch.setattr(queue_files, "reject", lambda runs_dir, name, reason, shown=None: tried.append(name) or False)
    ignored = set()

    assert queue.tidy(tmp_path, ignored) == 0
    assert queue.tidy(tmp_path, ignored) == 0

    assert tried == ["garbage"] and ignored == {"garbage"}


def test_a_name_rejected_twice_replaces_the_first(tmp_path):
    folder = tmp_path / QUEUE_DIR
    folder.mkdir()
    for _ in range(2):
        (folder / "garbage").write_text("again")
        assert queue.tidy(tmp_path, set()) == 1

    assert sorted(os.listdir(queue_files.rejected_folder(tmp_path))) == sorted(["garbage", queue_files.REJECTED_LOG])


def test_the_watch_says_when_the_queue_folder_changed(tmp_path, monkeypatch):
    monkeypatch.setattr(queue, "RELIST_SECONDS", 10**9)  # only changes count here
    folder = tmp_path / QUEUE_DIR
    folder.mkdir()
    os.utime(folder, ns=(10**18, 10**18))  # long ago (2001), so the tick rule plays no part
    watch = queue.QueueWatch(tmp_path)

    assert watch.changed() is True  # the first look
    assert watch.changed() is False
    create_run(TINY, tmp_path, state=RunState.QUEUED)
    assert watch.changed() is True
    os.utime(folder, ns=(10**18 + 1, 10**18 + 1))
    assert watch.changed() is True
    assert watch.changed() is False
    os.utime(folder, ns=(os.stat(folder).st_atime_ns, time.time_ns()))  # changed this very tick
    assert watch.changed() is True
    assert watch.changed() is True  # may hide a second change in the same tick: looked at again


def test_a_queue_that_is_a_file_is_named_in_the_refusal(tmp_path, no_workers):
    (tmp_path / QUEUE_DIR).write_text("")

    with pytest.raises(RunStoreError) as refusal:
        service.submit(TINY, tmp_path, identity=OPERATOR)

    assert str(refusal.value) == (f"cannot create a run in {tmp_path}: {tmp_path / QUEUE_DIR} is a file, but the "
                                  "queue needs a folder there; move that file away and queue again")
    assert list_runs(tmp_path) == []
    assert [name for name in os.listdir(tmp_path)] == [QUEUE_DIR]  # no half-made run left behind
    # A worker looking at it finds nothing to take and nothing to tidy, and does not fail.
    assert queue.take_next(tmp_path) is None and queue.tidy(tmp_path, set()) == 0
    assert queue.QueueWatch(tmp_path).changed() is True


# --- limits, checked again when a worker takes a run ----------------------------------------------------


def test_the_status_records_the_ceiling_each_run_was_queued_under(tmp_path, no_workers):
    limited = service.submit(TINY, tmp_path, identity=ALICE)
    unlimited = service.submit(TINY, tmp_path, identity=OPERATOR, limits=False)
    seen = []

    def refuse(run):
        seen.append((run.run_id, run.status.work_limit))
        return None

    while queue.take_next(tmp_path, refuse) is not None:
        pass

    assert seen == [(limited.run_id, service.service_setting("max_work")), (unlimited.run_id, None)]


def test_a_run_edited_past_the_size_limit_while_queued_is_refused_when_taken(tmp_path, no_workers):
    edited = service.submit(TINY, tmp_path, identity=ALICE)
    behind = service.submit(TINY, tmp_path, identity=ALICE)
    edit_config(edited, **HUGE)

    taken = queue.take_next(tmp_path, refuse=service.refusal)

    assert taken.run_id == behind.run_id  # the queue goes on
    run = load_run(edited.run_id, tmp_path)
    assert run.state is RunState.FAILED
    assert run.message.startswith("refused when a worker took it: this run is too big for this server: "
                                  "200,000 steps of batch 4096 through 784-1024-1024-1024-1024-10 is 3.2e+15")
    assert "HYBRID_LAB_MAX_WORK" in run.message
    assert run.status.queue_entry is None and run.step == 0 and not (run.path / "metrics.csv").exists()
    assert queue_names(tmp_path) == []


def test_a_run_queued_without_limits_is_not_held_to_them_when_taken(tmp_path, no_workers):
    run = service.submit(TINY, tmp_path, identity=OPERATOR, limits=False)  # the server's owner: a benchmark, a script
    edit_config(run, **HUGE)

    assert queue.take_next(tmp_path, refuse=service.refusal).run_id == run.run_id


def test_a_run_edited_to_multi_worker_is_refused_whoever_queued_it(tmp_path, no_workers):
    run = service.submit(TINY, tmp_path, identity=OPERATOR, limits=False)
    edit_config(run, distribute="multi-worker")

    assert queue.take_next(tmp_path, refuse=service.refusal) is None
    assert load_run(run.run_id, tmp_path).message.startswith("refused when a worker took it: a multi-worker run")


def test_a_run_is_held_to_the_ceiling_it_was_queued_under_not_to_a_later_one(tmp_path, monkeypatch, no_workers):
    run = service.submit(TINY, tmp_path, identity=ALICE)
    edit_config(run, **HUGE)
    monkeypatch.setenv("HYBRID_LAB_MAX_WORK", "1e20")  # raised under a running server after the run was queued

    assert queue.take_next(tmp_path, refuse=service.refusal) is None
    refused = load_run(run.run_id, tmp_path)
    assert refused.status.failure is FailureKind.REFUSED and "above its limit of 2e+12" in refused.message


def test_a_queued_run_cannot_be_deleted(tmp_path):
    (run_id,) = queue_runs(tmp_path, 1)

    with pytest.raises(ValueError, match="queued"):
        delete_run(run_id, tmp_path, identity=OPERATOR)

    assert (tmp_path / run_id).is_dir()
    assert queue.queued_ids(tmp_path) == [run_id]


# --- submitting ---------------------------------------------------------------------------------------


def test_submit_queues_the_run_and_starts_the_pool(tmp_path, no_workers):
    run = service.submit(TINY, tmp_path, identity=ALICE)

    assert no_workers == [tmp_path]
    reread = load_run(run.run_id, tmp_path)
    assert reread.state is RunState.QUEUED
    assert (reread.status.owner, reread.status.owner_name) == (ALICE.key, "Alice Liddell")
    assert reread.config == TINY
    assert queue.queued_ids(tmp_path) == [run.run_id]


def test_a_reader_cannot_submit_anything(tmp_path, no_workers):
    with pytest.raises(PermissionRefused, match="sign in"):
        service.submit(TINY, tmp_path, identity=reader())
    with pytest.raises(PermissionRefused, match="sign in"):
        service.submit_engine_comparison(TINY, tmp_path, identity=reader(), limits=False)

    assert list_runs(tmp_path) == [] and no_workers == []


def test_a_run_above_the_work_limit_is_refused(tmp_path, monkeypatch, no_workers):
    monkeypatch.setenv("HYBRID_LAB_MAX_WORK", "1e6")  # TINY is 35 x 50 x 12,730 = 2.2e7

    with pytest.raises(SubmissionRefused, match="HYBRID_LAB_MAX_WORK") as refusal:
        service.submit(TINY, tmp_path, identity=ALICE)

    assert "1e+06" in str(refusal.value)  # the limit itself, as the message prints it
    assert list_runs(tmp_path) == [] and queue.queued_ids(tmp_path) == []
    assert no_workers == []
    # Without limits (a benchmark, the server's owner in code) the same run is queued.
    run = service.submit(TINY, tmp_path, identity=OPERATOR, limits=False)
    assert load_run(run.run_id, tmp_path).state is RunState.QUEUED


def test_a_guest_has_a_smaller_work_limit_of_its_own(tmp_path, monkeypatch, no_workers):
    monkeypatch.setenv("HYBRID_LAB_GUEST_MAX_WORK", "1e6")
    guest = new_guest()

    with pytest.raises(SubmissionRefused, match="HYBRID_LAB_GUEST_MAX_WORK") as refusal:
        service.submit(TINY, tmp_path, identity=guest)

    assert "for guests" in str(refusal.value)
    assert list_runs(tmp_path) == []
    assert load_run(service.submit(TINY, tmp_path, identity=ALICE).run_id, tmp_path).state is RunState.QUEUED


def test_the_work_limit_is_steps_times_batch_times_multiply_adds_per_image():
    assert service.work_of(TINY) == 35 * 50 * (784 * 16 + 16 * 10)
    assert service.work_of(TINY.replace(steps=70)) == 2 * service.work_of(TINY)


def test_one_person_may_have_only_so_many_runs_waiting(tmp_path, monkeypatch, no_workers):
    monkeypatch.setenv("HYBRID_LAB_QUEUE_LIMIT", "2")
    first = service.submit(TINY, tmp_path, identity=ALICE)
    service.submit(TINY, tmp_path, identity=ALICE)

    with pytest.raises(SubmissionRefused, match="2 runs waiting or training"):
        service.submit(TINY, tmp_path, identity=ALICE)

    assert len(queue.queued_ids(tmp_path)) == 2
    other = service.submit(TINY, tmp_path, identity=BOB)  # the limit is per identity
    assert load_run(other.run_id, tmp_path).state is RunState.QUEUED
    service.stop(load_run(first.run_id, tmp_path), ALICE)  # a finished run no longer counts
    assert load_run(service.submit(TINY, tmp_path, identity=ALICE).run_id, tmp_path).state is RunState.QUEUED


def test_a_submit_counts_the_runs_waiting_without_reading_every_finished_run_again(tmp_path, no_workers):
    # The queue limits are checked against the process's index of the runs (core/run_index.py): a kept run that
    # has not changed is not read again at each press of Train, only the runs still queued or training are.
    for _ in range(20):
        make_run(tmp_path)
    service.submit(TINY, tmp_path, identity=ALICE)
    index = shared_index(tmp_path)
    before = index.folders_read

    service.submit(TINY, tmp_path, identity=ALICE)

    assert index.folders_read - before == 1  # the first submit's run, still queued; not the 20 finished ones


def test_the_limit_keys_on_the_identity_not_on_its_name(tmp_path, monkeypatch, no_workers):
    # Two people the provider calls by the same name are two people: the key is issuer + subject.
    monkeypatch.setenv("HYBRID_LAB_QUEUE_LIMIT", "1")
    twin = member({"iss": "https://id.example.org", "sub": "alice-2", "name": "Alice Liddell"}, frozenset())
    service.submit(TINY, tmp_path, identity=ALICE)

    assert load_run(service.submit(TINY, tmp_path, identity=twin).run_id, tmp_path).state is RunState.QUEUED


def test_each_guest_has_the_guest_queue_limit(tmp_path, monkeypatch, no_workers):
    monkeypatch.setenv("HYBRID_LAB_GUEST_QUEUE_LIMIT", "1")
    first, second = new_guest(), new_guest()
    service.submit(TINY, tmp_path, identity=first)

    with pytest.raises(SubmissionRefused, match="a guest may have 1 at once"):
        service.submit(TINY, tmp_path, identity=first)

    assert load_run(service.submit(TINY, tmp_path, identity=second).run_id, tmp_path).state is RunState.QUEUED


def test_all_guests_together_have_a_limit_however_many_tabs_they_open(tmp_path, monkeypatch, no_workers):
    monkeypatch.setenv("HYBRID_LAB_GUESTS_TOTAL", "3")
    for _ in range(3):
        service.submit(TINY, tmp_path, identity=new_guest())  # three tabs, three guests

    with pytest.raises(SubmissionRefused, match="guests already have 3 runs waiting or training") as refusal:
        service.submit(TINY, tmp_path, identity=new_guest())

    assert "HYBRID_LAB_GUESTS_TOTAL" in str(refusal.value)
    assert len(list_runs(tmp_path)) == 3
    # Signed-in people and the operator are not guests: the guests' total does not hold them back.
    assert load_run(service.submit(TINY, tmp_path, identity=ALICE).run_id, tmp_path).state is RunState.QUEUED
    assert load_run(service.submit(TINY, tmp_path, identity=OPERATOR).run_id, tmp_path).state is RunState.QUEUED


def test_an_engine_comparison_is_queued_whole_or_not_at_all(tmp_path, monkeypatch, no_workers):
    monkeypatch.setenv("HYBRID_LAB_QUEUE_LIMIT", "1")

    with pytest.raises(SubmissionRefused, match="this asks for 2 more"):
        service.submit_engine_comparison(TINY, tmp_path, identity=ALICE)

    assert list_runs(tmp_path) == []


def test_a_path_source_is_refused_before_the_path_is_looked_at(tmp_path, monkeypatch, no_workers):
    def looked_at(*args):
        pytest.fail(f"submit looked at the path {args} although files are not offered")

    monkeypatch.setattr(core.service, "check_data_path", looked_at)
    config = TINY.replace(source="path", data_path="/etc/passwd")

    for visitor in (ALICE, new_guest()):
        with pytest.raises(PermissionRefused, match="does not read its own files"):
            service.submit(config, tmp_path, identity=visitor)

    assert list_runs(tmp_path) == [] and no_workers == []


def test_with_files_off_not_even_an_operator_names_a_path(tmp_path, monkeypatch, no_workers):
    monkeypatch.setenv("HYBRID_LAB_FILES", "off")
    monkeypatch.setattr(core.service, "check_data_path", lambda *args: pytest.fail("the path was looked at"))

    with pytest.raises(SubmissionRefused, match="HYBRID_LAB_FILES=off"):
        service.submit(TINY.replace(source="path", data_path="/etc/passwd"), tmp_path, identity=OPERATOR)

    assert list_runs(tmp_path) == []


def test_a_missing_data_path_is_refused_in_words(tmp_path, no_workers):
    config = TINY.replace(source="path", data_path=str(tmp_path / "no-such.npz"))

    with pytest.raises(DatasetError, match="does not exist"):
        service.submit(config, tmp_path / "runs", identity=OPERATOR)

    assert list_runs(tmp_path / "runs") == []


# --- service settings ---------------------------------------------------------------------------------


def test_files_are_offered_to_operators_only_by_default():
    assert service.files_offered(OPERATOR) is True
    assert service.files_offered(member({"sub": "ops", "email": "ops@example.org"}, frozenset({"ops@example.org"})))
    assert service.files_offered(ALICE) is False
    assert service.files_offered(new_guest()) is False
    assert service.files_offered(reader()) is False


@pytest.mark.parametrize("choice, offered_to", [("on", {"operator", "member", "guest"}), ("off", set()),
                                                ("auto", {"operator"})])
def test_the_files_setting_says_who_may_name_files(monkeypatch, choice, offered_to):
    monkeypatch.setenv("HYBRID_LAB_FILES", choice)

    assert {identity.role.value for identity in (OPERATOR, ALICE, new_guest())
            if service.files_offered(identity)} == offered_to


def test_service_settings_have_their_defaults():
    assert service.service_setting("queue_limit") == 8
    assert service.service_setting("max_work") == 2e12
    assert service.service_setting("guest_queue_limit") == 2
    assert service.service_setting("guest_max_work") == 6e11 < service.service_setting("max_work")
    assert service.service_setting("guests_total") == 6
    assert service.service_setting("files") == "auto"
    assert service.service_setting("workers") == max(1, (os.cpu_count() or 2) - 1)
    assert service.service_setting("worker_memory") == 2048


@pytest.mark.parametrize("variable, name, text", [
    ("HYBRID_LAB_WORKERS", "workers", "abc"),
    ("HYBRID_LAB_WORKERS", "workers", "0"),
    ("HYBRID_LAB_QUEUE_LIMIT", "queue_limit", "2.5"),
    ("HYBRID_LAB_MAX_WORK", "max_work", "-1"),
    ("HYBRID_LAB_FILES", "files", "maybe"),
    ("HYBRID_LAB_WORKER_MEMORY", "worker_memory", "2GB"),
    ("HYBRID_LAB_WORKER_MEMORY", "worker_memory", "0"),
    ("HYBRID_LAB_GUEST_QUEUE_LIMIT", "guest_queue_limit", "0"),
    ("HYBRID_LAB_GUEST_MAX_WORK", "guest_max_work", "lots"),
    ("HYBRID_LAB_GUESTS_TOTAL", "guests_total", "-3"),
])
def test_a_bad_service_setting_names_its_variable(monkeypatch, variable, name, text):
    monkeypatch.setenv(variable, text)

    with pytest.raises(ValueError, match=variable) as error:
        service.service_setting(name)

    assert repr(text) in str(error.value)


@pytest.mark.parametrize("variable, value", [
    ("HYBRID_LAB_WORKERS", "0"), ("HYBRID_LAB_WORKER_MEMORY", "0"), ("HYBRID_LAB_BACKEND", "kubernetes"),
    # The app joins a cluster and never starts one (local) nor goes through Ray's client server (ray://).
    ("HYBRID_LAB_RAY_ADDRESS", "local"), ("HYBRID_LAB_RAY_ADDRESS", "ray://head:10001")])
def test_a_bad_pool_setting_starts_no_pool_and_queues_nothing(tmp_path, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)  # with the local backend: its address is checked whatever the backend

    with pytest.raises(ValueError, match=variable):
        service.ensure_pool(tmp_path)
    with pytest.raises(ValueError, match=variable):
        service.submit(TINY, tmp_path, identity=OPERATOR)

    assert not (tmp_path / ".workers").exists()
    assert list_runs(tmp_path) == []


# --- the pool's owner -----------------------------------------------------------------------------------


class FakePool:
    """Stands in for WorkerPool: records that it started and stopped, starts no process."""

    made: list["FakePool"] = []

    def __init__(self, runs_dir, size):
        self.runs_dir, self.size, self.events = runs_dir, size, []
        self.stopped = threading.Event()
        FakePool.made.append(self)

    def start(self):
        self.events.append("start")

    def stop(self):
        self.events.append("stop")
        self.stopped.set()


def test_serving_owns_one_pool_for_its_block(tmp_path, monkeypatch):
    monkeypatch.setattr(service, "WorkerPool", FakePool)
    monkeypatch.setattr(service, "POOLS", service.PoolKeeper())
    FakePool.made = []

    with pytest.raises(RuntimeError):
        with service.serving(tmp_path) as pool:
            assert service.ensure_pool(tmp_path) is pool  # a page that submits finds the server's pool
            raise RuntimeError("the server stops, however it stops")

    assert FakePool.made == [pool]
    assert pool.events == ["start", "start", "stop"]  # start() is a no-op for a pool already started
    assert service.POOLS.pools == {}
    assert service.ensure_pool(tmp_path) is not pool  # a page after that gets a fresh pool

