"""How long the Draw page takes from a canvas drawing to probabilities: `python bench/draw_latency.py`.

Times preprocess_drawing, classify, both together, and - side by side, for comparison -
Keras' model.predict on one image, then prints a Markdown table of median and p95 latency.
The page reruns on every stroke, so the target for preprocess + classify is a median of 10 ms.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Run as a script from anywhere: make the repository's `core` package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from core.digits import classify, preprocess_drawing  # noqa: E402

REPETITIONS = 200
WARMUP_REPETITIONS = 20
CANVAS_SIZE = 280
STROKE_WIDTH = 18
TARGET_MEDIAN_MS = 10.0


def build_model() -> keras.Model:
    """The article's 784-128-128-10 network; untrained weights time the same as trained ones."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def make_drawing() -> np.ndarray:
    """A "7" drawn with the page's brush, as the canvas returns it: uint8 RGBA, white on black."""
    image = Image.new("RGBA", (CANVAS_SIZE, CANVAS_SIZE), (0, 0, 0, 255))
    draw = ImageDraw.Draw(image)
    white = (255, 255, 255, 255)
    draw.line((70, 60, 210, 60), fill=white, width=STROKE_WIDTH)
    draw.line((210, 60, 120, 240), fill=white, width=STROKE_WIDTH)
    draw.line((110, 150, 190, 150), fill=white, width=STROKE_WIDTH)
    return np.asarray(image)


def time_call(function, repetitions: int = REPETITIONS) -> np.ndarray:
    """Call `function` repeatedly after a warm-up and return each call's duration in ms."""
    for _ in range(WARMUP_REPETITIONS):
        function()
    durations = np.empty(repetitions)
    for index in range(repetitions):
        start = time.perf_counter()
        function()
        durations[index] = time.perf_counter() - start
    return durations * 1000.0


def main() -> None:
    """Time each step and print the table."""
    model = build_model()
    drawing = make_drawing()
    digit = preprocess_drawing(drawing)
    timings = {
        "preprocess_drawing": time_call(lambda: preprocess_drawing(drawing)),
        "classify (model(x, training=False))": time_call(lambda: classify(model, digit)),
        "preprocess + classify": time_call(lambda: classify(model, preprocess_drawing(drawing))),
        "model.predict on one image (for comparison)": time_call(
            lambda: model.predict(digit[np.newaxis], verbose=0)
        ),
    }
    backend = keras.backend.backend()
    print(f"{REPETITIONS} repetitions after {WARMUP_REPETITIONS} warm-up calls, Keras backend {backend}\n")
    print("| step | median (ms) | p95 (ms) |")
    print("| --- | ---: | ---: |")
    for name, durations in timings.items():
        print(f"| {name} | {np.median(durations):.2f} | {np.percentile(durations, 95):.2f} |")
    median = float(np.median(timings["preprocess + classify"]))
    verdict = "meets" if median <= TARGET_MEDIAN_MS else "MISSES"
    print(f"\npreprocess + classify median {median:.2f} ms {verdict} the {TARGET_MEDIAN_MS:.0f} ms target")


if __name__ == "__main__":
    main()
