"""Tests for core.training with real training: tiny runs in tmp_path, their folders and event files read back."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from core.access import OPERATOR
from core import service
from core.advice import CHANCE_LEVEL_ACCURACY
from core.config import TrainConfig
from core.data import DatasetError, load_dataset
from core.datafiles import read_idx
from core.engines.distribute import DistributeError
from core.network import weight_names
from core.records import AdviceKind, FailureKind, RunState, StopReason
from core.run_folder import Run
from core.store import create_run, load_run
from core.training import STOP_WORDS, failure_of, train
from tests.factories import DIVERGING, TINY, TINY_EVALUATION_STEPS, wait_until_finished
from tests.tensorboard_events import SCALARS, HISTOGRAMS, IMAGES, RunEvents, name_scopes, node_names

MNIST_TEST_DIR = Path(__file__).resolve().parents[2] / "shared/data/mnist-t10k"
# TINY trains 35 steps, so its last evaluation (step 35) is not on the eval_every grid (10, 20, 30).
ARTICLE_SCOPES = {"input", "NN", "loss", "train"}  # the article's tf.name_scope blocks
WEIGHT_TAGS = {"weights/hidden_1/kernel", "weights/hidden_1/bias",
               "weights/probabilities/kernel", "weights/probabilities/bias"}


@pytest.fixture(scope="module")
def offline():
    return load_dataset("mnist", "offline")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny run trained once for the module, with the progress reports it made."""
    reports = []
    run = train(TINY, tmp_path_factory.mktemp("runs"), on_progress=reports.append)
    return run, reports


def accuracy_of(model, images: np.ndarray, labels: np.ndarray) -> float:
    probabilities = np.asarray(model(images.astype(np.float32), training=False))
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def real_mnist_test_set() -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(MNIST_TEST_DIR / "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    return images, read_idx(MNIST_TEST_DIR / "t10k-labels-idx1-ubyte.gz").astype(np.int64)


# --- a tiny run, read back from its folder ----------------------------------------------------------


def test_tiny_run_completes_with_a_summary(tiny):
    run, _ = tiny
    reread = load_run(run.run_id, run.path.parent)

    assert reread.state is RunState.COMPLETED, reread.status
    assert reread.status.step == 35 and reread.status.finished_at
    summary = reread.summary
    assert 0.0 <= summary.test_accuracy <= 1.0
    assert summary.test_accuracy > 0.3  # 35 steps of SGD at 0.5 already beat chance (0.1) by far
    assert summary.test_loss > 0
    assert summary.steps == 35
    assert summary.steps_per_second > 0 and summary.seconds > 0
    assert summary.data_source.startswith("offline sample: 5,000 real MNIST digits")
    assert summary.data_sizes == {"train": 4000, "test": 1000}
    assert summary.engine == "function"
    assert f"{summary.test_accuracy:.4f}" in reread.status.message
    assert reread.config == TINY


def test_metrics_have_one_row_per_step(tiny):
    metrics = tiny[0].read_metrics()

    assert metrics["step"] == list(range(35))
    assert all(np.isfinite(metrics["loss"]))
    assert all(0.0 <= accuracy <= 1.0 for accuracy in metrics["batch_accuracy"])
    # Ten classes from Glorot weights: the first loss is near ln 10, and training brings it down.
    assert abs(metrics["loss"][0] - np.log(10)) < 0.5
    assert np.mean(metrics["loss"][-5:]) < metrics["loss"][0] - 0.5


def test_evaluations_at_every_eval_every_and_at_the_end(tiny):
    run, _ = tiny
    evaluations = run.read_evaluations()

    assert evaluations["step"] == TINY_EVALUATION_STEPS
    assert evaluations["test_accuracy"][-1] == run.summary.test_accuracy
    assert evaluations["test_loss"][-1] == pytest.approx(run.summary.test_loss)


def test_saved_model_maps_images_to_probabilities(tiny, offline):
    run, _ = tiny
    model = keras.models.load_model(run.model_path)
    images = offline.x_test[:7]

    probabilities = np.asarray(model(images))

    assert images.dtype == np.float32 and images.shape == (7, 28, 28)
    assert probabilities.shape == (7, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities >= 0).all()


def test_saved_model_scores_what_the_summary_says(tiny, offline):
    run, _ = tiny
    model = keras.models.load_model(run.model_path)

    accuracy = accuracy_of(model, offline.x_test, offline.y_test)

    # The engine's own predictions and the exported model share the weights; allow one digit of float noise.
    assert abs(accuracy - run.summary.test_accuracy) <= 0.001


def test_progress_reports_increase_to_the_last_step(tiny):
    _, reports = tiny
    steps = [report.step for report in reports]

    assert steps == sorted(set(steps)) and steps[0] > 0
    assert steps[-1] == 35
    assert set(TINY_EVALUATION_STEPS) <= set(steps)  # a report lands on every evaluation
    assert all(report.total_steps == 35 and report.steps_per_second > 0 for report in reports)
    assert reports[-1].fraction == 1.0 and reports[-1].seconds_left == 0
    assert np.isfinite(reports[-1].loss)


# --- TensorBoard: what `tensorboard --logdir` would show for the run ----------------------------------


@pytest.fixture(scope="module")
def tiny_events(tiny):
    return RunEvents(tiny[0].path)


def test_tensorboard_has_one_loss_point_per_step(tiny, tiny_events):
    metrics = tiny[0].read_metrics()

    loss = tiny_events.scalars("loss")
    batch_accuracy = tiny_events.scalars("batch_accuracy")

    assert [step for step, _ in loss] == list(range(35))
    np.testing.assert_allclose([value for _, value in loss], metrics["loss"], rtol=1e-6)
    assert [step for step, _ in batch_accuracy] == list(range(35))
    np.testing.assert_allclose([value for _, value in batch_accuracy], metrics["batch_accuracy"], rtol=1e-6)


def test_tensorboard_has_the_evaluation_summaries_at_each_evaluation(tiny, tiny_events):
    evaluations = tiny[0].read_evaluations()
    by_step = {name: dict(zip(evaluations["step"], evaluations[name])) for name in ("test_accuracy", "test_loss")}

    test_accuracy = tiny_events.scalars("test_accuracy")
    test_loss = tiny_events.scalars("test_loss")
    learning_rate = tiny_events.scalars("learning_rate")

    assert [step for step, _ in test_accuracy] == TINY_EVALUATION_STEPS
    np.testing.assert_allclose([value for _, value in test_accuracy],
                               [by_step["test_accuracy"][step] for step in TINY_EVALUATION_STEPS], rtol=1e-6)
    assert [step for step, _ in test_loss] == TINY_EVALUATION_STEPS
    np.testing.assert_allclose([value for _, value in test_loss],
                               [by_step["test_loss"][step] for step in TINY_EVALUATION_STEPS], rtol=1e-6)
    assert learning_rate == [(step, 0.5) for step in TINY_EVALUATION_STEPS]
    assert tiny_events.tags(HISTOGRAMS) == WEIGHT_TAGS
    assert WEIGHT_TAGS == {f"weights/{name}" for name in weight_names(TINY)}  # the network's own names
    for tag in WEIGHT_TAGS:
        assert tiny_events.steps(tag) == TINY_EVALUATION_STEPS
    assert tiny_events.tags(IMAGES) == {"test_predictions", "first_layer_weights"}
    assert tiny_events.steps("test_predictions") == TINY_EVALUATION_STEPS
    assert tiny_events.steps("first_layer_weights") == TINY_EVALUATION_STEPS


def test_tensorboard_histograms_hold_the_weights(tiny_events):
    buckets = tiny_events.values("weights/hidden_1/kernel")

    assert len(buckets) == len(TINY_EVALUATION_STEPS)
    assert buckets[-1][:, 2].sum() == 784 * 16  # (left, right, count) rows: every weight of the first layer
    assert tiny_events.values("weights/probabilities/bias")[-1][:, 2].sum() == 10


def test_tensorboard_image_is_the_prediction_gallery(tiny_events):
    width, height, png = tiny_events.values("test_predictions")[-1][:3]

    assert int(width) == 8 * 84 and int(height) == 84 + 14  # eight digits, three times enlarged, captioned
    assert png.startswith(b"\x89PNG")


def test_tensorboard_graph_has_the_articles_name_scopes(tiny_events):
    graphs = tiny_events.graphs()
    step_graphs = [graph for graph in graphs if ARTICLE_SCOPES <= name_scopes(graph)]

    seen = [sorted(name_scopes(graph)) for graph in graphs]
    assert step_graphs, f"no graph with all of {ARTICLE_SCOPES}; scopes seen: {seen}"
    names = node_names(step_graphs[0])
    # The Keras layers, called on raw TF tensors, sit inside the NN scope of TensorFlow's graph, and the
    # optimizer's update inside the train scope.
    assert any("NN/hidden_1" in name and name.endswith("/MatMul") for name in names)
    assert any("NN/probabilities" in name and name.endswith("/MatMul") for name in names)
    assert any("train/sgd" in name for name in names)


def test_event_reader_also_reads_legacy_filewriter_scalars(tmp_path):
    # The session engine's FileWriter writes `simple_value` scalars and a graph_def event; the reader must
    # give the same answers for those as for TF2 tensor summaries.
    from tensorboard.compat.proto import event_pb2, graph_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(tmp_path))
    graph = graph_pb2.GraphDef()
    graph.node.add(name="input/img", op="Placeholder")
    graph.node.add(name="NN/dense/MatMul", op="MatMul")
    writer.add_event(event_pb2.Event(wall_time=time.time(), graph_def=graph.SerializeToString()))
    for step in range(3):
        value = summary_pb2.Summary.Value(tag="loss", simple_value=2.0 - step / 2)
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=[value])))
    writer.close()

    events = RunEvents(tmp_path)

    assert events.tags(SCALARS) == {"loss"}
    assert events.scalars("loss") == [(0, 2.0), (1, 1.5), (2, 1.0)]
    assert [name_scopes(graph) for graph in events.graphs()] == [{"input", "NN", "dense"}]


# --- runs that do not complete ----------------------------------------------------------------------------


def test_a_diverging_run_is_marked_diverged_and_keeps_its_metrics(tmp_path):
    run = train(DIVERGING, tmp_path)  # must not raise

    assert run.state is RunState.DIVERGED, run.status
    message = run.status.message
    assert "learning rate 10" in message and "smaller learning rate" in message
    assert message.endswith("such as 1")  # a tenth of the learning rate
    metrics = run.read_metrics()
    diverged_at = run.status.step
    assert 0 < diverged_at < DIVERGING.steps
    assert metrics["step"] == list(range(diverged_at))  # every finite step is kept, none after
    assert all(np.isfinite(metrics["loss"]))
    assert f"step {diverged_at}" in message
    assert run.summary.test_accuracy is None and run.summary.steps == diverged_at
    assert not run.has_model  # a model of NaN weights is not offered for drawing
    assert load_run(run.run_id, tmp_path).state is RunState.DIVERGED


def test_a_run_that_learns_nothing_says_so(tmp_path):
    # SGD at learning rate 10 kills every ReLU unit without the loss ever becoming NaN: the run completes
    # at chance level, and its message must say why instead of a bare accuracy.
    config = TrainConfig(learning_rate=10.0, steps=100, eval_every=50, hidden_units=[64], source="offline")
    run = train(config, tmp_path)

    assert run.state is RunState.COMPLETED, run.status
    assert run.summary.test_accuracy <= CHANCE_LEVEL_ACCURACY
    assert "no better than guessing" in run.status.message
    assert "try 1" in run.status.message
    # The same advice as typed data, for pages to word: the loss shot up, so the steps were too large.
    advice = load_run(run.run_id, tmp_path).status.advice
    assert advice == run.status.advice and advice.kind is AdviceKind.STEPS_TOO_LARGE
    assert advice.suggested_learning_rate == 1.0 and advice.suggested_optimizer is None
    losses = run.read_metrics()["loss"]
    assert (advice.first_loss, advice.highest_loss, advice.last_loss) == (losses[0], max(losses), losses[-1])
    assert advice.highest_loss > 2 * advice.first_loss


def test_a_run_that_learns_has_no_chance_level_warning(tmp_path):
    run = train(TrainConfig(steps=100, eval_every=50, hidden_units=[64], source="offline"), tmp_path)
    assert run.summary.test_accuracy > 0.5
    assert "guessing" not in run.status.message
    assert run.status.advice is None


def test_a_missing_dataset_fails_the_run_with_a_plain_message(tmp_path):
    missing = tmp_path / "no-such-mnist.npz"
    config = TrainConfig(source="path", data_path=str(missing), steps=20, hidden_units=[16])

    run = train(config, tmp_path / "runs")  # must not raise

    assert run.state is RunState.FAILED
    message = run.status.message
    assert str(missing) in message and "does not exist" in message
    assert not message.startswith("DatasetError")  # no class name for a page to strip: the kind says it
    assert run.status.failure is FailureKind.ERROR
    assert "\n" not in message and "Traceback" not in message
    assert "Traceback" in (run.path / "error.txt").read_text()  # the details are kept for whoever debugs
    assert load_run(run.run_id, tmp_path / "runs").state is RunState.FAILED
    assert not run.has_model


def process_ended(pid: int) -> bool:
    """True once a process is gone or a zombie (exited, not yet reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


@pytest.fixture(scope="module")
def service_runs(tmp_path_factory):
    """A runs directory served by a real pool of one warm worker (core.service), stopped with the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HYBRID_LAB_WORKERS", "1")  # one worker whatever the machine: it trains run after run
        yield tmp_path_factory.mktemp("service-runs")
        service.stop_pools()


def wait_while(run_id: str, runs_dir: Path, busy, timeout: float = 300) -> Run:
    """Poll a run folder while busy(run) holds; returns the first run read that is not busy (or the last)."""
    deadline = time.monotonic() + timeout
    run = load_run(run_id, runs_dir)
    while busy(run) and time.monotonic() < deadline:
        time.sleep(0.05)
        run = load_run(run_id, runs_dir)
    return run


def test_stop_keeps_the_metrics_and_saves_a_model(service_runs):
    config = TrainConfig(hidden_units=[16], steps=200_000, eval_every=50_000, source="offline")
    run = service.submit(config, service_runs, identity=OPERATOR)
    # It is queued for the pool and trains in a warm worker process, not in this one.
    assert run.state is RunState.QUEUED
    current = wait_while(run.run_id, service_runs,
                         lambda run: run.state is RunState.QUEUED or (run.state is RunState.RUNNING
                                                                      and run.status.step == 0))
    assert current.state is RunState.RUNNING and current.status.step > 0, (current.status, current.damaged)
    worker_pid = current.status.pid
    assert worker_pid and worker_pid != os.getpid()
    assert worker_pid in service.ensure_pool(service_runs).pids

    service.stop(current, OPERATOR)
    final = wait_until_finished(run.run_id, service_runs, timeout=300)

    assert final.state is RunState.STOPPED, final.status
    assert final.status.pid == worker_pid
    stopped_at = final.summary.steps
    assert 0 < stopped_at < config.steps
    assert final.status.message == f"stopped at step {stopped_at} of {config.steps}: asked to stop"
    assert final.status.stop_reason is StopReason.ASKED  # Stop on a page is a STOP file: a person asked
    assert final.read_metrics()["step"] == list(range(stopped_at))
    assert final.read_evaluations()["step"] == [stopped_at]
    assert 0.0 <= final.summary.test_accuracy <= 1.0
    assert final.has_model
    model = keras.models.load_model(final.model_path)
    assert model(np.zeros((2, 28, 28), np.float32)).shape == (2, 10)
    # A warm worker outlives its run (it no longer exits with it): the same process trains the next one.
    assert not process_ended(worker_pid)
    after = wait_while(service.submit(TINY, service_runs, identity=OPERATOR).run_id, service_runs,
                       lambda run: run.state.active)
    assert after.state is RunState.COMPLETED, after.status
    assert after.status.pid == worker_pid


def test_should_stop_before_the_first_step_stops_at_zero(tmp_path):
    run = train(TINY, tmp_path, should_stop=lambda: True)

    assert run.state is RunState.STOPPED
    assert run.status.step == 0 and run.read_metrics()["step"] == []
    assert not run.has_model  # nothing was trained


def asks_after(calls: int):
    """A should_stop that says no `calls` times, then yes: the run stops after that many chunks."""
    answers = iter([False] * calls)
    return lambda: next(answers, True)


def test_a_stop_this_process_wants_records_its_reason(tmp_path):
    run = train(TINY, tmp_path, should_stop=asks_after(2), stop_reason=lambda: StopReason.SERVER_STOPPED)

    reread = load_run(run.run_id, tmp_path)
    assert reread.state is RunState.STOPPED and reread.status.stop_reason is StopReason.SERVER_STOPPED
    assert reread.status.message == "stopped at step 20 of 35: the app server stopped"  # for the command line
    assert reread.has_model


def test_a_stop_with_no_reason_given_is_a_person_asking(tmp_path):
    # Ctrl-C on the command line and a STOP file (the Stop button) give no reason: a person asked.
    by_flag = train(TINY, tmp_path, should_stop=asks_after(1))
    stopped = create_run(TINY, tmp_path)
    stopped.request_stop()
    by_file = train(TINY, run=stopped)

    for run in (by_flag, by_file):
        reread = load_run(run.run_id, tmp_path)
        assert reread.state is RunState.STOPPED and reread.status.stop_reason is StopReason.ASKED
    assert load_run(by_flag.run_id, tmp_path).status.message == "stopped at step 10 of 35: asked to stop"


def test_a_stop_another_worker_voted_for_is_recorded_as_a_peers(tmp_path, monkeypatch):
    # On a multi-worker run every worker stops when one wants to (stop_together); this one did not want to.
    from core.engines.function import FunctionEngine

    monkeypatch.setattr(FunctionEngine, "stop_together", lambda self, stop: True)
    run = train(TINY, tmp_path, should_stop=lambda: False)

    assert run.state is RunState.STOPPED and run.status.stop_reason is StopReason.PEER
    assert run.status.message == "stopped at step 0 of 35: another worker of this multi-worker run asked to stop"


def test_every_stop_reason_has_words_in_the_status_message():
    assert set(STOP_WORDS) == set(StopReason)


class UnavailableError(Exception):
    """Named as TensorFlow's error for a worker that went away (core.engines.distribute.is_lost_peer)."""


@pytest.mark.parametrize("error, distribute, kind, message", [
    (OSError(errno.ENOSPC, "No space left on device", "/runs/x/metrics.csv"), "none", FailureKind.NO_SPACE,
     "no space left on device while writing metrics.csv; free some space in {runs} and train again"),
    (DistributeError("cpu_replicas=8 needs 8 logical CPU devices"), "mirrored", FailureKind.DISTRIBUTION,
     "cpu_replicas=8 needs 8 logical CPU devices"),
    (UnavailableError("socket closed"), "multi-worker", FailureKind.LOST_PEER,
     "another worker of this multi-worker run stopped answering, so the run ended; start the same command on "
     "every machine again (UnavailableError: socket closed)"),
    (DatasetError("the file x.npz does not exist"), "none", FailureKind.ERROR, "the file x.npz does not exist"),
    (KeyError("hidden_9"), "none", FailureKind.ERROR, "an unexpected KeyError: 'hidden_9'"),
], ids=["no-space", "distribution", "lost-peer", "dataset", "unexpected"])
def test_a_failure_has_a_kind_and_a_message_without_a_class_name_to_strip(tmp_path, error, distribute, kind, message):
    run = Run("r", tmp_path / "r", TINY.replace(distribute=distribute))

    assert failure_of(error, run) == (kind, message.format(runs=tmp_path))


# --- reproducibility ---------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_run_and_another_seed_does_not(tiny, tmp_path):
    first = tiny[0]

    again = train(TINY, tmp_path / "again")
    other = train(TINY.replace(seed=TINY.seed + 1), tmp_path / "other")

    assert again.read_metrics() == first.read_metrics()  # every step's loss, bit for bit
    assert again.read_evaluations() == first.read_evaluations()
    assert other.read_metrics()["loss"] != first.read_metrics()["loss"]
    assert other.read_metrics()["loss"][0] != first.read_metrics()["loss"][0]  # other initial weights


# --- the acceptance: the article's defaults ---------------------------------------------------------


@pytest.fixture(scope="module")
def article_run(tmp_path_factory):
    """The article's run: 784-128-128-10, relu, SGD 0.5, batch 50, 1000 steps (on the offline sample)."""
    return train(TrainConfig(source="offline"), tmp_path_factory.mktemp("article"))


def test_article_defaults_reach_92_percent_on_the_offline_test_split(article_run):
    assert article_run.state is RunState.COMPLETED, article_run.status
    assert article_run.config.describe_layers() == "784-128-128-10"
    assert article_run.summary.steps == 1000
    assert article_run.summary.data_sizes == {"train": 4000, "test": 1000}
    assert article_run.summary.test_accuracy >= 0.92
    assert article_run.read_evaluations()["step"] == list(range(100, 1001, 100))
    assert len(article_run.read_metrics()["step"]) == 1000


def test_article_run_graph_has_the_articles_name_scopes(article_run):
    # The default run's chunks go through XLA (100 steps a call); its traced graph must still show the scopes.
    graphs = RunEvents(article_run.path).graphs()

    assert any(ARTICLE_SCOPES <= name_scopes(graph) for graph in graphs)


@pytest.mark.skipif(not MNIST_TEST_DIR.is_dir(), reason=f"the real MNIST test set is not at {MNIST_TEST_DIR}")
def test_article_model_scores_92_percent_on_the_real_mnist_test_set(article_run):
    images, labels = real_mnist_test_set()
    model = keras.models.load_model(article_run.model_path)

    assert accuracy_of(model, images, labels) >= 0.92
