"""Tests for the warm training service with real workers: runs are submitted, worker processes train them,
and the run folders are read back as a page would read them.

A worker imports TensorFlow and warms up (several seconds), so the pool tests share one pool per module;
the server-stop tests start a stand-in server process of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from core import queue, queue_files, service
from core.access import OPERATOR
from core.data import load_dataset
from core.engines.function import NETWORKS, NetworkCache
from core.queue_files import QUEUE_DIR
from core.records import METRICS_FILE, RunState, StopReason
from core.store import load_run
from core.training import train
from tests.factories import TINY, small_offline_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 120.0  # seconds: generous, for a worker importing TensorFlow on a busy two-core machine
POLL = 0.05
# The article's network (which a worker has compiled while warming up), for 200,000 steps: over a minute
# here, so it is still training when a test stops it; rare evaluations keep it from loading the machine.
LONG = TINY.replace(hidden_units=[128, 128], steps=200_000, eval_every=100_000)


# --- waiting on runs and workers ------------------------------------------------------------------------


def worker_log_tail(runs_dir: Path, lines: int = 40) -> str:
    """The end of every worker log of the runs directory, for a failure message."""
    logs = sorted((Path(runs_dir) / service.WORKERS_DIR).glob("*.log"))
    if not logs:
        return "(no worker log)"
    return "\n".join(f"--- {log.name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                     for log in logs)


def wait_until(condition, describe, runs_dir: Path, timeout: float = DEADLINE):
    """Poll condition() until it returns something true; fail with describe() and the worker logs if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f} s: {describe()}\nworker logs:\n{worker_log_tail(runs_dir)}")
        time.sleep(POLL)


def wait_for_state(run_id: str, runs_dir: Path, *states: RunState, timeout: float = DEADLINE):
    """The run, once it is in one of `states`."""
    def describe():
        run = load_run(run_id, runs_dir)
        return f"run {run_id} is {run.state} ({run.message!r}), expected {', '.join(states)}"

    return wait_until(lambda: (run := load_run(run_id, runs_dir)).state in states and run, describe, runs_dir,
                      timeout)


def process_gone(pid: int) -> bool:
    """True once the process has exited (a zombie nobody reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def losses_and_evaluations(run) -> tuple[np.ndarray, dict]:
    return np.array(run.read_metrics()["loss"]), run.read_evaluations()


# --- a cached network trains as a fresh one does (in this process) --------------------------------------


@pytest.fixture(scope="module")
def offline():
    return load_dataset("mnist", "offline")


def cold_then_warm(config, between, runs_dir: Path, dataset):
    """Train `config` on a fresh cache (cold), then `between`, then `config` again on the cached network."""
    NETWORKS.clear()
    cold = train(config, runs_dir, dataset=dataset)
    (network,) = NETWORKS.networks.values()
    tracings = network.any_chunk.experimental_get_tracing_count()
    other = train(between, runs_dir, dataset=dataset)
    warm = train(config, runs_dir, dataset=dataset)
    for run in (cold, other, warm):
        assert run.state is RunState.COMPLETED, run.message
    assert list(NETWORKS.networks.values()) == [network]  # one shape: the second and third runs reused it
    assert network.any_chunk.experimental_get_tracing_count() == tracings  # and traced nothing again
    return cold, other, warm


@pytest.mark.parametrize("config, between", [
    (TINY, TINY.replace(seed=7)),
    # With dropout the seed is part of the shape, so the run between changes the learning rate instead.
    (TINY.replace(dropout_rate=0.3, optimizer="adam", learning_rate=0.01), TINY.replace(
        dropout_rate=0.3, optimizer="adam", learning_rate=0.001)),
], ids=["sgd", "dropout-adam"])
def test_a_warm_run_trains_exactly_as_a_cold_one(tmp_path, offline, config, between):
    cold, other, warm = cold_then_warm(config, between, tmp_path, offline)

    cold_losses, cold_evaluations = losses_and_evaluations(cold)
    warm_losses, warm_evaluations = losses_and_evaluations(warm)
    other_losses, _ = losses_and_evaluations(other)
    assert len(cold_losses) == config.steps
    assert np.array_equal(cold_losses, warm_losses)
    assert cold_evaluations == warm_evaluations
    assert warm.summary.test_accuracy == cold.summary.test_accuracy
    assert not np.array_equal(other_losses, cold_losses)  # the run between did train differently


def test_a_warm_run_takes_its_own_learning_rate(tmp_path, offline):
    NETWORKS.clear()
    cold = train(TINY, tmp_path, dataset=offline)
    (network,) = NETWORKS.networks.values()
    warm = train(TINY.replace(learning_rate=0.05), tmp_path, dataset=offline)

    assert list(NETWORKS.networks.values()) == [network]
    cold_losses, _ = losses_and_evaluations(cold)
    warm_losses, _ = losses_and_evaluations(warm)
    assert warm_losses[0] == cold_losses[0]  # the same initial weights, reset...
    assert not np.array_equal(warm_losses[1:], cold_losses[1:])  # ...but smaller steps from there on


def test_a_run_trains_in_the_cache_its_caller_hands_down(tmp_path, offline):
    NETWORKS.clear()
    mine = NetworkCache(xla_min_steps=0)

    run = train(TINY.replace(steps=20, eval_every=20), tmp_path, dataset=offline, networks=mine)

    assert run.state is RunState.COMPLETED, run.message
    (network,) = mine.networks.values()
    assert network.use_xla  # the caller's cache, with the caller's setting
    assert NETWORKS.networks == {}  # the module's own cache was neither used nor changed
    assert NETWORKS.xla_min_steps == NetworkCache().xla_min_steps


def test_a_warm_workers_cache_trains_a_new_shape_at_once_and_compiles_it_with_xla_later(tmp_path, offline):
    # Issue 17: the first press after the server starts must not wait for XLA; the worker compiles when idle.
    networks = NetworkCache(xla_min_steps=0, compile_later=True)
    config = TINY.replace(steps=20, eval_every=20)

    first = train(config, tmp_path, dataset=offline, networks=networks)

    (plain,) = networks.networks.values()
    assert not plain.use_xla and plain.full_chunk.experimental_get_tracing_count() == 0  # nothing compiled
    assert len(networks.pending) == 1  # ...but the shape waits to be
    assert networks.compile_pending() is True and networks.compile_pending() is False
    (compiled,) = networks.networks.values()  # the plain network it replaces is gone
    assert compiled.use_xla and compiled.full_chunk.experimental_get_tracing_count() == 1
    second = train(config, tmp_path, dataset=offline, networks=networks)
    assert list(networks.networks.values()) == [compiled]  # the next run of the shape used the XLA network
    assert compiled.full_chunk.experimental_get_tracing_count() == 1  # and compiled nothing more
    for run in (first, second):
        assert run.state is RunState.COMPLETED, run.message
    # The same training either way, within XLA's rounding of the same sums.
    assert np.allclose(losses_and_evaluations(first)[0], losses_and_evaluations(second)[0], rtol=1e-4)


def test_a_config_that_asks_for_xla_gets_it_even_before_the_worker_is_idle(offline):
    networks = NetworkCache(xla_min_steps=0, compile_later=True)

    network = networks.get(TINY.replace(xla=True), offline)

    assert network.use_xla and not networks.pending  # asked for by name: compiled now, as the person chose


def test_the_cached_networks_of_one_dataset_share_its_training_tensors(offline):
    networks = NetworkCache()

    one = networks.get(TINY, offline)
    other = networks.get(TINY.replace(hidden_units=[32]), offline)

    assert one is not other
    assert other.x_train is one.x_train and other.y_train is one.y_train  # one copy of the images, not two
    assert networks.get(TINY, small_offline_dataset()).x_train is not one.x_train  # another dataset: its own


# --- a pool of one worker -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("service-runs")


@pytest.fixture(scope="module")
def one_worker():
    """HYBRID_LAB_WORKERS=1 for the module (and for any worker its pools restart)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HYBRID_LAB_WORKERS", "1")
        yield


@pytest.fixture(scope="module")
def pool(runs_dir, one_worker):
    """One warm worker for the runs directory, shared by the module's pool tests."""
    pool = service.ensure_pool(runs_dir)
    yield pool
    pool.stop()


def training_order(runs_dir: Path) -> list[str]:
    """The run ids the workers started, in the order their logs say."""
    return [line.split()[-1] for log in sorted((runs_dir / service.WORKERS_DIR).glob("*.log"))
            for line in log.read_text(errors="replace").splitlines() if ": training " in line]


def wait_for_training(run_id: str, runs_dir: Path):
    """The run, once a worker has trained at least one of its steps (so stopping it keeps a model)."""
    def describe():
        run = load_run(run_id, runs_dir)
        return f"run {run_id} is {run.state} at step {run.step} ({run.message!r}), expected to be training"

    return wait_until(lambda: (run := load_run(run_id, runs_dir)).state is RunState.RUNNING and run.step > 0
                      and run, describe, runs_dir)


def start_long_run(runs_dir: Path):
    """Submit a run that will not finish by itself and wait until a worker trains it."""
    long = service.submit(LONG, runs_dir, identity=OPERATOR)
    return wait_for_training(long.run_id, runs_dir)


def stop_and_wait(run, runs_dir: Path):
    service.stop(load_run(run.run_id, runs_dir), OPERATOR)
    return wait_for_state(run.run_id, runs_dir, RunState.STOPPED, RunState.INTERRUPTED, RunState.FAILED,
                          RunState.COMPLETED)


RANK = {RunState.QUEUED: 0, RunState.RUNNING: 1, RunState.COMPLETED: 2}


def observe(ids: list[str], runs_dir: Path) -> list[RunState]:
    """The runs' states, read newest first, and what must hold at any moment of a one-worker FIFO queue.

    Runs start in order and one at a time, and a state only moves forward. Reading the newest first means
    an older run is read later, so it can only look further along than it was: a read order that made a
    correct queue look wrong is impossible, and any violation seen here is real.
    """
    snapshot = queue.queued_ids(runs_dir)
    assert snapshot == ids[len(ids) - len(snapshot):], f"the queue {snapshot} is not the tail of {ids}"
    for place, run_id in enumerate(snapshot, 1):
        now = queue.position(run_id, runs_dir)
        assert now is None or 1 <= now <= place, f"{run_id} went from position {place} to {now}"
    states = [load_run(run_id, runs_dir).state for run_id in reversed(ids)][::-1]
    assert all(state in RANK for state in states), states
    assert states.count(RunState.RUNNING) <= 1, states
    ranks = [RANK[state] for state in states]
    assert ranks == sorted(ranks, reverse=True), f"a later run got ahead of an earlier one: {states}"
    return states


def test_a_pool_trains_runs_one_at_a_time_in_queue_order(runs_dir, pool):
    long = start_long_run(runs_dir)  # keeps the one worker busy while three runs queue behind it
    ids = [service.submit(TINY.replace(seed=seed), runs_dir, identity=OPERATOR).run_id for seed in (1, 2, 3)]

    assert [queue.position(run_id, runs_dir) for run_id in ids] == [1, 2, 3]
    assert all(load_run(run_id, runs_dir).state is RunState.QUEUED for run_id in ids)
    assert load_run(long.run_id, runs_dir).state is RunState.RUNNING
    stop_and_wait(long, runs_dir)
    wait_until(lambda: observe(ids, runs_dir) == [RunState.COMPLETED] * 3,
               lambda: f"states {[load_run(run_id, runs_dir).state for run_id in ids]}", runs_dir)

    runs = [load_run(run_id, runs_dir) for run_id in ids]
    assert all(run.has_model for run in runs)
    assert len(pool.pids) == 1
    assert {run.status.pid for run in runs} == set(pool.pids)  # the one worker trained all three
    assert training_order(runs_dir)[-4:] == [long.run_id, *ids]
    assert "ready after" in worker_log_tail(runs_dir)  # warming up goes on between runs


def test_a_run_stopped_while_queued_never_trains(runs_dir, pool):
    long = start_long_run(runs_dir)
    cancelled = service.submit(TINY, runs_dir, identity=OPERATOR)

    service.stop(load_run(cancelled.run_id, runs_dir), OPERATOR)

    run = load_run(cancelled.run_id, runs_dir)
    assert run.state is RunState.STOPPED
    assert run.message == "cancelled while queued: it never started"
    assert queue.queued_ids(runs_dir) == []
    long = stop_and_wait(long, runs_dir)
    assert long.state is RunState.STOPPED, long.message
    assert 0 < long.step < LONG.steps and long.has_model
    # The worker is free now and takes runs oldest first: had the cancelled run still been in line, it
    # would have trained before this one.
    after = service.submit(TINY, runs_dir, identity=OPERATOR)
    assert wait_for_state(after.run_id, runs_dir, RunState.COMPLETED).has_model
    run = load_run(cancelled.run_id, runs_dir)
    assert run.state is RunState.STOPPED and run.message == "cancelled while queued: it never started"
    assert not (run.path / METRICS_FILE).exists()
    assert cancelled.run_id not in training_order(runs_dir)


def worker_log(runs_dir: Path) -> str:
    return "\n".join(log.read_text(errors="replace") for log in sorted((runs_dir / service.WORKERS_DIR).glob("*.log")))


def test_names_a_worker_cannot_use_never_stop_it_nor_cost_a_run(runs_dir, pool):
    (worker,) = pool.pids
    # Queued behind a long run, so that the garbage goes in before the worker looks again.
    long = start_long_run(runs_dir)
    named = service.submit(TINY.replace(seed=5), runs_dir, identity=OPERATOR)
    folder = runs_dir / QUEUE_DIR
    too_long = "1" * 250 + "-x"  # ENAMETOOLONG once renamed to its taken name
    impostor = f"{0:020d}-{named.run_id}"  # a folder, first in line, naming a queued run
    garbage = [too_long, impostor] + [f"garbage-{i}" for i in range(200)]
    (folder / too_long).touch()
    (folder / impostor).mkdir()
    for name in garbage[2:]:
        (folder / name).touch()
    after = service.submit(TINY, runs_dir, identity=OPERATOR)

    stop_and_wait(long, runs_dir)
    for run in (named, after):
        run = wait_for_state(run.run_id, runs_dir, RunState.COMPLETED, RunState.FAILED, RunState.INTERRUPTED)
        assert run.state is RunState.COMPLETED, run.message
        assert run.status.pid == worker  # the same worker: it never died
    assert pool.pids == [worker]
    assert sorted(os.listdir(queue_files.rejected_folder(runs_dir))) == sorted(garbage + [queue_files.REJECTED_LOG])
    assert [name for name in os.listdir(folder) if name != queue_files.REJECTED_DIR] == []
    assert "moved 201 names that are not queue entries" in worker_log(runs_dir)
    assert "Traceback" not in worker_log(runs_dir)


def test_a_run_whose_folder_is_deleted_while_it_trains_ends_quietly(runs_dir, pool):
    (worker,) = pool.pids
    long = start_long_run(runs_dir)

    gone = runs_dir.parent / f"deleted-{long.run_id}"
    os.rename(long.path, gone)  # deleted at once, as far as the worker can tell (rmtree races its writes)
    shutil.rmtree(gone, ignore_errors=True)

    after = wait_for_state(service.submit(TINY, runs_dir, identity=OPERATOR).run_id, runs_dir, RunState.COMPLETED)
    assert after.status.pid == worker and pool.pids == [worker]
    log = worker_log(runs_dir)
    assert f"the folder of {long.run_id} was deleted while it trained; it ends here" in log
    assert "Traceback" not in log


def test_a_queued_run_edited_past_the_limits_is_refused_by_the_worker(runs_dir, pool):
    long = start_long_run(runs_dir)
    edited = service.submit(TINY, runs_dir, identity=OPERATOR)
    after = service.submit(TINY.replace(seed=3), runs_dir, identity=OPERATOR)
    values = json.loads(edited.config_path.read_text())
    values.update(steps=200_000, batch_size=4096, hidden_units=[1024] * 4)
    edited.config_path.write_text(json.dumps(values))

    stop_and_wait(long, runs_dir)

    assert wait_for_state(after.run_id, runs_dir, RunState.COMPLETED).has_model  # the queue went on
    edited = load_run(edited.run_id, runs_dir)
    assert edited.state is RunState.FAILED
    assert edited.message.startswith("refused when a worker took it: this run is too big for this server")
    assert edited.step == 0 and not edited.has_model
    assert edited.run_id not in training_order(runs_dir)


def test_a_killed_worker_is_replaced_and_its_run_reads_interrupted(runs_dir, pool):
    long = start_long_run(runs_dir)
    killed = long.status.pid
    assert killed in pool.pids

    os.kill(killed, signal.SIGKILL)

    run = wait_for_state(long.run_id, runs_dir, RunState.INTERRUPTED)
    assert run.message == "the process training this run ended before it finished"
    wait_until(lambda: pool.pids and killed not in pool.pids, lambda: f"the pool's workers are {pool.pids}",
               runs_dir)
    assert len(pool.pids) == 1
    after = service.submit(TINY, runs_dir, identity=OPERATOR)
    run = wait_for_state(after.run_id, runs_dir, RunState.COMPLETED)
    assert run.has_model and run.status.pid == pool.pids[0] != killed


# --- the memory budget ---------------------------------------------------------------------------------


def test_a_worker_past_its_memory_budget_finishes_its_run_and_makes_way(tmp_path, one_worker, monkeypatch):
    monkeypatch.setenv("HYBRID_LAB_WORKER_MEMORY", "100")  # MB: less than any warm worker takes
    runs_dir = tmp_path / "runs"
    pool = service.ensure_pool(runs_dir)
    try:
        first = wait_for_state(service.submit(TINY, runs_dir, identity=OPERATOR).run_id, runs_dir, RunState.COMPLETED)
        assert first.has_model
        old = first.status.pid
        wait_until(lambda: pool.pids and old not in pool.pids, lambda: f"the pool's workers are {pool.pids}",
                   runs_dir)
        assert "above its memory budget (HYBRID_LAB_WORKER_MEMORY)" in worker_log_tail(runs_dir)
        second = wait_for_state(service.submit(TINY, runs_dir, identity=OPERATOR).run_id, runs_dir, RunState.COMPLETED)
        assert second.status.pid not in (old, None)
        assert "Traceback" not in worker_log(runs_dir)
    finally:
        pool.stop()


# --- the server stops -----------------------------------------------------------------------------------


SERVER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from core import service
    from core.access import OPERATOR
    from core.config import TrainConfig
    from tests.factories import TINY, small_offline_dataset

    runs_dir = Path(sys.argv[1])
    service.ensure_pool(runs_dir)
    long = service.submit(TrainConfig.from_dict(json.loads(sys.argv[2])), runs_dir, identity=OPERATOR)
    waiting = service.submit(TINY, runs_dir, identity=OPERATOR)
    print(long.run_id, waiting.run_id, flush=True)
    while True:
        time.sleep(60)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_when_the_server_stops_its_run_is_kept_stopped_and_the_queue_waits(tmp_path, one_worker, signum):
    runs_dir = tmp_path / "runs"
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(runs_dir), json.dumps(LONG.to_dict())],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = None
    try:
        line = server.stdout.readline()
        assert line, f"the server printed nothing: {server.communicate(timeout=30)[1]}"
        long_id, waiting_id = line.split()
        long = wait_for_training(long_id, runs_dir)
        worker = long.status.pid
        # A bare Python process dies on SIGTERM without running its cleanup, as it does on SIGKILL: the
        # workers must notice that their parent is gone.
        server.send_signal(signum)
        server.wait(timeout=30)

        long = wait_for_state(long_id, runs_dir, RunState.STOPPED, RunState.INTERRUPTED, RunState.FAILED)
        assert long.state is RunState.STOPPED, long.message
        assert long.status.stop_reason is StopReason.SERVER_STOPPED and "the app server stopped" in long.message
        assert 0 < long.step < LONG.steps and long.has_model
        wait_until(lambda: process_gone(worker), lambda: f"worker {worker} is still running", runs_dir)
        waiting = load_run(waiting_id, runs_dir)
        assert waiting.state is RunState.QUEUED, waiting.message
        assert (runs_dir / QUEUE_DIR / waiting.status.queue_entry).is_file()
        assert queue.queued_ids(runs_dir) == [waiting_id]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if worker is not None and not process_gone(worker):
            os.kill(worker, signal.SIGKILL)  # a worker that missed the server's end must not outlive the test

    # The app serves again: its pool trains what was left in the queue.
    pool = service.ensure_pool(runs_dir)
    try:
        run = wait_for_state(waiting_id, runs_dir, RunState.COMPLETED)
        assert run.has_model and run.status.pid in pool.pids
    finally:
        pool.stop()
