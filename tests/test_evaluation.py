"""Tests for core.evaluation: a run's saved model on its test set, checked against what training measured."""

from __future__ import annotations

import os

import numpy as np
import pytest

from core import evaluation
from core.config import TrainConfig
from core.data import load_dataset
from core.runs import RunNotFound
from core.training import train

TINY = TrainConfig(hidden_units=[32], steps=60, eval_every=30, source="offline")
# SGD at the top learning rate on a deep, wide ReLU net overflows within a few steps (see test_training).
DIVERGING = TrainConfig(hidden_units=[512, 512, 512, 512], learning_rate=10.0, steps=60, eval_every=20,
                        source="offline")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def tiny(runs_dir):
    return train(TINY, runs_dir)


# --- the pieces, on numbers worked out by hand --------------------------------------------------------


def test_confusion_matrix_counts_true_rows_against_predicted_columns():
    confusion = evaluation.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], classes=3)

    assert confusion.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_confusion_matrix_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same shape"):
        evaluation.confusion_matrix([0, 1, 2], [0, 1])


def test_per_class_accuracy_is_the_diagonal_share_and_nan_for_an_absent_class():
    confusion = np.array([[3, 1, 0], [0, 0, 0], [1, 1, 2]])

    accuracy = evaluation.per_class_accuracy(confusion)

    assert accuracy[0] == pytest.approx(0.75)
    assert np.isnan(accuracy[1])
    assert accuracy[2] == pytest.approx(0.5)


def test_misclassified_lists_the_most_confident_mistakes_first():
    labels = np.array([0, 1, 2, 3])
    probabilities = np.array([
        [0.9, 0.1, 0.0, 0.0],  # right
        [0.6, 0.4, 0.0, 0.0],  # wrong: 0 at 0.6
        [0.0, 0.05, 0.05, 0.9],  # wrong: 3 at 0.9
        [0.0, 0.0, 0.0, 1.0],  # right
    ])
    images = np.arange(4 * 28 * 28, dtype=np.float32).reshape(4, 28, 28)

    count, mistakes = evaluation.misclassified(images, labels, probabilities, limit=5)

    assert count == 2
    assert [(m.index, m.true_label, m.predicted_label) for m in mistakes] == [(2, 2, 3), (1, 1, 0)]
    assert mistakes[0].confidence == pytest.approx(0.9)
    assert np.array_equal(mistakes[1].image, images[1])
    assert len(evaluation.misclassified(images, labels, probabilities, limit=1)[1]) == 1


def test_class_names_are_digits_or_garments():
    assert evaluation.class_names("mnist") == [str(d) for d in range(10)]
    assert evaluation.class_names("fashion_mnist")[9] == "Ankle boot"


def test_enlarge_repeats_pixels_into_a_crisp_uint8_image():
    image = np.zeros((28, 28), dtype=np.float32)
    image[0, 0] = 1.0

    big = evaluation.enlarge(image, factor=3)

    assert big.shape == (84, 84) and big.dtype == np.uint8
    assert (big[:3, :3] == 255).all() and big[3:, :].max() == 0 and big[:, 3:].max() == 0


# --- a real run: its saved model must score what training measured ------------------------------------


def test_analysis_of_a_saved_model_matches_the_accuracy_training_measured(tiny, runs_dir):
    analysis = evaluation.analyse_run(tiny.run_id, runs_dir)

    assert analysis.test_size == 1000  # the offline sample's test split
    assert analysis.confusion.sum() == analysis.test_size
    assert analysis.accuracy == pytest.approx(tiny.test_accuracy, abs=1e-3)
    assert analysis.mistake_count == round(analysis.test_size * (1 - analysis.accuracy))
    assert 0 < len(analysis.mistakes) <= evaluation.GALLERY_LIMIT
    assert all(m.true_label != m.predicted_label for m in analysis.mistakes)
    confidences = [m.confidence for m in analysis.mistakes]
    assert confidences == sorted(confidences, reverse=True)
    assert analysis.same_data_as_training
    assert analysis.data_description.startswith("offline sample")


def test_mistakes_are_real_test_images_with_their_labels(tiny, runs_dir):
    dataset = load_dataset("mnist", "offline")

    analysis = evaluation.analyse_run(tiny.run_id, runs_dir)

    for mistake in analysis.mistakes[:5]:
        assert np.array_equal(mistake.image, dataset.x_test[mistake.index])
        assert mistake.true_label == dataset.y_test[mistake.index]


def test_predict_in_batches_equals_one_call(tiny):
    from core.model import load_model

    model = load_model(tiny.model_path)
    images = load_dataset("mnist", "offline").x_test[:300]

    batched = evaluation.predict(model, images)

    assert batched.shape == (300, 10)
    np.testing.assert_allclose(batched, np.asarray(model(images, training=False)), atol=1e-6)


def test_a_run_without_a_model_says_so(runs_dir):
    diverged = train(DIVERGING, runs_dir)
    assert diverged.state == "diverged"

    with pytest.raises(ValueError, match="saved no model"):
        evaluation.analyse_run(diverged.run_id, runs_dir)


def test_unknown_and_damaged_runs_raise_plain_errors(runs_dir):
    damaged = runs_dir / "20260101-000000-dead-func-sgd-16"
    damaged.mkdir()
    (damaged / "config.json").write_text("{not json")

    with pytest.raises(RunNotFound):
        evaluation.analyse_run("no-such-run", runs_dir)
    with pytest.raises(ValueError, match="cannot be read"):
        evaluation.analyse_run(damaged.name, runs_dir)


def test_model_mtime_changes_the_cache_key_when_the_model_is_rewritten(tiny):
    before = evaluation.model_mtime(tiny)
    assert before > 0

    stat = tiny.model_path.stat()
    os.utime(tiny.model_path, (stat.st_atime, stat.st_mtime + 10))

    assert evaluation.model_mtime(tiny) == pytest.approx(before + 10)
