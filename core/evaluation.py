"""A trained run on its test set: confusion matrix, per-class accuracy and the digits it got wrong.

The model is the run's model.keras (core.network.load_model) and the data is what the run's config names
(core.data.load_dataset), so what the Runs page shows is what any other program loading the run would see.
TensorFlow is imported only when a model is loaded (core.network imports it lazily).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data import load_dataset
from core.network import CLASSES, PREDICT_BATCH, load_model
from core.store import load_run

FASHION_CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                       "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
GALLERY_LIMIT = 24  # misclassified digits kept for the gallery (the most confident mistakes first)


def class_names(dataset_name: str) -> list[str]:
    """Labels for the ten classes: the digits, or Fashion-MNIST's garment names."""
    if dataset_name == "fashion_mnist":
        return list(FASHION_CLASS_NAMES)
    return [str(digit) for digit in range(CLASSES)]


@dataclass(frozen=True)
class Mistake:
    """One misclassified test image: its pixels (28x28 in [0, 1]), true and predicted class, confidence."""

    index: int
    image: np.ndarray
    true_label: int
    predicted_label: int
    confidence: float  # the probability the model gave its (wrong) prediction


@dataclass(frozen=True)
class RunAnalysis:
    """What a run's model does on its test set."""

    run_id: str
    data_description: str  # the test data actually used, in plain words
    trained_on: str | None  # the data the run was trained on, from its summary
    class_names: list[str]
    confusion: np.ndarray  # (10, 10) counts: row = true class, column = predicted class
    per_class_accuracy: np.ndarray  # (10,) share of each true class predicted right (nan if absent)
    accuracy: float
    test_size: int
    mistake_count: int
    mistakes: list[Mistake]  # the most confident mistakes, at most GALLERY_LIMIT

    @property
    def same_data_as_training(self) -> bool:
        """False when "auto" now finds other data than at training time (say, full MNIST appeared)."""
        return self.trained_on is None or self.trained_on == self.data_description


def confusion_matrix(labels, predicted, classes: int = CLASSES) -> np.ndarray:
    """Counts of (true, predicted) pairs as a (classes, classes) int matrix."""
    labels, predicted = np.asarray(labels, dtype=int), np.asarray(predicted, dtype=int)
    if labels.shape != predicted.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predicted.shape} must have the same shape")
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Diagonal over row sums: the share of each true class predicted right; nan for a class with no images."""
    totals = confusion.sum(axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(confusion) / totals, np.nan)


def misclassified(images, labels, probabilities, limit: int = GALLERY_LIMIT) -> tuple[int, list[Mistake]]:
    """How many test images are wrong, and the `limit` wrong ones the model was most confident about."""
    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:limit]
    return len(wrong), [
        Mistake(int(i), np.asarray(images[i]), int(labels[i]), int(predicted[i]), float(probabilities[i, predicted[i]]))
        for i in order
    ]


def predict(model, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, 10), calling the model directly on batches (no Keras predict loop)."""
    parts = [np.asarray(model(images[start:start + PREDICT_BATCH], training=False))
             for start in range(0, len(images), PREDICT_BATCH)]
    return np.concatenate(parts) if parts else np.empty((0, CLASSES), dtype=np.float32)


def analyse(run_id: str, model, dataset, trained_on: str | None = None,
            limit: int = GALLERY_LIMIT) -> RunAnalysis:
    """Run `model` on `dataset`'s test split and summarise what it gets right and wrong."""
    probabilities = predict(model, dataset.x_test)
    confusion = confusion_matrix(dataset.y_test, probabilities.argmax(axis=1))
    count, mistakes = misclassified(dataset.x_test, dataset.y_test, probabilities, limit)
    return RunAnalysis(
        run_id=run_id,
        data_description=dataset.description,
        trained_on=trained_on,
        class_names=class_names(dataset.name),
        confusion=confusion,
        per_class_accuracy=per_class_accuracy(confusion),
        accuracy=float(np.trace(confusion) / max(confusion.sum(), 1)),
        test_size=int(len(dataset.y_test)),
        mistake_count=count,
        mistakes=mistakes,
    )


def analyse_run(run_id: str, runs_dir: Path | None = None, limit: int = GALLERY_LIMIT) -> RunAnalysis:
    """Load a run's model.keras and its dataset, and analyse it (RunNotFound, DatasetError, ValueError)."""
    run = load_run(run_id, runs_dir)
    if run.damaged:
        raise ValueError(f"run {run_id} cannot be read ({run.damaged}), so there is no model to analyse")
    if not run.has_model:
        raise ValueError(
            f"run {run_id} saved no model (it is {run.state}): only runs that completed or were stopped have one"
        )
    model = load_model(run.model_path)  # imports TensorFlow on first use
    dataset = load_dataset(run.config.dataset, run.config.source, run.config.data_path, run.config.upload,
                           run.path.parent)
    return analyse(run_id, model, dataset, run.data_description, limit)
