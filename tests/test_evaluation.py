"""Tests for core.evaluation: a run's saved model on its test set, checked against what training measured."""

from __future__ import annotations

import os

import numpy as np
import pytest

from core import evaluation
from core.data import load_dataset
from core.network import ModelError, load_model
from core.records import RunNotFound, RunState
from core.training import train
from tests.factories import DIVERGING, TINY, make_run


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
    model = load_model(tiny.model_path)
    images = load_dataset("mnist", "offline").x_test[:300]

    batched = evaluation.predict(model, images)

    assert batched.shape == (300, 10)
    np.testing.assert_allclose(batched, np.asarray(model(images, training=False)), atol=1e-6)


def test_a_run_without_a_model_says_so(runs_dir):
    diverged = train(DIVERGING, runs_dir)
    assert diverged.state is RunState.DIVERGED

    with pytest.raises(ValueError, match="saved no model"):
        evaluation.analyse_run(diverged.run_id, runs_dir)


def test_unknown_and_damaged_runs_raise_plain_errors(runs_dir):
    damaged = make_run(runs_dir, TINY, model=True)
    damaged.config_path.write_text("{not json")  # a hand edit gone wrong

    with pytest.raises(RunNotFound):
        evaluation.analyse_run("no-such-run", runs_dir)
    with pytest.raises(ValueError, match=r"cannot be read \(config.json is not readable JSON"):
        evaluation.analyse_run(damaged.run_id, runs_dir)


def test_a_model_file_that_is_not_a_model_raises_a_model_error_naming_it(runs_dir):
    run = make_run(runs_dir, TINY, model=True)  # a placeholder model.keras: has_model, but not loadable

    with pytest.raises(ModelError, match="not a Keras model file") as raised:
        evaluation.analyse_run(run.run_id, runs_dir)

    assert f"{run.run_id}/model.keras" in str(raised.value)


def test_model_mtime_changes_the_cache_key_when_the_model_is_rewritten(tiny):
    before = tiny.model_mtime
    assert before > 0

    stat = tiny.model_path.stat()
    os.utime(tiny.model_path, (stat.st_atime, stat.st_mtime + 10))

    assert tiny.model_mtime == pytest.approx(before + 10)
