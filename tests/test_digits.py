"""Tests for core.digits: from a canvas drawing to an MNIST-style digit and its class."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from core.digits import (
    MNIST_CENTRE_OF_MASS,
    EmptyDrawingError,
    classify,
    ink_of,
    is_empty_drawing,
    preprocess_drawing,
    render_as_drawing,
)

CANVAS_SIZE = 280  # what the page's canvas returns
STROKE_WIDTH = 18  # the page's brush
WHITE = (255, 255, 255, 255)
MNIST_TEST_DIR = Path(__file__).resolve().parents[1].parent / "shared/data/mnist-t10k"
ROUND_TRIP_DIGITS = 1000
ROUND_TRIP_SEED = 1234


# --- drawing helpers -------------------------------------------------------------------------


def blank_canvas(alpha: int = 255) -> Image.Image:
    """A black RGBA canvas; alpha=0 is the canvas's transparent background."""
    return Image.new("RGBA", (CANVAS_SIZE, CANVAS_SIZE), (0, 0, 0, alpha))


def draw_nine(left: float, top: float, height: float, stroke_width: int = STROKE_WIDTH, alpha=255):
    """Draw a "9" (a loop and a stem, asymmetric on purpose) `height` px tall; return RGBA."""
    image = blank_canvas(alpha)
    draw = ImageDraw.Draw(image)
    width = 0.6 * height
    half = stroke_width / 2
    draw.ellipse((left, top, left + width, top + 0.5 * height), outline=WHITE, width=stroke_width)
    draw.line(
        (left + width - half, top + 0.25 * height, left + 0.5 * width, top + height - half),
        fill=WHITE,
        width=stroke_width,
    )
    return np.asarray(image)


def draw_with(paint) -> np.ndarray:
    """Call paint(draw) on a blank opaque canvas and return the RGBA pixels."""
    image = blank_canvas()
    paint(ImageDraw.Draw(image))
    return np.asarray(image)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images' pixels."""
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def ink_extent(digit: np.ndarray, threshold: float = 0.05) -> tuple[int, int]:
    """(rows, cols) spanned by the digit's ink."""
    rows = np.flatnonzero((digit > threshold).any(axis=1))
    cols = np.flatnonzero((digit > threshold).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def assert_valid_digit(digit: np.ndarray) -> None:
    """The contract of preprocess_drawing's output."""
    assert digit.shape == (28, 28)
    assert digit.dtype == np.float32
    assert np.isfinite(digit).all()
    assert digit.min() >= 0.0
    assert digit.max() == pytest.approx(1.0)


def distance_from_mnist_centre(digit: np.ndarray) -> float:
    """Euclidean distance of the digit's centre of mass from where MNIST puts it."""
    return float(np.hypot(*np.subtract(ndimage.center_of_mass(digit), MNIST_CENTRE_OF_MASS)))


# --- invariances -----------------------------------------------------------------------------


def test_position_on_canvas_does_not_matter():
    corner = preprocess_drawing(draw_nine(left=3, top=4, height=130))
    centre = preprocess_drawing(draw_nine(left=97, top=71, height=130))
    assert correlation(corner, centre) > 0.98
    assert np.abs(corner - centre).max() < 0.1


def test_size_on_canvas_does_not_matter():
    small = preprocess_drawing(draw_nine(left=40, top=50, height=80, stroke_width=6))
    large = preprocess_drawing(draw_nine(left=20, top=15, height=240, stroke_width=18))
    assert correlation(small, large) > 0.98


def test_transparent_and_opaque_backgrounds_give_the_same_digit():
    opaque = preprocess_drawing(draw_nine(left=50, top=30, height=200, alpha=255))
    transparent = preprocess_drawing(draw_nine(left=50, top=30, height=200, alpha=0))
    np.testing.assert_allclose(opaque, transparent, atol=1e-6)


@pytest.mark.parametrize("left, top, height", [(3, 4, 130), (97, 71, 130), (20, 15, 250), (150, 180, 90)])
def test_centre_of_mass_lands_on_mnist_centre(left, top, height):
    digit = preprocess_drawing(draw_nine(left, top, height))
    assert distance_from_mnist_centre(digit) < 0.5


def test_longer_side_is_twenty_pixels():
    rows, cols = ink_extent(preprocess_drawing(draw_nine(left=40, top=20, height=200)))
    assert rows in (20, 21)  # 21 when the sub-pixel placement straddles a pixel edge
    assert cols < rows


# --- empty drawings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "background",
    [(0, 0, 0, 255), (0, 0, 0, 0), (255, 255, 255, 0)],
    ids=["opaque black", "transparent black", "transparent white"],
)
def test_empty_canvas_is_empty(background):
    canvas = np.asarray(Image.new("RGBA", (CANVAS_SIZE, CANVAS_SIZE), background))
    assert is_empty_drawing(canvas)
    with pytest.raises(EmptyDrawingError):
        preprocess_drawing(canvas)


def test_stray_noise_is_empty_but_a_stroke_is_not():
    noise = np.zeros((CANVAS_SIZE, CANVAS_SIZE), dtype=np.uint8)
    noise[100, 100] = 5  # one barely visible speck
    assert is_empty_drawing(noise)
    assert not is_empty_drawing(draw_nine(left=50, top=30, height=200))


def test_ink_of_weights_luminance_by_alpha():
    pixels = np.array([[[255, 255, 255, 255], [255, 255, 255, 0], [255, 0, 0, 255], [0, 0, 0, 255]]], np.uint8)
    np.testing.assert_allclose(ink_of(pixels), [[1.0, 0.0, 0.299, 0.0]], atol=1e-3)
    assert ink_of(pixels).dtype == np.float32


# --- edge cases ------------------------------------------------------------------------------


def test_single_dot():
    digit = preprocess_drawing(draw_with(lambda d: d.ellipse((200, 30, 218, 48), fill=WHITE)))
    assert_valid_digit(digit)
    assert distance_from_mnist_centre(digit) < 0.5


def test_single_pixel():
    canvas = np.zeros((CANVAS_SIZE, CANVAS_SIZE), dtype=np.uint8)
    canvas[0, CANVAS_SIZE - 1] = 255
    assert_valid_digit(preprocess_drawing(canvas))


def test_stroke_touching_the_border():
    digit = preprocess_drawing(draw_with(lambda d: d.line((0, 0, 150, 279), fill=WHITE, width=STROKE_WIDTH)))
    assert_valid_digit(digit)
    assert ink_extent(digit)[0] >= 20


def test_thin_vertical_line_stays_thin():
    digit = preprocess_drawing(draw_with(lambda d: d.line((140, 40, 140, 240), fill=WHITE, width=2)))
    assert_valid_digit(digit)
    rows, cols = ink_extent(digit)
    assert rows >= 20
    assert cols <= 2


def test_wide_horizontal_line_stays_flat():
    digit = preprocess_drawing(draw_with(lambda d: d.line((5, 140, 275, 140), fill=WHITE, width=STROKE_WIDTH)))
    assert_valid_digit(digit)
    rows, cols = ink_extent(digit)
    assert cols >= 20
    assert rows <= 3


def test_off_centre_mass_does_not_push_ink_off_the_field():
    # A heavy blob at the end of a long thin tail: centring the mass alone would shift the
    # tail's end past the right edge, so the shift must be clipped.
    def lollipop(draw):
        draw.ellipse((5, 100, 85, 180), fill=WHITE)
        draw.line((85, 140, 275, 140), fill=WHITE, width=2)

    digit = preprocess_drawing(draw_with(lollipop))
    assert_valid_digit(digit)
    assert ink_extent(digit)[1] >= 20
    assert digit[:, -1].max() < 0.5  # the tail ends at, not beyond, the field's edge


def test_grayscale_and_float_inputs_match_rgba():
    rgba = draw_nine(left=50, top=30, height=200)
    gray_uint8 = rgba[..., 0]
    expected = preprocess_drawing(rgba)
    np.testing.assert_allclose(preprocess_drawing(gray_uint8), expected, atol=1e-5)
    np.testing.assert_allclose(preprocess_drawing(gray_uint8 / 255.0), expected, atol=1e-5)
    np.testing.assert_allclose(preprocess_drawing(rgba[..., :3]), expected, atol=1e-3)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        np.zeros(280, np.uint8),
        np.zeros((2, 280, 280, 4), np.uint8),
        np.zeros((280, 280, 2), np.uint8),
        np.zeros((280, 280, 5), np.uint8),
        np.zeros((0, 0), np.uint8),
        np.full((28, 28), np.nan, np.float32),
        np.full((28, 28), 255.0),
        np.zeros((28, 28), np.int64),
    ],
    ids=["1-D", "4-D", "2 channels", "5 channels", "0x0", "NaN", "float 0-255", "int64"],
)
def test_bad_input_raises_a_value_error_that_is_not_empty_drawing(image):
    with pytest.raises(ValueError, match="expected") as caught:
        preprocess_drawing(image)
    assert not isinstance(caught.value, EmptyDrawingError)


# --- classify --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    """An untrained single-layer softmax classifier with the project's model contract."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    )


def test_classify_one_digit(tiny_model):
    digit = preprocess_drawing(draw_nine(left=50, top=30, height=200))
    probabilities = classify(tiny_model, digit)
    assert probabilities.shape == (10,)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(probabilities, tiny_model.predict(digit[None], verbose=0)[0], atol=1e-6)


def test_classify_a_batch(tiny_model):
    batch = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    probabilities = classify(tiny_model, batch)
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_classify_rejects_a_flat_digit(tiny_model):
    with pytest.raises(ValueError, match=r"\(28, 28\)"):
        classify(tiny_model, np.zeros(784, np.float32))


# --- against real MNIST ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_test_set():
    """The first real MNIST test digits (uint8) and labels, from ../shared when present."""
    images_path = MNIST_TEST_DIR / "t10k-images-idx3-ubyte.gz"
    labels_path = MNIST_TEST_DIR / "t10k-labels-idx1-ubyte.gz"
    if not (images_path.exists() and labels_path.exists()):
        pytest.skip(f"the real MNIST test set is not at {MNIST_TEST_DIR} (it ships only beside the repo)")
    from core.datafiles import read_idx

    return read_idx(images_path)[:ROUND_TRIP_DIGITS], read_idx(labels_path)[:ROUND_TRIP_DIGITS]


@pytest.fixture(scope="module")
def mnist_model(tmp_path_factory):
    """The article's run, trained by the project's own engine on the offline sample, loaded from model.keras."""
    from core.config import TrainConfig
    from core.network import load_model
    from core.training import train

    run = train(TrainConfig(source="offline"), tmp_path_factory.mktemp("runs"))
    assert run.state == "completed", run.status
    return load_model(run.model_path)


def test_mnist_centre_convention_matches_real_digits(mnist_test_set):
    images, _ = mnist_test_set
    centres = np.array([ndimage.center_of_mass(image) for image in images.astype(np.float64)])
    np.testing.assert_allclose(centres.mean(axis=0), MNIST_CENTRE_OF_MASS, atol=0.05)


def test_a_real_mnist_digit_comes_back_unchanged(mnist_test_set):
    # It is already in MNIST's normal form; a wrong centre convention would shift it a pixel.
    images, _ = mnist_test_set
    digits = images[:200]
    preprocessed = [preprocess_drawing(image) for image in digits]
    correlations = [correlation(before, after) for before, after in zip(digits, preprocessed)]
    assert np.mean(correlations) > 0.99


def test_render_as_drawing_looks_like_a_canvas(mnist_test_set):
    images, _ = mnist_test_set
    rng = np.random.default_rng(0)
    for image in images[:50]:
        drawing = render_as_drawing(image, rng)
        assert drawing.shape == (CANVAS_SIZE, CANVAS_SIZE, 4)
        assert drawing.dtype == np.uint8
        assert (drawing[..., 3] == 255).all()
        rows, _ = ink_extent(ink_of(drawing), threshold=0.0)
        assert 0.4 * CANVAS_SIZE - 1 <= rows <= 0.9 * CANVAS_SIZE + 1
    np.testing.assert_array_equal(render_as_drawing(images[0], 7), render_as_drawing(images[0], 7))


def test_drawn_digits_classify_as_well_as_the_originals(mnist_model, mnist_test_set):
    images, labels = mnist_test_set
    rng = np.random.default_rng(ROUND_TRIP_SEED)
    drawn = np.stack([preprocess_drawing(render_as_drawing(image, rng)) for image in images])
    original_accuracy = float((classify(mnist_model, images / 255.0).argmax(axis=1) == labels).mean())
    drawn_accuracy = float((classify(mnist_model, drawn).argmax(axis=1) == labels).mean())
    print(
        f"\nround trip on {len(images)} MNIST test digits: original accuracy {original_accuracy:.1%}, "
        f"drawn then preprocessed {drawn_accuracy:.1%}"
    )
    assert original_accuracy > 0.85  # otherwise the comparison below says nothing
    assert drawn_accuracy >= original_accuracy - 0.02
