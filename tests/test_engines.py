"""Both engines are the same math: the article's TF1 Session graph and today's tf.function agree step by step,
for the article's MLP and for the CNN, with or without augmentation."""


import numpy as np
import pytest

from core.config import TrainConfig, config_from_preset
from core.data import load_dataset
from core.engines import (
    ASSUMED_FLOPS_PER_SECOND,
    MAX_ROTATION_DEGREES,
    MAX_SHIFT_PIXELS,
    augment_images,
    chunk_steps_for,
    engine_class,
)
from core.engines.function import NETWORKS, XLA_MIN_STEPS, FunctionEngine, uses_xla
from core.engines.session import SessionEngine
from core.network import CNN_FILTERS, load_model, multiply_adds
from core.training import train
from tests.factories import TINY, small_offline_dataset
from tests.tensorboard_events import RunEvents, name_scopes, node_names

AGREEMENT_STEPS = 1000
CNN_AGREEMENT_STEPS = 300
# The CNN preset's network, trained with the article's optimizer and without dropout: plain SGD is the same
# arithmetic in both engines, while TF1's Adam and Keras 3's Adam round differently in their own updates, and
# Keras 3 and tf_keras draw different dropout masks (neither is the network). Batch 20 keeps the runs short.
CNN_AGREEMENT = config_from_preset("cnn", optimizer="sgd", learning_rate=0.05, dropout_rate=0.0, batch_size=20,
                                   augment=False, steps=CNN_AGREEMENT_STEPS, eval_every=CNN_AGREEMENT_STEPS,
                                   source="offline")


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


# --- the CNN, built the article's way in both engines -------------------------------------------------------


@pytest.fixture(scope="module")
def cnn_runs(tmp_path_factory):
    """The CNN trained by each engine from the same weights on the same batches, without and with augmentation."""
    runs_dir = tmp_path_factory.mktemp("cnn-runs")
    return {(engine, augment): train(CNN_AGREEMENT.replace(engine=engine, augment=augment), runs_dir)
            for augment in (False, True) for engine in ("function", "session")}


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_cnn_per_step_losses_agree_within_1e_4_relative(cnn_runs, augment):
    runs = {engine: cnn_runs[engine, augment] for engine in ("function", "session")}
    for engine, run in runs.items():
        assert run.state == "completed", (engine, run.status)
    function_losses, session_losses = (np.array(run.read_metrics()["loss"]) for run in runs.values())

    assert len(function_losses) == len(session_losses) == CNN_AGREEMENT_STEPS
    relative = np.abs(function_losses - session_losses) / np.abs(session_losses)
    worst = int(np.argmax(relative))
    assert relative.max() <= 1e-4, (
        f"step {worst}: function {function_losses[worst]} vs session {session_losses[worst]}"
    )
    assert function_losses[-50:].mean() < 0.5 * function_losses[:10].mean()  # it learned: agreement means something
    accuracies = [run.summary.test_accuracy for run in runs.values()]
    assert min(accuracies) > 0.9 and abs(accuracies[0] - accuracies[1]) <= 0.005


def test_augmentation_changes_the_training_batches(cnn_runs):
    plain = np.array(cnn_runs["function", False].read_metrics()["loss"])
    augmented = np.array(cnn_runs["function", True].read_metrics()["loss"])

    # Same weights, same batch indices: only the shifted and rotated images can make the first loss differ.
    assert plain[0] != augmented[0]
    assert not np.allclose(plain, augmented, rtol=1e-3)


@pytest.mark.parametrize("engine", ["function", "session"])
def test_the_cnn_graph_has_the_articles_scopes_with_augmentation_in_input(cnn_runs, engine):
    graphs = RunEvents(cnn_runs[engine, True].path).graphs()
    assert graphs, f"no graph in the {engine} CNN run's event files"
    names = [name for graph in graphs for name in node_names(graph)]
    scopes = set().union(*(name_scopes(graph) for graph in graphs))

    assert {"input", "NN", "loss", "train"} <= scopes
    assert any("input/augment/" in name for name in names), "the augmentation is not in the input scope"
    assert _has_op(graphs, "ImageProjectiveTransformV3")
    for layer in ("conv_1", "pool_1", "conv_2", "pool_2", "hidden_1", "probabilities"):
        assert any(f"NN/{layer}" in name for name in names), f"no NN/{layer} ops"


def _has_op(graphs, op_type: str) -> bool:
    """Whether any node of the graphs (or of their function library) runs `op_type`."""
    nodes = [node for graph in graphs for node in graph.node]
    nodes += [node for graph in graphs for function in graph.library.function for node in function.node_def]
    return any(node.op == op_type for node in nodes)


@pytest.mark.parametrize("engine", ["function", "session"])
def test_cnn_model_keras_keeps_the_shared_contract(cnn_runs, engine):
    run = cnn_runs[engine, True]
    model = load_model(run.model_path)
    digits = load_dataset("mnist", "offline").x_test[:200]

    probabilities = np.asarray(model(digits, training=False))

    assert probabilities.shape == (200, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert [layer.name for layer in model.layers][:3] == ["reshape", "conv_1", "pool_1"]
    # The saved model is the trained one: it reads the test digits about as well as the run measured.
    labels = load_dataset("mnist", "offline").y_test[:200]
    assert (probabilities.argmax(axis=1) == labels).mean() > 0.85


@pytest.fixture(scope="module")
def small_dataset():
    return small_offline_dataset(test=200)


@pytest.mark.parametrize("engine", ["function", "session"])
def test_augmentation_never_touches_evaluation(engine, small_dataset, tmp_path):
    """Same initial weights, augmentation on or off: the predictions on test digits are the same."""
    predictions = []
    for augment in (False, True):
        config = CNN_AGREEMENT.replace(engine=engine, augment=augment)
        built = engine_class(engine)(config, small_dataset, tmp_path / str(augment))
        try:
            predictions.append(built.predict(small_dataset.x_test))
        finally:
            built.close()

    np.testing.assert_array_equal(predictions[0], predictions[1])


def test_a_cached_cnn_takes_each_runs_seed_for_its_augmentation(tmp_path):
    """The warm network is shared across seeds; the seed reaches the augmentation as an argument, so a run on a
    reused network draws the same transforms as one on a freshly built network."""
    config = CNN_AGREEMENT.replace(augment=True, steps=12, eval_every=12)
    train(config, tmp_path / "first")  # builds and traces the network for this shape
    reused = train(config.replace(seed=7), tmp_path / "reused")
    NETWORKS.clear()
    fresh = train(config.replace(seed=7), tmp_path / "fresh")

    assert reused.read_metrics()["loss"] == fresh.read_metrics()["loss"]


# --- the augmentation ---------------------------------------------------------------------------------------


def _batch(image: np.ndarray, count: int = 200) -> np.ndarray:
    return np.repeat(image.reshape(1, 784), count, axis=0).astype(np.float32)


def _centroids(images: np.ndarray) -> np.ndarray:
    """(row, column) centre of mass of each flat image."""
    images = images.reshape(-1, 28, 28)
    rows, columns = np.mgrid[0:28, 0:28]
    mass = images.sum(axis=(1, 2))
    return np.stack([(images * rows).sum(axis=(1, 2)) / mass, (images * columns).sum(axis=(1, 2)) / mass], axis=1)


def _orientation_degrees(images: np.ndarray) -> np.ndarray:
    """The angle of each image's main axis from the horizontal, from its second moments."""
    images = images.reshape(-1, 28, 28)
    rows, columns = np.mgrid[0:28, 0:28]
    centre = _centroids(images)
    dy = rows[None] - centre[:, 0, None, None]
    dx = columns[None] - centre[:, 1, None, None]
    mass = images.sum(axis=(1, 2))
    mu20, mu02 = (images * dx**2).sum(axis=(1, 2)) / mass, (images * dy**2).sum(axis=(1, 2)) / mass
    mu11 = (images * dx * dy).sum(axis=(1, 2)) / mass
    return np.degrees(0.5 * np.arctan2(2 * mu11, mu20 - mu02))


def test_augmentation_shifts_by_at_most_two_pixels_and_keeps_pixels_in_range():
    square = np.zeros((28, 28), np.float32)
    square[12:16, 12:16] = 1.0  # centred on the rotation centre (13.5, 13.5): only the shift moves it
    images = _batch(square)

    moved = np.asarray(augment_images(images, 42, 0))

    assert moved.shape == images.shape and moved.dtype == np.float32
    assert moved.min() >= 0.0 and moved.max() <= 1.0 + 1e-6
    offsets = _centroids(moved) - _centroids(images)
    assert np.abs(offsets).max() <= MAX_SHIFT_PIXELS + 0.05
    assert offsets.std(axis=0).min() > 0.5  # the shifts vary, along both axes
    np.testing.assert_allclose(moved.sum(axis=1), images.sum(axis=1), rtol=0.01)  # resampled, nothing lost


def test_augmentation_rotates_by_at_most_ten_degrees():
    bar = np.zeros((28, 28), np.float32)
    bar[13:15, 4:24] = 1.0  # a horizontal bar through the centre
    images = _batch(bar)

    angles = _orientation_degrees(np.asarray(augment_images(images, 42, 3)))

    assert np.abs(angles).max() <= MAX_ROTATION_DEGREES + 0.5
    assert np.abs(angles).max() > 0.6 * MAX_ROTATION_DEGREES  # some digits really turn
    assert (angles > 2).any() and (angles < -2).any()  # both ways


def test_augmentation_is_drawn_from_the_seed_and_the_step():
    digits = load_dataset("mnist", "offline").x_train[:50].reshape(50, 784)

    first = np.asarray(augment_images(digits, 42, 10))

    np.testing.assert_array_equal(first, np.asarray(augment_images(digits, 42, 10)))  # stateless: same inputs, same draw
    assert not np.array_equal(first, np.asarray(augment_images(digits, 42, 11)))
    assert not np.array_equal(first, np.asarray(augment_images(digits, 43, 10)))
    assert not np.array_equal(first, digits)


# --- how the CNN runs ---------------------------------------------------------------------------------------


def test_chunks_of_the_cnn_count_its_convolutions():
    cnn = config_from_preset("cnn")

    steps = chunk_steps_for(cnn)

    # About 0.2 s of estimated work per chunk: a chunk of the CNN is far fewer steps than one of the MLP.
    work = 6 * cnn.batch_size * multiply_adds(cnn)
    assert 1 <= steps and steps * work <= 0.2 * ASSUMED_FLOPS_PER_SECOND < (steps + 1) * work
    assert steps < chunk_steps_for(TrainConfig()) // 10
    # Wider convolutions mean shorter chunks, as long as a chunk holds a step.
    assert chunk_steps_for(cnn.replace(batch_size=4096)) == 1
    assert CNN_FILTERS == (32, 64)


def test_xla_is_never_used_for_the_cnn_or_with_augmentation():
    assert not uses_xla(config_from_preset("cnn", steps=50_000))
    assert not uses_xla(config_from_preset("cnn", steps=50_000), min_steps=0)  # not even in a warm worker
    assert not uses_xla(TrainConfig(augment=True, steps=50_000), min_steps=0)
    assert uses_xla(TrainConfig(steps=50_000))  # the MLP still gets it

