"""Training a run: the loop every engine shares (batches, chunks, evaluation, divergence, stop, progress).

An engine (see core/engine.py) only knows how to run a chunk of steps, predict, write summaries and export
its model. This module owns what is the same for every engine: the run folder, the order of batches, the
evaluation schedule, what happens when the loss blows up or someone presses Stop, and the progress reports.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core import summaries
from core.config import ENGINES, TrainConfig
from core.data import Dataset, load_dataset
from core.runs import Run, create_run, default_runs_dir, read_run



# Ten balanced classes: 0.10 is guessing. A run that ends at or below this did not learn anything.
CHANCE_LEVEL_ACCURACY = 0.15


@dataclass(frozen=True)
class Progress:
    """What a progress callback receives after each chunk of steps."""

    step: int
    total_steps: int
    loss: float
    steps_per_second: float
    elapsed_seconds: float

    @property
    def fraction(self) -> float:
        """Share of the steps done, 0 to 1."""
        return self.step / self.total_steps

    @property
    def seconds_left(self) -> float:
        """Estimated seconds to the last step at the speed so far."""
        return (self.total_steps - self.step) / self.steps_per_second if self.steps_per_second > 0 else math.inf


class BatchSchedule:
    """The order of training batches: shuffled epochs drawn from the seed, so a seed fixes every batch."""

    def __init__(self, train_size: int, batch_size: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.train_size, self.batch_size = train_size, batch_size
        self.pending = np.empty(0, dtype=np.int32)

    def take(self, steps: int) -> np.ndarray:
        """The next `steps` batches as int32 indices of shape (steps, batch_size)."""
        needed = steps * self.batch_size
        parts = [self.pending]
        available = len(self.pending)
        while available < needed:
            epoch = self.rng.permutation(self.train_size).astype(np.int32)
            parts.append(epoch)
            available += len(epoch)
        pool = np.concatenate(parts)
        self.pending = pool[needed:]
        return pool[:needed].reshape(steps, self.batch_size)


def get_engine_class(name: str):
    """The engine class for a config's `engine` field (imported on demand: both import TensorFlow)."""
    if name == "function":
        from core.engine import FunctionEngine

        return FunctionEngine
    if name == "session":
        from core.session_engine import SessionEngine

        return SessionEngine
    raise ValueError(f"engine must be function or session; got {name!r}")


def evaluate(engine, dataset: Dataset) -> tuple[float, float, np.ndarray]:
    """Test loss, test accuracy and the predicted probabilities on the whole test split."""
    probabilities = engine.predict(dataset.x_test)
    picked = probabilities[np.arange(len(dataset.y_test)), dataset.y_test]
    test_loss = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    test_accuracy = float(np.mean(probabilities.argmax(axis=1) == dataset.y_test))
    return test_loss, test_accuracy, probabilities


def _next_chunk(step: int, config: TrainConfig, chunk_steps: int) -> int:
    next_evaluation = (step // config.eval_every + 1) * config.eval_every
    return max(1, min(chunk_steps, next_evaluation - step, config.steps - step))


def _first_bad(losses: np.ndarray) -> int | None:
    bad = np.flatnonzero(~np.isfinite(losses))
    return int(bad[0]) if len(bad) else None


def train(
    config: TrainConfig,
    runs_dir: Path | None = None,
    *,
    run: Run | None = None,
    dataset: Dataset | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Run:
    """Train one run to its end (completed, stopped, diverged or failed) and return it.

    Nothing raises out of here once the run folder exists: a failure is recorded in status.json, with the
    traceback in error.txt, and everything logged until then stays.
    """
    run = run or create_run(config, runs_dir)
    try:
        _train_into(run, config, dataset, on_progress, should_stop or (lambda: False))
    except Exception as error:  # record any failure in the run folder instead of losing the run
        (run.path / "error.txt").write_text(traceback.format_exc())
        run.write_status("failed", f"{type(error).__name__}: {error}")
    return run


def _train_into(run: Run, config: TrainConfig, dataset, on_progress, should_stop) -> None:
    run.write_status("running", "loading data")
    dataset = dataset or load_dataset(config.dataset, config.source, config.data_path)
    run.write_status("running", "building the graph", data_source=dataset.description)
    engine = get_engine_class(config.engine)(config, dataset, run.path)
    schedule = BatchSchedule(len(dataset.y_train), config.batch_size, config.seed)
    started = time.monotonic()
    step, last_loss, outcome = 0, float("nan"), "completed"
    test_loss = test_accuracy = None
    evaluated_at = None
    message = ""
    try:
        run.write_status("running", "training")
        while step < config.steps:
            if should_stop() or run.stop_requested():
                outcome, message = "stopped", f"stopped at step {step} of {config.steps}"
                break
            count = _next_chunk(step, config, engine.chunk_steps)
            indices = schedule.take(count)
            losses, accuracies = (engine.trace_graph if step == 0 else engine.train_chunk)(indices, step)
            bad = _first_bad(losses)
            keep = count if bad is None else bad
            run.append_metrics([(step + i, float(losses[i]), float(accuracies[i])) for i in range(keep)])
            if bad is not None:
                outcome, message = "diverged", diverged_message(config, losses[bad], step + bad)
                step += keep
                break
            step += count
            last_loss = float(losses[-1])
            if step % config.eval_every == 0 or step == config.steps:
                test_loss, test_accuracy = _evaluate_and_log(run, engine, dataset, step)
                evaluated_at = step
            elapsed = time.monotonic() - started
            progress = Progress(step, config.steps, last_loss, step / elapsed, elapsed)
            run.write_progress(step, config.steps, progress.steps_per_second)
            if on_progress:
                on_progress(progress)
        seconds = time.monotonic() - started
        if outcome != "diverged" and step > 0:
            if evaluated_at != step:  # stopped between two evaluations: measure the model as it is
                test_loss, test_accuracy = _evaluate_and_log(run, engine, dataset, step)
            engine.export_model(run.model_path)
    finally:
        engine.close()
    if outcome == "diverged":
        test_loss = test_accuracy = None  # the last evaluation measured weights that no longer exist
    run.write_summary({
        "test_accuracy": test_accuracy, "test_loss": test_loss, "steps": step, "seconds": round(seconds, 3),
        "steps_per_second": round(step / seconds, 1) if seconds > 0 else None,
        "data_source": dataset.description, "source": dataset.source, "data_sizes": dataset.sizes(),
        "engine": config.engine,
    })
    if outcome == "completed":
        message = f"test accuracy {test_accuracy:.4f} after {step} steps" + chance_level_warning(config, test_accuracy)
    run.write_status(outcome, message, step=step)


def _evaluate_and_log(run: Run, engine, dataset: Dataset, step: int) -> tuple[float, float]:
    """Evaluate on the test split; record it in evaluations.csv and TensorBoard. Returns loss and accuracy."""
    test_loss, test_accuracy, probabilities = evaluate(engine, dataset)
    run.append_evaluation(step, test_loss, test_accuracy)
    engine.write_summaries(step, summaries.evaluation_summaries(
        test_loss, test_accuracy, engine.config.learning_rate, engine.named_weights(),
        dataset.x_test, dataset.y_test, probabilities))
    return test_loss, test_accuracy


def diverged_message(config: TrainConfig, loss: float, step: int) -> str:
    """What to tell a person whose loss became NaN or infinite."""
    return (f"the loss became {loss} at step {step} with learning rate {config.learning_rate:g}; "
            f"try a smaller learning rate, such as {config.learning_rate / 10:g}")


def chance_level_warning(config: TrainConfig, test_accuracy: float) -> str:
    """A sentence to add when a run ended no better than guessing (dead units after too large a step)."""
    if test_accuracy > CHANCE_LEVEL_ACCURACY:
        return ""
    return (f"; that is no better than guessing, so the network did not learn: with learning rate "
            f"{config.learning_rate:g} ({config.optimizer}) the steps are probably too large, try "
            f"{config.learning_rate / 10:g}")


# ------------------------------------------------------------------------------------- background runs

# Background runs train in a worker process, not a thread of the caller. A Streamlit server clears Keras'
# session and collects garbage after every script run (a page polling a live run reruns twice a second),
# which slowed a training thread in the same process from ~700 to ~20 steps/s; a process also keeps the
# server responsive and lets a run outlive a page reload or the server itself.
_workers: dict[str, subprocess.Popen] = {}
_workers_lock = threading.Lock()
REPO_ROOT = Path(__file__).resolve().parents[1]


def start_training(config: TrainConfig, runs_dir: Path | None = None) -> Run:
    """Create a run and train it in a background worker process; returns at once with the new run.

    The caller follows the run through its folder (status.json, metrics.csv), so a page that reloads, a
    second tab or another process sees the same live state. Stop it with `Run.request_stop()`.
    """
    runs_dir = Path(runs_dir).resolve() if runs_dir else default_runs_dir().resolve()
    run = create_run(config, runs_dir)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    with open(run.path / "worker.log", "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "core.worker", str(run.path)], cwd=REPO_ROOT,
                                  env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    # Until the worker writes its own pid (after its imports), the status names it here, so a worker that
    # dies on start-up reads as "interrupted" rather than "running" forever. Read the status again first:
    # never write back an older copy over what the worker may already have said.
    current = read_run(run.path)
    if current.state == "running" and "pid" in current.status and current.status["pid"] == os.getpid():
        current.write_status("running", current.status.get("message", ""), pid=worker.pid)
    # Wait for the worker in the background so that it does not linger as a zombie once it exits.
    threading.Thread(target=worker.wait, name=f"reap-{run.run_id}", daemon=True).start()
    with _workers_lock:
        _workers[run.run_id] = worker
    return current


def start_engine_comparison(config: TrainConfig, runs_dir: Path | None = None) -> list[Run]:
    """Train the same settings with every engine at once (each in its own worker), for side-by-side curves."""
    return [start_training(config.replace(engine=engine, xla=None), runs_dir) for engine in ENGINES]


def is_training(run_id: str) -> bool:
    """True while this process has a live worker for the run."""
    with _workers_lock:
        worker = _workers.get(run_id)
    return worker is not None and worker.poll() is None
