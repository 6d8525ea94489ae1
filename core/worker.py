"""Background runs: each trains in a worker process, `python -m core.worker RUN_DIR`, started from here.

Why a process and not a thread of the server: a Streamlit server clears Keras' session and collects garbage
after every script run (a page polling a live run reruns twice a second), which slowed a training thread in
the same process from ~700 to ~20 steps/s; a process also keeps the server responsive and lets a run
outlive a page reload. The caller follows the run through its folder (status.json, metrics.csv), so a page
that reloads, a second tab or another process sees the same live state.

In the worker, Ctrl-C (SIGINT) or SIGTERM stops the run after its current chunk of steps, like the STOP file,
so a run is kept as "stopped" rather than lost when the app is shut down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from core.config import ENGINES, TrainConfig
from core.runs import Run, RunState, create_run, default_runs_dir, read_run

REPO_ROOT = Path(__file__).resolve().parents[1]


def start_training(config: TrainConfig, runs_dir: Path | None = None) -> Run:
    """Create a run and train it in a background worker process; returns at once with the new run.

    Stop it with `Run.request_stop()`.
    """
    runs_dir = Path(runs_dir).resolve() if runs_dir else default_runs_dir().resolve()
    run = create_run(config, runs_dir)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    with open(run.worker_log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "core.worker", str(run.path)], cwd=REPO_ROOT,
                                  env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    # Until the worker writes its own pid (after its imports), the status names it here, so a worker that
    # dies on start-up reads as "interrupted" rather than "running" forever. Read the status again first:
    # never write back an older copy over what the worker may already have said.
    current = read_run(run.path)
    if current.state is RunState.RUNNING and current.status.pid == os.getpid():
        current.write_status(RunState.RUNNING, current.status.message, pid=worker.pid)
    # Wait for the worker in the background so that it does not linger as a zombie once it exits.
    threading.Thread(target=worker.wait, name=f"reap-{run.run_id}", daemon=True).start()
    return current


def start_engine_comparison(config: TrainConfig, runs_dir: Path | None = None) -> list[Run]:
    """Train the same settings with every engine at once (each in its own worker), for side-by-side curves."""
    return [start_training(config.replace(engine=engine, xla=None), runs_dir) for engine in ENGINES]


def main(argv: list[str]) -> int:
    """Train the run in argv[0]; the exit code says whether it completed or stopped (0) or not (1)."""
    if len(argv) != 1:
        print("usage: python -m core.worker RUN_DIR", file=sys.stderr)
        return 2
    run = read_run(Path(argv[0]))
    if run.damaged:
        print(f"cannot train {argv[0]}: {run.damaged}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    run.write_status(RunState.RUNNING, "starting", pid=os.getpid())
    from core.training import train  # deferred: the parent side of this module must not import TensorFlow

    run = train(run.config, run=run, should_stop=stop.is_set)
    return 0 if run.state in (RunState.COMPLETED, RunState.STOPPED) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
