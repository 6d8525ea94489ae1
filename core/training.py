"""Training a run: the loop every engine shares (batches, chunks, evaluation, divergence, stop, progress).

An engine (see core/engines) only knows how to run a chunk of steps, predict, give its weights and write
summaries. This module owns what is the same for every engine: the run folder, the order of batches, the
evaluation schedule, the exported model, what happens when the loss blows up or someone presses Stop, and
the progress reports.
"""

from __future__ import annotations

import errno
import math
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core import fine_tune, insight, tensorboard_summaries
from core.advice import chance_level_advice, chance_level_warning, diverged_message
from core.config import TrainConfig
from core.data import Dataset, load_dataset
from core.engines import Engine, engine_class, named_weights
from core.engines.distribute import DistributeError, is_lost_peer
from core.network import build_export_model, first_kernel_name
from core.records import FailureKind, RunState, StopReason, Summary
from core.run_folder import Run
from core.store import create_run

# The first layer's picture costs TensorBoard's event file 85 KB an evaluation for the article's network (600 KB
# for 1,024 units): a 200,000-step run evaluating every 100 steps would pile up gigabytes of pictures that
# TensorBoard samples down to ten anyway. first_layer.npy, replaced in place, follows every evaluation.
MAX_FIRST_LAYER_PICTURES = 50
# How a stopped run's status message says why it stopped (pages word StopReason themselves: core/records.py).
STOP_WORDS = {
    StopReason.ASKED: "asked to stop",
    StopReason.SERVER_STOPPED: "the app server stopped",
    StopReason.WORKER_STOPPED: "its worker was asked to stop",
    StopReason.CANCELLED: "cancelled while queued",
    StopReason.PEER: "another worker of this multi-worker run asked to stop",
}


@dataclass(frozen=True)
class Progress:
    """What a progress callback receives after each chunk of steps."""

    step: int
    total_steps: int
    loss: float
    steps_per_second: float

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
    stop_reason: Callable[[], StopReason | None] | None = None,
    networks=None,
) -> Run:
    """Train one run to its end (completed, stopped, diverged or failed) and return it.

    Nothing raises out of here once the run folder exists: a failure is recorded in status.json, with its
    kind and the traceback in error.txt, and everything logged until then stays. `should_stop` says when this
    process wants the run to stop, `stop_reason` why (a STOP file in the run folder is a person asking).
    `networks` is the caller's cache of compiled networks (core/engines/function.py: NetworkCache), which a
    warm worker keeps between runs; without it, the function engine uses its module's default cache.
    """
    run = run or create_run(config, runs_dir)
    try:
        _train_into(run, config, dataset, on_progress, should_stop or (lambda: False), stop_reason or (lambda: None),
                    networks)
    except Exception as error:  # record any failure in the run folder instead of losing the run
        run.release_reserve()  # on a full disk, this is the room the next two writes need
        try:
            run.write_error(traceback.format_exc())
        except OSError:
            pass  # the status below says what happened; the traceback is a nicety
        kind, message = failure_of(error, run)
        run.write_status(RunState.FAILED, message, failure=kind)
    run.release_reserve()
    return run


def failure_of(error: Exception, run: Run) -> tuple[FailureKind, str]:
    """What ended a failed run: its kind, and a sentence without the exception's class name (the errors core
    raises for people say what to do in their message; any other names its class, which is what is known)."""
    if isinstance(error, DistributeError):
        return FailureKind.DISTRIBUTION, str(error)
    if run.config.distribute == "multi-worker" and is_lost_peer(error):
        return FailureKind.LOST_PEER, (
            "another worker of this multi-worker run stopped answering, so the run ended; start the same command "
            f"on every machine again ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
    if (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error):
        where = Path(error.filename).name if isinstance(error, OSError) and error.filename else "its files"
        return FailureKind.NO_SPACE, (f"no space left on device while writing {where}; free some space in "
                                      f"{run.path.parent} and train again")
    if isinstance(error, (ValueError, OSError)) and str(error):
        return FailureKind.ERROR, str(error)
    return FailureKind.ERROR, f"an unexpected {type(error).__name__}: {error}"


def stopped_message(step: int, total_steps: int, reason: StopReason) -> str:
    """What a stopped run's status says: where it stopped, and why."""
    return f"stopped at step {step} of {total_steps}: {STOP_WORDS[reason]}"


def _make_engine(config: TrainConfig, dataset: Dataset, log_dir: Path, networks) -> Engine:
    """The config's engine; the function engine draws its compiled network from `networks` when given."""
    if networks is not None and config.engine == "function":
        return engine_class(config.engine)(config, dataset, log_dir, cache=networks)
    return engine_class(config.engine)(config, dataset, log_dir)


def _train_into(run: Run, config: TrainConfig, dataset, on_progress, should_stop, stop_reason, networks) -> None:
    run.write_status(RunState.RUNNING, "loading data")
    dataset = dataset or load_dataset(config.dataset, config.source, config.data_path, config.upload,
                                      run.path.parent)
    # A fine-tuning run's data has the owner's drawings mixed in, and it starts from another run's weights.
    tuning = fine_tune.prepare(config, run, dataset)
    dataset = tuning.dataset
    run.write_status(RunState.RUNNING, "building the graph", data_source=dataset.description)
    engine = _make_engine(config, dataset, run.path, fine_tune.engine_cache(config, networks))
    if tuning.initial_weights is not None:
        engine.load_weights(tuning.initial_weights)
    measured = tuning.measure_start(engine, evaluate)  # before/after figures, for fine-tuning runs only
    # The run's settings for TensorBoard's HParams dashboard, first, so the run is listed while it trains.
    engine.write_summaries(0, tensorboard_summaries.hparams_summaries(config, run.run_id))
    # TensorBoard's evaluation summaries (histograms, the captioned digits) are built and written on a
    # thread of their own while training goes on: they cost about as much as the steps between them.
    summary_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"summaries-{run.run_id}")
    pending = []

    def evaluate_now(step: int, draw: bool) -> tuple[float, float]:
        return _evaluate_and_log(run, engine, config, dataset, step, summary_writer, pending, draw)

    schedule = tuning.schedule(config)
    started = time.monotonic()
    try:
        placement = engine.placement
        run.write_status(RunState.RUNNING, "training" if placement.strategy is None
                         else f"training on {placement.describe()}")
        loop = _train_steps(run, config, engine, schedule, evaluate_now, started,
                            hooks=(on_progress, should_stop, stop_reason))
        seconds = time.monotonic() - started
        if loop.outcome is not RunState.DIVERGED and loop.step > 0:
            if loop.evaluated_at != loop.step:  # stopped between two evaluations: measure the model as it is
                loop.test_loss, loop.test_accuracy = evaluate_now(loop.step, draw=True)
            # Every engine's weights go into the same Keras 3 model: one contract for model.keras.
            build_export_model(config, engine.weights()).save(run.model_path)
            measured.update(tuning.measure_end(engine))
    finally:
        summary_writer.shutdown(wait=True)
        engine.close()
    for written in pending:
        written.result()  # a summary that failed to write fails the run, as it would have in line
    _record_ending(run, config, dataset, placement, loop, seconds, measured)


def _record_ending(run: Run, config: TrainConfig, dataset: Dataset, placement, loop: _Loop, seconds: float,
                   measured: dict) -> None:
    """The run's summary.json, then its final status: last, so a page that reads the status finds the summary."""
    run.write_summary(Summary(
        test_accuracy=loop.kept_accuracy, test_loss=loop.kept_loss, steps=loop.step, seconds=round(seconds, 3),
        steps_per_second=round(loop.step / seconds, 1) if seconds > 0 else None,
        data_source=dataset.description, source=dataset.source, data_sizes=dataset.sizes(), engine=config.engine,
        distribute=placement.distribute, replicas=placement.replicas, workers=placement.workers, **measured,
    ))
    message, ending = loop.ending_words(config)
    run.write_status(loop.outcome, message, step=loop.step, **ending)


@dataclass
class _Loop:
    """Where the training loop stands, and then how it ended: what the run's summary and status are made of."""

    step: int = 0
    outcome: RunState = RunState.COMPLETED
    message: str = ""
    ending: dict = field(default_factory=dict)  # the typed fields of how it ended (core/records.py)
    first_loss: float | None = None  # how far the loss moved, for advice if the run learns nothing
    highest_loss: float | None = None
    last_loss: float = math.nan
    test_loss: float | None = None
    test_accuracy: float | None = None
    evaluated_at: int | None = None

    def advance(self, count: int, losses: np.ndarray) -> None:
        """A chunk of `count` steps trained, with these (finite) losses."""
        self.step += count
        self.last_loss = float(losses[-1])
        self.first_loss = float(losses[0]) if self.first_loss is None else self.first_loss
        self.highest_loss = max(float(losses.max()), self.highest_loss or -math.inf)

    @property
    def kept_accuracy(self) -> float | None:
        """The test accuracy the run keeps: none after a divergence (it measured weights that no longer exist)."""
        return None if self.outcome is RunState.DIVERGED else self.test_accuracy

    @property
    def kept_loss(self) -> float | None:
        """The test loss the run keeps, as kept_accuracy."""
        return None if self.outcome is RunState.DIVERGED else self.test_loss

    def ending_words(self, config: TrainConfig) -> tuple[str, dict]:
        """The status message and typed ending fields; a completed run's say what it reached, and whether it
        learned anything."""
        if self.outcome is not RunState.COMPLETED:
            return self.message, self.ending
        losses = (self.first_loss, self.highest_loss, self.last_loss)
        message = f"test accuracy {self.test_accuracy:.4f} after {self.step} steps" + chance_level_warning(
            config, self.test_accuracy, *losses)
        return message, {"advice": chance_level_advice(config, self.test_accuracy, *losses)}


def _train_steps(run: Run, config: TrainConfig, engine: Engine, schedule: BatchSchedule, evaluate_now,
                 started: float, hooks) -> _Loop:
    """The loop itself: chunks of steps until the last one, a stop, or a loss that is no longer a number, with
    the metrics, the evaluations and the progress written as it goes. `hooks`: (on_progress, should_stop,
    stop_reason), as train() takes them."""
    on_progress, should_stop, stop_reason = hooks
    loop = _Loop()
    while loop.step < config.steps:
        wanted = should_stop() or run.stop_requested()
        if engine.stop_together(wanted):
            # A multi-worker run stops on every worker when one wants to: the others say it was a peer.
            reason = (stop_reason() or StopReason.ASKED) if wanted else StopReason.PEER
            loop.outcome, loop.message = RunState.STOPPED, stopped_message(loop.step, config.steps, reason)
            loop.ending = {"stop_reason": reason}
            break
        step, count = loop.step, _next_chunk(loop.step, config, engine.chunk_steps)
        losses, accuracies = engine.train_chunk(schedule.take(count), step)
        bad = _first_bad(losses)
        keep = count if bad is None else bad
        run.append_metrics([(step + i, float(losses[i]), float(accuracies[i])) for i in range(keep)])
        if bad is not None:
            loop.outcome, loop.message = RunState.DIVERGED, diverged_message(config, losses[bad], step + bad)
            loop.step += keep
            break
        loop.advance(count, losses)
        if loop.step % config.eval_every == 0 or loop.step == config.steps:
            loop.test_loss, loop.test_accuracy = evaluate_now(loop.step, draw=draws_first_layer(loop.step, config))
            loop.evaluated_at = loop.step
        progress = Progress(loop.step, config.steps, loop.last_loss, loop.step / (time.monotonic() - started))
        run.write_progress(loop.step, config.steps, progress.steps_per_second)
        if on_progress:
            on_progress(progress)
    return loop


def draws_first_layer(step: int, config: TrainConfig) -> bool:
    """Whether the evaluation at `step` puts the first layer's picture in TensorBoard: every evaluation of a
    run with up to MAX_FIRST_LAYER_PICTURES of them; evenly spaced ones (and the last) beyond that."""
    evaluations = math.ceil(config.steps / config.eval_every)
    stride = math.ceil(evaluations / MAX_FIRST_LAYER_PICTURES)
    return step == config.steps or (step // config.eval_every) % stride == 0


def _evaluate_and_log(run: Run, engine: Engine, config: TrainConfig, dataset: Dataset, step: int,
                      summary_writer: ThreadPoolExecutor, pending: list, draw: bool) -> tuple[float, float]:
    """Evaluate on the test split and record it in evaluations.csv and first_layer.npy now; TensorBoard's
    summaries of it (from a copy of the weights as they are now) on the summary thread, with the first
    layer's picture if `draw`. Returns test loss and accuracy."""
    test_loss, test_accuracy, probabilities = evaluate(engine, dataset)
    weights = named_weights(engine, config)  # numpy copies: training may go on while the thread reads them
    # Written here rather than on the summary thread (it takes about a millisecond), and before the
    # evaluation's row, so a page that sees this evaluation in evaluations.csv finds the weights it measured.
    first_layer = insight.first_layer_images(weights[first_kernel_name(config)])
    run.write_first_layer(first_layer)
    run.append_evaluation(step, test_loss, test_accuracy)

    def write() -> None:
        engine.write_summaries(step, tensorboard_summaries.evaluation_summaries(
            test_loss, test_accuracy, config.learning_rate, weights, dataset.x_test, dataset.y_test, probabilities,
            first_layer if draw else None))

    pending.append(summary_writer.submit(write))
    return test_loss, test_accuracy
