"""A warm worker of the training service: `python -m core.worker --serve RUNS_DIR` (core/pool.py starts them), or
the same loop (`serve_queue`) on a thread of a Ray actor (core/ray_backend.py).

It lowers its CPU priority, imports TensorFlow, decides once what data source "auto" means, compiles the
article's network, and then trains queued runs one after another, keeping the network shapes it has
compiled in a cache of its own (core/engines/function.py: NetworkCache) that it hands to each run. Why a
process and not a thread of the server: a Streamlit server clears Keras' session and collects garbage after
every script run, which slowed a training thread in the server from ~700 to ~20 steps/s; a process also keeps
the server responsive.

A worker stops its run after the current chunk of steps (kept as "stopped", with all it logged) and exits
when it gets SIGINT or SIGTERM, or when the process that started it (the app server) has gone, however it
went. It also exits after a run that leaves it above its memory budget (HYBRID_LAB_WORKER_MEMORY): every
shape TensorFlow compiles keeps some memory for good, so a fresh worker, started by the pool, takes over.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from core import queue, queue_files, service
from core.records import StopReason
from core.run_folder import Run

NICENESS = 10  # below the server: pages stay quick while workers take the cores
POLL_SECONDS = 0.02  # how often an idle worker looks at the queue (a stat of its folder; see queue.QueueWatch)
PARENT_CHECK_SECONDS = 0.5


class StopSignal:
    """Set by SIGINT, SIGTERM or the parent's end; says why, for the stopped run's status."""

    def __init__(self):
        self.event = threading.Event()
        self.reason = StopReason.WORKER_STOPPED
        self.signalled = False  # set by the signal handler, which must take no lock

    def set(self, reason: StopReason) -> None:
        if not self.event.is_set():
            self.reason = reason
        self.event.set()

    def watch(self, parent: int) -> None:
        """Stop on SIGINT or SIGTERM, and when the parent process has gone (the server was killed).

        The handler only notes the signal; the watching thread sets the event. Python runs a handler in the
        main thread between two bytecodes, possibly while that thread holds the event's lock (re-taken in
        `event.wait` as it times out), and setting the event there waited for that lock forever: a worker told
        to stop, its server gone, hung on with its memory (seen after a test server was stopped).
        """
        def note(*_):
            self.signalled = True

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, note)

        def check_parent():
            while not self.event.wait(PARENT_CHECK_SECONDS):
                if self.signalled or os.getppid() != parent:
                    self.set(StopReason.SERVER_STOPPED)

        threading.Thread(target=check_parent, name="parent-watch", daemon=True).start()


def resident_mb() -> float:
    """This process's resident memory in MB (Linux: /proc/self/statm)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_budget() -> float:
    """HYBRID_LAB_WORKER_MEMORY in MB; a bad value is logged and the default used (the pool refuses to start
    with one, so this is a value changed under a running server)."""
    try:
        return service.service_setting("worker_memory")
    except ValueError as error:
        print(f"worker {os.getpid()}: {error}; using the default", flush=True)
        return service.setting_default("worker_memory")


def get_ready(networks) -> None:
    """What every run needs before its first step: TensorFlow imported and the default data loaded. The article's
    shape is noted for XLA, which `warm_up_step` compiles once nothing waits."""
    from core.config import TrainConfig
    from core.data import load_dataset

    config = TrainConfig()
    networks.want(config, load_dataset(config.dataset, config.source))


def warm_up_step(networks, exported: list) -> bool:
    """One piece of warming up, done while no run waits: first the plain graph and the model export of the
    article's network (what a cold first run pays beyond TensorFlow and the data), then one shape's XLA
    compilation. Returns False when nothing is left to warm."""
    if not exported:
        exported.append(True)
        _warm_export(networks)
        return True
    return networks.compile_pending()


def _warm_export(networks) -> None:
    from core.config import TrainConfig
    from core.data import load_dataset
    from core.engines.function import FunctionEngine
    from core.network import build_export_model
    from core.training import BatchSchedule

    config = TrainConfig()
    dataset = load_dataset(config.dataset, config.source)
    with tempfile.TemporaryDirectory(prefix="warm-up-") as scratch:
        engine = FunctionEngine(config, dataset, Path(scratch), cache=networks)
        schedule = BatchSchedule(len(dataset.y_train), config.batch_size, config.seed)
        engine.train_chunk(schedule.take(3), 0)
        engine.predict(dataset.x_test[:10])
        build_export_model(config, engine.weights()).save(Path(scratch) / "model.keras")
        engine.close()


def serve(runs_dir: Path, parent: int) -> int:
    """Train queued runs until told to stop, `parent` (the server's pid) has gone or the memory budget is
    passed; returns the exit code."""
    stop = StopSignal()
    stop.watch(parent)
    serve_queue(runs_dir, stop)
    return 0


def serve_queue(runs_dir: Path, stop: StopSignal, node_id: str | None = None,
                ready: threading.Event | None = None, warm: threading.Event | None = None) -> bool:
    """Get ready (then set `ready`), then train queued runs until `stop` is set (False) or a run has left this
    worker above its memory budget (True: the caller makes way for a fresh worker); `warm` is set once nothing
    is left to warm up. Runs this worker takes record `node_id`, the Ray node it runs on (core/ray_backend.py:
    the same loop in a Ray actor).

    A run queued while the worker starts trains as soon as TensorFlow is imported and the data loaded: the rest
    of warming up (tracing, the model export, XLA) is done in pieces while no run waits, and a run never waits
    for more than the piece under way.
    """
    os.nice(NICENESS)
    budget = memory_budget()
    started = time.monotonic()
    networks = _prepare()
    print(f"worker {os.getpid()}: ready after {time.monotonic() - started:.1f} s", flush=True)
    if ready is not None:
        ready.set()
    watch, ignored, exported, warmed = queue.QueueWatch(runs_dir), set(), [], False
    while not stop.event.is_set():
        run = next_run(runs_dir, watch, ignored, node_id)
        if run is None:
            warmed = _idle(networks, exported, warmed, started)
            if warmed:
                if warm is not None:
                    warm.set()
                stop.event.wait(POLL_SECONDS)
            continue
        train_one(run, networks, stop)
        memory = resident_mb()
        print(f"worker {os.getpid()}: finished {run.run_id}; resident memory {memory:,.0f} MB of a budget of "
              f"{budget:,.0f} MB", flush=True)
        if memory > budget and not stop.event.is_set():
            print(f"worker {os.getpid()}: above its memory budget (HYBRID_LAB_WORKER_MEMORY): exiting so that a "
                  "fresh worker takes over", flush=True)
            return True
    return False


def _prepare():
    """Split the CPU, import TensorFlow and load the default data; returns this worker's network cache."""
    from core.config import MAX_CPU_REPLICAS
    from core.engines import distribute
    from core.engines.function import NetworkCache

    # Before TensorFlow starts: the CPU split that mirrored runs use (single-device runs take the first device).
    distribute.split_cpu(MAX_CPU_REPLICAS)
    # This worker's compiled networks. Compiling is paid once per shape here, so XLA pays off from the second
    # run of a shape on (XLA always, min_steps 0), compiled while the worker is idle.
    networks = NetworkCache(xla_min_steps=0, compile_later=True)
    try:
        get_ready(networks)
    except Exception:  # the run that needs the data will say what is wrong with it
        traceback.print_exc()
    return networks


def _idle(networks, exported: list, warm: bool, started: float) -> bool:
    """Warm one more piece while nothing waits; True once nothing is left (the worker then only polls)."""
    try:
        if warm_up_step(networks, exported):
            return False
    except Exception:  # a failed warm-up only costs a later run its speed
        traceback.print_exc()
        networks.pending.clear()
    if not warm:
        print(f"worker {os.getpid()}: warm after {time.monotonic() - started:.1f} s", flush=True)
    return True


def next_run(runs_dir: Path, watch: queue.QueueWatch, ignored: set[str], node_id: str | None = None) -> Run | None:
    """The next queued run to train, if the queue folder changed since the last look; what in it is not a
    queue entry is moved aside first (`ignored`: names that could not be, kept by this worker)."""
    if not watch.changed():
        return None
    moved = queue.tidy(runs_dir, ignored)
    if moved:
        what = "name that is not a queue entry" if moved == 1 else "names that are not queue entries"
        print(f"worker {os.getpid()}: moved {moved:,} {what} to {queue_files.rejected_folder(runs_dir)} "
              f"(see {queue_files.REJECTED_LOG} there)", flush=True)
    return queue.take_next(runs_dir, refuse=service.refusal, node_id=node_id)


def train_one(run: Run, networks, stop: StopSignal) -> None:
    """Train one taken run; a run whose folder was deleted while it trained ends here with one line of log."""
    from core.training import train

    print(f"worker {os.getpid()}: training {run.run_id}", flush=True)
    try:
        train(run.config, run=run, networks=networks, should_stop=stop.event.is_set,
              stop_reason=lambda: stop.reason if stop.event.is_set() else None)
    except OSError as error:
        # train() records any failure in the run folder; it raises only when even that cannot be written.
        if run.path.exists() or error.errno != errno.ENOENT:
            raise
        print(f"worker {os.getpid()}: the folder of {run.run_id} was deleted while it trained; it ends here",
              flush=True)


def main(argv: list[str]) -> int:
    """`--serve RUNS_DIR`: train the queued runs of that runs directory until stopped."""
    parser = argparse.ArgumentParser(prog="python -m core.worker")
    parser.add_argument("--serve", type=Path, metavar="RUNS_DIR", required=True,
                        help="train queued runs of this runs directory")
    parser.add_argument("--parent", type=int, required=True,
                        help="the pid of the server that started this worker: when it has gone, the worker stops")
    args = parser.parse_args(argv)
    return serve(args.serve, args.parent)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
