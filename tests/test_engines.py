"""Both engines are the same math: the article's TF1 Session graph and today's tf.function agree step by step."""

import numpy as np
import pytest

from core.config import TrainConfig
from core.engines import engine_class
from core.engines.function import XLA_MIN_STEPS, FunctionEngine, uses_xla
from core.engines.session import SessionEngine
from core.network import load_model
from core.training import train
from tests.factories import TINY
from tests.tensorboard_events import RunEvents, name_scopes, node_names

AGREEMENT_STEPS = 1000


@pytest.fixture(scope="module")
def engine_runs(tmp_path_factory):
    """The article's configuration trained by each engine from the same weights on the same batches."""
    runs_dir = tmp_path_factory.mktemp("runs")
    # XLA fuses operations and rounds differently in the last bits, so the agreement is checked on the
    # plain graph; the XLA path is compared separately, loosely.
    base = TrainConfig(steps=AGREEMENT_STEPS, source="offline", xla=False)
    return {
        "function": train(base, runs_dir),
        "session": train(base.replace(engine="session"), runs_dir),
    }


def test_both_engines_complete_the_article_run(engine_runs):
    for engine, run in engine_runs.items():
        assert run.state == "completed", (engine, run.status)
        assert run.summary.engine == engine
        assert run.summary.steps == AGREEMENT_STEPS


def test_per_step_losses_agree_within_1e_4_relative(engine_runs):
    function_losses = np.array(engine_runs["function"].read_metrics()["loss"])
    session_losses = np.array(engine_runs["session"].read_metrics()["loss"])
    assert len(function_losses) == len(session_losses) == AGREEMENT_STEPS
    relative = np.abs(function_losses - session_losses) / np.abs(session_losses)
    worst = int(np.argmax(relative))
    assert relative.max() <= 1e-4, (
        f"step {worst}: function {function_losses[worst]} vs session {session_losses[worst]}"
    )
    # The loss must actually have moved, or agreement would mean nothing.
    assert function_losses[-50:].mean() < 0.5 * function_losses[:10].mean()


def test_final_test_accuracies_agree_within_half_a_point(engine_runs):
    accuracies = [run.summary.test_accuracy for run in engine_runs.values()]
    assert min(accuracies) > 0.9
    assert abs(accuracies[0] - accuracies[1]) <= 0.005


def test_session_run_writes_the_articles_graph_and_loss_every_step(engine_runs):
    run = engine_runs["session"]
    events = RunEvents(run.path)
    graphs = events.graphs()
    assert graphs, "no graph in the session run's event files"
    names = {name for graph in graphs for name in node_names(graph)}
    scopes = set().union(*(name_scopes(graph) for graph in graphs))
    assert {"input", "NN", "loss", "train"} <= scopes
    assert "input/img" in names and "input/labels" in names  # the article's placeholders
    loss = events.scalars("loss")
    assert [step for step, _ in loss] == list(range(AGREEMENT_STEPS))
    metrics = run.read_metrics()["loss"]
    assert np.allclose([value for _, value in loss], metrics, rtol=1e-6)
    assert [step for step, _ in events.scalars("test_accuracy")] == list(range(100, 1001, 100))


def test_every_run_of_a_cached_network_shape_gets_its_graph(tmp_path):
    """The function engine writes its graph when it is built, not by tracing a chunk: a second run of the
    same shape reuses the compiled network of the first (no tracing) and must still show its graph."""
    first = train(TINY, tmp_path / "first")
    second = train(TINY, tmp_path / "second")

    for run in (first, second):
        scopes = [name_scopes(graph) for graph in RunEvents(run.path).graphs()]
        assert any({"input", "NN", "loss", "train"} <= found for found in scopes), (run.run_id, scopes)
    assert second.read_metrics() == first.read_metrics()  # the reused network started over from the seed


def test_session_model_keras_has_the_shared_contract(engine_runs):
    run = engine_runs["session"]
    model = load_model(run.model_path)
    images = np.zeros((3, 28, 28), np.float32)
    probabilities = np.asarray(model(images, training=False))
    assert probabilities.shape == (3, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_xla_path_stays_close_to_the_plain_graph(tmp_path, engine_runs):
    """XLA may round differently, but it trains the same network: early losses match closely."""
    run = train(TrainConfig(steps=200, eval_every=100, source="offline", xla=True), tmp_path)
    xla_losses = np.array(run.read_metrics()["loss"])
    plain_losses = np.array(engine_runs["function"].read_metrics()["loss"][:200])
    assert np.allclose(xla_losses[:20], plain_losses[:20], rtol=1e-3)
    assert run.summary.test_accuracy > 0.85


def test_xla_by_default_only_for_runs_long_enough_to_repay_compiling():
    assert not uses_xla(TrainConfig())  # the article's 1,000 steps finish sooner on the plain graph
    assert uses_xla(TrainConfig(steps=XLA_MIN_STEPS))
    assert not uses_xla(TrainConfig(steps=XLA_MIN_STEPS, xla=False))
    assert uses_xla(TrainConfig(steps=10, xla=True))


def test_session_engine_refuses_xla_by_name():
    with pytest.raises(ValueError, match="xla"):
        TrainConfig(engine="session", xla=True)


def test_engine_class_picks_the_engine_a_config_names():
    assert engine_class("function") is FunctionEngine
    assert engine_class("session") is SessionEngine
    assert FunctionEngine.name == "function" and SessionEngine.name == "session"
    with pytest.raises(ValueError, match="engine must be one of function, session; got 'eager'"):
        engine_class("eager")
