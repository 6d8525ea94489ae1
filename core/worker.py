"""A warm worker of the training service: `python -m core.worker --serve RUNS_DIR` (core/service.py starts them).

It lowers its CPU priority, imports TensorFlow, decides once what data source "auto" means, compiles the
article's network, and then trains queued runs one after another, keeping each network shape it has
compiled (core/engines/function.py: NETWORKS). Why a process and not a thread of the server: a Streamlit
server clears Keras' session and collects garbage after every script run, which slowed a training thread
in the server from ~700 to ~20 steps/s; a process also keeps the server responsive.

A worker stops its run after the current chunk of steps (kept as "stopped", with all it logged) and exits
when it gets SIGINT or SIGTERM, or when the process that started it (the app server) has gone, however it
went.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from core import queue
from core.records import StopReason

NICENESS = 10  # below the server: pages stay quick while workers take the cores
POLL_SECONDS = 0.02  # how often an idle worker looks at the queue (a directory listing)
PARENT_CHECK_SECONDS = 0.5


class StopSignal:
    """Set by SIGINT, SIGTERM or the parent's end; says why, for the stopped run's status."""

    def __init__(self):
        self.event = threading.Event()
        self.reason = StopReason.WORKER_STOPPED

    def set(self, reason: StopReason) -> None:
        if not self.event.is_set():
            self.reason = reason
        self.event.set()

    def watch(self, parent: int) -> None:
        """Stop on SIGINT or SIGTERM, and when the parent process has gone (the server was killed)."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.set(StopReason.SERVER_STOPPED))

        def check_parent():
            while not self.event.wait(PARENT_CHECK_SECONDS):
                if os.getppid() != parent:
                    self.set(StopReason.SERVER_STOPPED)

        threading.Thread(target=check_parent, name="parent-watch", daemon=True).start()


def warm_up() -> None:
    """Pay the fixed costs before the first run: data, the article's network traced and compiled, export."""
    from core.config import TrainConfig
    from core.data import load_dataset
    from core.engines import engine_class
    from core.network import build_export_model
    from core.training import BatchSchedule

    config = TrainConfig()
    dataset = load_dataset(config.dataset, config.source)
    with tempfile.TemporaryDirectory(prefix="warm-up-") as scratch:
        engine = engine_class(config.engine)(config, dataset, Path(scratch))
        schedule = BatchSchedule(len(dataset.y_train), config.batch_size, config.seed)
        engine.train_chunk(schedule.take(engine.chunk_steps), 0)
        engine.train_chunk(schedule.take(3), 2 * engine.chunk_steps)  # the plain graph, for odd-sized chunks
        engine.predict(dataset.x_test[:10])
        build_export_model(config, engine.weights()).save(Path(scratch) / "model.keras")
        engine.close()


def serve(runs_dir: Path, parent: int) -> int:
    """Train queued runs until told to stop or `parent` (the server's pid) has gone; returns the exit code."""
    stop = StopSignal()
    stop.watch(parent)
    os.nice(NICENESS)
    from core.config import MAX_CPU_REPLICAS
    from core.engines import distribute
    from core.engines.function import NETWORKS

    # Before TensorFlow starts: the CPU split that mirrored runs use (single-device runs take the first device).
    distribute.split_cpu(MAX_CPU_REPLICAS)
    from core.training import train

    # Compiling is paid once per shape here, so XLA pays off from the first run of a shape.
    NETWORKS.xla_min_steps = 0
    started = time.monotonic()
    try:
        warm_up()
        print(f"worker {os.getpid()}: warm after {time.monotonic() - started:.1f} s", flush=True)
    except Exception:  # a failed warm-up only costs the first run its speed
        traceback.print_exc()
    while not stop.event.is_set():
        run = queue.take_next(runs_dir)
        if run is None:
            stop.event.wait(POLL_SECONDS)
            continue
        print(f"worker {os.getpid()}: training {run.run_id}", flush=True)
        train(run.config, run=run, should_stop=stop.event.is_set,
              stop_reason=lambda: stop.reason if stop.event.is_set() else None)
    return 0


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
