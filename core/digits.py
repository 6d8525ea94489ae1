"""Turn a canvas drawing into a 28x28 digit the way MNIST made its digits, and classify it.

MNIST's recipe (LeCun et al.): crop the digit to its ink, scale it keeping the aspect ratio so
that the longer side is 20 px (anti-aliased, hence the grey levels), then place it in a 28x28
field so that its centre of mass sits at the centre. A model trained on MNIST has only ever seen
digits in that normal form, so a drawing must be brought into it before classification.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

DIGIT_SIZE = 28  # side of an MNIST image
INK_BOX_SIZE = 20  # MNIST scales the longer side of the ink to this, leaving a 4 px margin
# Where MNIST puts the centre of mass, in (row, col) pixel indices (scipy.ndimage's convention:
# the centre of pixel i is at i). Measured on the 10,000 test digits: mean (13.99, 14.01), with a
# per-axis spread of 0.29 = 1/sqrt(12), the signature of rounding to whole pixels. So MNIST put
# the centre of mass on pixel (14, 14), half a pixel right of and below the geometric centre
# (13.5, 13.5); a model learns that offset, so we match it rather than the geometric centre.
MNIST_CENTRE_OF_MASS = (14.0, 14.0)
# Ink weaker than this counts as no ink: it keeps stray anti-aliasing specks and rounding noise
# from declaring an untouched canvas "drawn" or from stretching the bounding box.
INK_THRESHOLD = 0.05
# ITU-R BT.601 luma, the weights PIL uses to convert RGB to "L".
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Drawings accepted: grayscale (H, W), RGB (H, W, 3) or RGBA (H, W, 4) as the canvas returns it.
CHANNEL_COUNTS = (3, 4)


class EmptyDrawingError(ValueError):
    """Raised when a drawing has no ink, so there is no digit to classify."""


def _as_unit_float(image) -> np.ndarray:
    """Validate an image's shape and range and return it as float32 in [0, 1]."""
    pixels = np.asarray(image)
    is_grayscale = pixels.ndim == 2
    is_colour = pixels.ndim == 3 and pixels.shape[2] in CHANNEL_COUNTS
    if not (is_grayscale or is_colour) or min(pixels.shape[:2], default=0) == 0:
        raise ValueError(
            f"got an image of shape {pixels.shape}; expected a non-empty (H, W) grayscale, "
            "(H, W, 3) RGB or (H, W, 4) RGBA array, e.g. the canvas's image_data"
        )
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) * np.float32(1 / 255)
    if not np.issubdtype(pixels.dtype, np.floating):
        raise ValueError(
            f"got an image of dtype {pixels.dtype}; expected uint8 (0-255) or float (0-1). "
            "Convert it with .astype(np.uint8) or divide it by 255"
        )
    low, high = float(pixels.min()), float(pixels.max())
    if not (0.0 <= low and high <= 1.0):  # written so that NaN fails too
        raise ValueError(
            f"got a float image with values from {low} to {high}; expected values in [0, 1] "
            "and no NaN. If it holds 0-255 values, divide it by 255"
        )
    return pixels.astype(np.float32, copy=False)


def ink_of(image) -> np.ndarray:
    """Return the ink intensity of a drawing as float32 (H, W) in [0, 1]: white ink is 1."""
    pixels = _as_unit_float(image)
    if pixels.ndim == 2:
        return pixels
    ink = pixels[..., :3] @ LUMA_WEIGHTS
    if pixels.shape[2] == 4:
        # The canvas's background is either opaque black or fully transparent, depending on its
        # settings; weighting by alpha makes both read as "no ink".
        ink *= pixels[..., 3]
    # The luma weights sum to 1 only up to float rounding.
    return np.clip(ink, 0.0, 1.0, out=ink)


def is_empty_drawing(image, threshold: float = INK_THRESHOLD) -> bool:
    """Return True when no pixel of the drawing has more ink than `threshold` (0-1)."""
    return not bool((ink_of(image) > threshold).any())


def _ink_bounding_box(ink: np.ndarray, threshold: float) -> tuple[slice, slice]:
    """Return the (rows, cols) slices of the smallest box holding all ink above `threshold`."""
    inked = ink > threshold
    inked_rows = np.flatnonzero(inked.any(axis=1))
    if inked_rows.size == 0:
        raise EmptyDrawingError("the drawing is empty: draw a digit first")
    inked_cols = np.flatnonzero(inked.any(axis=0))
    return (
        slice(inked_rows[0], inked_rows[-1] + 1),
        slice(inked_cols[0], inked_cols[-1] + 1),
    )


def _centre_of_mass(ink: np.ndarray) -> tuple[float, float]:
    """Return the ink-weighted mean (row, col) pixel index, as scipy.ndimage.center_of_mass does."""
    total = float(ink.sum())
    row = float(ink.sum(axis=1) @ np.arange(ink.shape[0])) / total
    col = float(ink.sum(axis=0) @ np.arange(ink.shape[1])) / total
    return row, col


def _field_window(crop: np.ndarray, scale: float) -> tuple[float, float, float, float]:
    """Return the (left, top, right, bottom) region of `crop` that becomes the 28x28 field.

    The region is in the crop's pixel-edge coordinates and may extend past the crop. It is
    chosen so that the crop's centre of mass lands on MNIST_CENTRE_OF_MASS, unless that would
    push ink off the field: then it is moved just enough to keep all of the crop inside.
    """
    field_side = DIGIT_SIZE / scale  # the 28 px field measured in crop pixels
    height, width = crop.shape
    corner = []
    for centre, target, extent in zip(_centre_of_mass(crop), MNIST_CENTRE_OF_MASS, (height, width)):
        # +0.5 turns a pixel index into the edge coordinate of that pixel's centre.
        start = (centre + 0.5) - (target + 0.5) / scale
        # The crop's longer side is 20 of the 28 px, so this interval is never empty.
        corner.append(min(max(start, extent - field_side), 0.0))
    top, left = corner
    return left, top, left + field_side, top + field_side


def _resample_window(crop: np.ndarray, window: tuple[float, float, float, float]) -> np.ndarray:
    """Area-average `window` of `crop` (zero outside it) down or up to a 28x28 float32 image."""
    left, top, right, bottom = window
    # PIL only resamples regions inside the image, so pad the crop with background first.
    pad_left, pad_top = math.ceil(-left), math.ceil(-top)
    pad_right = max(0, math.ceil(right - crop.shape[1]))
    pad_bottom = max(0, math.ceil(bottom - crop.shape[0]))
    padded = np.pad(crop, ((pad_top, pad_bottom), (pad_left, pad_right)))
    box = (left + pad_left, top + pad_top, right + pad_left, bottom + pad_top)
    # A fractional box lets one resampling do the scaling *and* the sub-pixel centring: a
    # separate scipy.ndimage.shift would interpolate a second time and blur the 28x28 digit.
    # BOX averages the source pixels under each target pixel: the anti-aliasing MNIST describes,
    # without LANCZOS's ringing. On drawn MNIST digits BOX, BILINEAR and LANCZOS classify equally
    # well, but only BOX gives a real MNIST digit back unchanged (the others blur it).
    field = Image.fromarray(padded).resize(
        (DIGIT_SIZE, DIGIT_SIZE), resample=Image.Resampling.BOX, box=box
    )
    return np.asarray(field, dtype=np.float32)


def preprocess_drawing(image) -> np.ndarray:
    """Turn a drawing into an MNIST-style float32 (28, 28) digit in [0, 1] whose peak is 1."""
    ink = ink_of(image)
    rows, cols = _ink_bounding_box(ink, INK_THRESHOLD)
    crop = ink[rows, cols]
    # Scaling by the longer side keeps the aspect ratio: a "1" stays thin, a "-" stays flat.
    scale = INK_BOX_SIZE / max(crop.shape)
    digit = _resample_window(crop, _field_window(crop, scale))
    peak = float(digit.max())
    if not peak > 0.0:  # cannot happen for ink above the threshold; guards the division
        raise EmptyDrawingError("the drawing is empty: draw a digit first")
    # MNIST digits peak at full intensity, while a thin stroke averaged over big pixels is grey.
    return digit / np.float32(peak)


def _as_digit_batch(digit) -> np.ndarray:
    """Validate one (28, 28) digit or a (N, 28, 28) batch and return a float32 batch."""
    batch = np.asarray(digit, dtype=np.float32)
    if batch.ndim == 2:
        batch = batch[np.newaxis]
    if batch.ndim != 3 or batch.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(
            f"got digits of shape {np.shape(digit)}; expected one (28, 28) digit or a (N, 28, 28) "
            "batch in [0, 1], e.g. the output of preprocess_drawing"
        )
    return batch


def classify(model, digit) -> np.ndarray:
    """Return the model's (10,) class probabilities for one digit, or (N, 10) for a batch."""
    # Imported here so that preprocessing a drawing does not pay for importing TensorFlow.
    import keras

    batch = _as_digit_batch(digit)
    # Calling the model directly is one eager forward pass; model.predict builds a dataset and
    # a prediction loop each call, which costs tens of milliseconds for a single image.
    probabilities = keras.ops.convert_to_numpy(model(batch, training=False))
    if probabilities.shape != (len(batch), 10):
        raise ValueError(
            f"the model returned shape {probabilities.shape} for {len(batch)} digit(s); expected "
            f"({len(batch)}, 10) probabilities. Is it an MNIST classifier with a 10-way softmax?"
        )
    return probabilities[0] if np.ndim(digit) == 2 else probabilities


def render_as_drawing(digit, rng, canvas_size: int = 280) -> np.ndarray:
    """Draw a 28x28 digit onto a canvas-like uint8 RGBA (canvas_size, canvas_size, 4) image.

    The digit's ink is scaled up so that its height is a random 40-90% of the canvas (less if
    it would then be too wide) and placed at a random position fully inside, as white ink on
    opaque black. `rng` is a numpy Generator or a seed. Used by tests and benchmarks.
    """
    if canvas_size < DIGIT_SIZE:
        raise ValueError(f"got canvas_size={canvas_size}; expected at least {DIGIT_SIZE} pixels")
    pixels = _as_unit_float(digit)
    if pixels.ndim != 2:
        raise ValueError(f"got a digit of shape {pixels.shape}; expected a grayscale (H, W) digit")
    rng = np.random.default_rng(rng)
    rows, cols = _ink_bounding_box(pixels, 0.0)
    crop = pixels[rows, cols]
    height, width = crop.shape
    scale = min(rng.uniform(0.4, 0.9) * canvas_size / height, canvas_size / width)
    # (width, height) as PIL wants it, at least 1 px and never larger than the canvas.
    size = tuple(max(1, min(canvas_size, round(side * scale))) for side in (width, height))
    # LANCZOS interpolates smoothly when enlarging; its slight ringing is clipped away.
    enlarged = np.asarray(Image.fromarray(crop).resize(size, resample=Image.Resampling.LANCZOS))
    ink = np.round(np.clip(enlarged, 0.0, 1.0) * 255).astype(np.uint8)
    top = rng.integers(0, canvas_size - size[1] + 1)
    left = rng.integers(0, canvas_size - size[0] + 1)
    canvas = np.zeros((canvas_size, canvas_size, 4), dtype=np.uint8)
    canvas[..., 3] = 255
    canvas[top : top + size[1], left : left + size[0], :3] = ink[..., np.newaxis]
    return canvas
