"""The local backend of the training service: a pool of warm worker processes on this machine, one per slot,
each `python -m core.worker --serve RUNS_DIR`, restarted when one dies (core/service.py decides which backend
serves a runs directory; core/ray_backend.py is the other one).

A pool needs only `start`, `stop` and `stopped`, which the Ray pool has too; PoolKeeper keeps one per runs
directory for the process. Nothing here imports TensorFlow or Ray.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKERS_DIR = ".workers"  # the pool's logs, beside the queue in the runs directory
MONITOR_SECONDS = 1.0  # how often the pool looks for workers that died, to start new ones



class WorkerPool:
    """Warm worker processes for one runs directory, started on demand and restarted when one dies."""

    def __init__(self, runs_dir: Path, size: int):
        self.runs_dir, self.size = Path(runs_dir).resolve(), size
        self.workers: list[subprocess.Popen | None] = [None] * size  # one slot per worker, each with its own log
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.monitor = threading.Thread(target=self._watch, name="worker-pool", daemon=True)

    def start(self) -> None:
        """Start the workers (a no-op for those already running) and the thread that keeps them alive."""
        with self.lock:
            self._fill()
            if not self.monitor.is_alive() and not self.stopped.is_set():
                self.monitor.start()

    def _fill(self) -> None:
        """Start a worker in every empty slot (caller holds the lock); never after stop()."""
        if self.stopped.is_set():
            return
        logs = self.runs_dir / WORKERS_DIR
        logs.mkdir(parents=True, exist_ok=True)
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        for slot, worker in enumerate(self.workers):
            if worker is not None and worker.poll() is None:
                continue
            with open(logs / f"worker-{slot + 1}.log", "ab") as log:
                self.workers[slot] = subprocess.Popen(
                    [sys.executable, "-m", "core.worker", "--serve", str(self.runs_dir), "--parent", str(os.getpid())],
                    cwd=REPO_ROOT, env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def _watch(self) -> None:
        while not self.stopped.wait(MONITOR_SECONDS):
            with self.lock:
                self._fill()  # a worker that died (its run reads "interrupted") is replaced

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every worker to stop (its run is kept as stopped) and wait for them to exit."""
        self.stopped.set()
        with self.lock:
            live = [worker for worker in self.workers if worker is not None]
            for worker in live:
                if worker.poll() is None:
                    worker.terminate()
            for worker in live:
                try:
                    worker.wait(timeout)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            self.workers = [None] * self.size

    @property
    def pids(self) -> list[int]:
        """The process ids of the live workers."""
        return [worker.pid for worker in self.workers if worker is not None and worker.poll() is None]


class PoolKeeper:
    """The worker pools of one process, one per runs directory, each started once and stopped together."""

    def __init__(self):
        self.pools: dict[Path, WorkerPool] = {}
        self.lock = threading.Lock()

    def ensure(self, runs_dir: Path, make_pool: Callable[[Path], "WorkerPool"]):
        """The pool for the runs directory, made by `make_pool(runs_dir)` if there is none yet, and started."""
        runs_dir = Path(runs_dir).resolve()
        with self.lock:
            pool = self.pools.get(runs_dir)
            if pool is None or pool.stopped.is_set():
                pool = self.pools[runs_dir] = make_pool(runs_dir)
        pool.start()
        return pool

    def stop(self, runs_dir: Path | None = None) -> None:
        """Stop the pool of one runs directory, or every pool."""
        with self.lock:
            chosen = list(self.pools) if runs_dir is None else [Path(runs_dir).resolve()]
            pools = [self.pools.pop(key) for key in chosen if key in self.pools]
        for pool in pools:
            pool.stop()
