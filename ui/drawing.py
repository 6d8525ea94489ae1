"""What the Draw page does besides widgets: pick the run to draw with, classify a drawing, explain the
prediction, show the digit.

The page reruns on every stroke, so everything here is cheap except loading a model, which the page does
once per run and caches (the model file's mtime is part of the key). Nothing here imports streamlit, nor
TensorFlow until a model is loaded.
"""

from __future__ import annotations

import gc
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import insight
from core.digits import DIGIT_SIZE, EmptyDrawingError, classify, preprocess_drawing
from core.network import load_model
from core.records import RunNotFound, RunState
from core.run_folder import Run
from core.store import best_run, list_runs, load_run
from ui.charts import enlarge

# A digit classifier is only meaningful on digits: Fashion-MNIST runs are not offered for drawing.
DRAWING_DATASET = "mnist"
# The 28x28 digit is shown 6x larger (168 px), each pixel a visible square.
PREVIEW_SCALE = 6
TOP_UNIT_COUNT = 5  # the most active units shown per hidden layer
# The Draw page's canvas and results share a row (keys draw_row, draw_results); in a row narrower than this (a
# phone, or a small window with the sidebar open) the results go under the canvas, where on a phone they are out
# of sight after a stroke. There, the line above the canvas says the prediction instead of "Your digit". A
# container query decides both from the row's own width, so the line changes exactly when the results move down.
# Both versions are one line of one size, so the canvas never moves under the pen when a prediction comes.
WRAP_BELOW_PX = 520
CANVAS_LABEL_STYLE = f"""<style>
.st-key-draw_row {{ container: draw-row / inline-size; }}
.draw-label {{ font-size: 0.875rem; line-height: 1.6; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
.draw-label .wide, .draw-label .faded {{ opacity: 0.6; }}
.draw-label .narrow, .draw-label .faded {{ display: none; }}
@container draw-row (max-width: {WRAP_BELOW_PX - 1}px) {{
  .st-key-draw_row > :has(> .st-key-draw_results) {{ flex-basis: 100%; }}
  .draw-label {{ font-size: 1rem; }}
  .draw-label .wide {{ display: none; }}
  .draw-label .narrow, .draw-label .faded {{ display: inline; }}
}}
</style>"""


@dataclass(frozen=True)
class RunChoice:
    """The runs a drawing can be classified with, newest first, and the one to select at first."""

    runs: list[Run]
    default_run_id: str | None
    notice: str | None = None  # why a requested run could not be used, in plain words


@dataclass(frozen=True)
class Prediction:
    """What the model made of one drawing."""

    digit: np.ndarray  # the float32 (28, 28) image the model saw, in [0, 1]
    probabilities: np.ndarray  # (10,) class probabilities
    seconds: float  # preprocessing plus the forward pass

    @property
    def predicted(self) -> int:
        """The most probable digit."""
        return int(self.probabilities.argmax())

    @property
    def confidence(self) -> float:
        """The probability of the predicted digit."""
        return float(self.probabilities.max())


def is_drawable(run: Run) -> bool:
    """True for a completed MNIST run with a saved model."""
    return run.state is RunState.COMPLETED and run.has_model and run.config.dataset == DRAWING_DATASET


def _why_not_drawable(run: Run) -> str:
    if run.damaged:
        return f"run {run.run_id} could not be read ({run.damaged})"
    if run.state.active:
        return f"run {run.run_id} is still {'queued' if run.state is RunState.QUEUED else 'training'}"
    if run.state is not RunState.COMPLETED:
        return f"run {run.run_id} ended {run.state} ({run.message or 'no details'})"
    if run.config.dataset != DRAWING_DATASET:
        return f"run {run.run_id} learned {run.config.dataset}, not handwritten digits"
    return f"run {run.run_id} has no saved model"


def choose_run(runs_dir: Path | None = None, requested_run_id: str | None = None,
               runs: list[Run] | None = None) -> RunChoice:
    """The drawable runs and the one to start with: the requested run if usable, else the best one.

    Pass `runs` when the caller has them listed (ui/run_index.py), so the folders are not read again.
    """
    runs = [run for run in (list_runs(runs_dir) if runs is None else runs) if is_drawable(run)]
    best = best_run(dataset=DRAWING_DATASET, runs=runs)
    default_run_id = best.run_id if best else (runs[0].run_id if runs else None)
    if not requested_run_id or any(run.run_id == requested_run_id for run in runs):
        return RunChoice(runs, requested_run_id or default_run_id)
    try:
        reason = _why_not_drawable(load_run(requested_run_id, runs_dir))
    except RunNotFound as error:
        reason = str(error)
    fallback = "the most accurate run is selected instead" if runs else "there is no run to draw with yet"
    return RunChoice(runs, default_run_id, f"The link asked for a run to draw with, but {reason}; {fallback}.")


def run_label(run: Run) -> str:
    """How a run reads in the select box: its id, layer sizes and test accuracy."""
    accuracy = f"{run.test_accuracy:.1%} test accuracy" if run.test_accuracy is not None else "not evaluated"
    tuned = " · fine-tuned on your drawings" if run.config.collection else ""
    return f"{run.run_id} · {run.config.describe_layers()} · {accuracy}{tuned}"


def training_run(runs_dir: Path | None = None, runs: list[Run] | None = None) -> Run | None:
    """The newest MNIST run still queued or training, whose model the page can wait for (of `runs` if given)."""
    for run in list_runs(runs_dir) if runs is None else runs:
        if run.state.active and run.config.dataset == DRAWING_DATASET:
            return run
    return None


def training_failure(run_id: str | None, runs_dir: Path | None = None) -> str | None:
    """Why a run started for drawing ended without a model, in a sentence; None if it did not fail."""
    if not run_id:
        return None
    try:
        run = load_run(run_id, runs_dir)
    except RunNotFound:
        return None
    if run.state.active or run.state is RunState.COMPLETED:
        return None
    return f"Training the model ended {run.state}: {run.message or 'no details'}."


class DrawingModel:
    """A run's model, compiled for classifying one drawing at a time in a Streamlit server, and kept as a Keras
    model for explaining a prediction (saliency, top units), which may take longer than classifying.

    Why it does not just call the Keras model: after every script run Streamlit calls
    keras.backend.clear_session(), which empties TensorFlow's eager kernel cache, so the next eager call of the
    model re-creates a kernel for each op: ~20 ms, twice the budget of a whole classification. An XLA-compiled
    function keeps its compiled program outside that cache. Streamlit also runs each rerun on a new thread,
    where TensorFlow's first call sets up per-thread state, so every call goes to the model's own long-lived
    thread, which ends when the model is dropped. bench/draw_page_latency.py measures both: ~19 ms -> ~2 ms.
    """

    def __init__(self, model_path):
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drawing-model")
        self._model, self._forward = self._call(_load_and_compile, model_path)
        # Compile now rather than on the first stroke. Explain once too: TensorFlow's first gradient takes
        # ~100 ms, and on the model's one thread the first stroke's explanation would hold up the next stroke.
        blank = np.zeros((DIGIT_SIZE, DIGIT_SIZE), dtype=np.float32)
        self.probabilities(blank)
        self.saliency(blank)
        self.top_units(blank)
        _freeze_long_lived_objects()

    def probabilities(self, digit: np.ndarray) -> np.ndarray:
        """The (10,) class probabilities of one preprocessed 28x28 digit."""
        return self._call(classify, self._forward, digit)

    def saliency(self, digit: np.ndarray) -> np.ndarray:
        """(28, 28) |d p_predicted / d pixel| of one preprocessed digit (core.insight.saliency)."""
        return self._call(insight.saliency, self._model, digit)

    def top_units(self, digit: np.ndarray, count: int = TOP_UNIT_COUNT) -> list[tuple[str, list[tuple[int, float]]]]:
        """Each hidden layer's name and its `count` most active units as (unit, activation) (core.insight)."""
        return self._call(insight.top_units, self._model, digit, count)

    def _call(self, function, *args):
        return self._thread.submit(function, *args).result()


def _freeze_long_lived_objects() -> None:
    """Once per process, after TensorFlow is loaded: hide its objects from the garbage collector.

    Streamlit collects garbage after every rerun (inside keras.backend.clear_session), and with TensorFlow
    loaded a full collection walks millions of long-lived objects: ~200 ms per stroke. Frozen objects are
    skipped (bench/draw_page_latency.py: ~20 ms a rerun). Only once, after a collection, so that no garbage
    and no later model (a cache may drop it) is frozen for good: the collector itself says whether it was.
    """
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


def _load_and_compile(model_path):
    """Load a model; return it and its forward pass as an XLA-compiled function, called like the model."""
    import tensorflow as tf  # deferred: only drawing needs it

    model = load_model(model_path)
    return model, tf.function(lambda batch, training=False: model(batch, training=training), jit_compile=True)


def classify_drawing(model: DrawingModel, image) -> Prediction | None:
    """Preprocess a canvas image and classify it; None when nothing has been drawn yet."""
    if image is None:
        return None
    started = time.perf_counter()
    try:
        digit = preprocess_drawing(image)
    except EmptyDrawingError:
        return None
    probabilities = model.probabilities(digit)
    return Prediction(digit, probabilities, time.perf_counter() - started)


@dataclass(frozen=True)
class Explanation:
    """Why the model predicted what it did: where the input mattered and which units fired most."""

    saliency: np.ndarray  # (28, 28) |gradient of the predicted probability| per pixel
    top_units: list[tuple[str, list[tuple[int, float]]]]  # (layer name, [(unit, activation), ...]) per hidden layer
    seconds: float


def explain_prediction(model: DrawingModel, prediction: Prediction, count: int = TOP_UNIT_COUNT) -> Explanation:
    """The saliency map and top units of a prediction's digit; called after the prediction is shown."""
    started = time.perf_counter()
    saliency = model.saliency(prediction.digit)
    top_units = model.top_units(prediction.digit, count)
    return Explanation(saliency, top_units, time.perf_counter() - started)


def top_units_markdown(top_units: list[tuple[str, list[tuple[int, float]]]]) -> str:
    """One line per hidden layer: its name, then its most active units with their activation."""
    return "\n".join(f"- `{layer}`: " + " · ".join(f"unit {unit} ({activation:.2f})" for unit, activation in units)
                     for layer, units in top_units)


def canvas_label_html(prediction: Prediction | None) -> str:
    """The line above the canvas: "Your digit", and for a narrow row the prediction once there is one
    (CANVAS_LABEL_STYLE shows one or the other)."""
    if prediction is None:
        narrow = '<span class="faded">Your digit</span>'
    else:
        narrow = (f'<span class="narrow"><strong>Prediction: {prediction.predicted}</strong> · '
                  f'{prediction.confidence:.1%} confident</span>')
    return f'<div class="draw-label"><span class="wide">Your digit</span>{narrow}</div>'


def preview_image(digit: np.ndarray, scale: int = PREVIEW_SCALE) -> np.ndarray:
    """The 28x28 digit as uint8 grayscale, enlarged by repeating pixels so each one stays a sharp square."""
    return enlarge(digit, scale)
