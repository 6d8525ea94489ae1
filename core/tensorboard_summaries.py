"""TensorBoard summaries written at each evaluation, as protos any engine's writer can take.

The function engine writes them with `tf.summary.experimental.write_raw_pb`, the session engine with its
`FileWriter.add_summary`, so both runs look the same in TensorBoard and one writer per run folder is enough
(TensorBoard reads a folder's event files one after another, so two live writers would lose points).
At the start of a run, `hparams_summaries` gives the HParams dashboard the run's settings.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.histogram import summary as histogram_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import summary as scalar_summary
from tensorboard.util import tensor_util

GALLERY_DIGITS = 8  # test digits shown with their predicted labels
GALLERY_SCALE = 3  # each 28x28 digit drawn 84x84 so the caption fits under it
FIRST_LAYER_TAG = "first_layer_weights"
GRID_GAP = 1  # pixels between two units' cells
GAP_COLOUR = (96, 96, 96)  # grey: neither end of the colour map, nor its white middle
# ColorBrewer's RdBu, blue for negative weights, white for 0, red for positive: a diverging map whose middle
# is zero, so a weight's sign reads at a glance and unlike colours mean unlike signs.
DIVERGING_COLOURS = np.array([(5, 48, 97), (33, 102, 172), (146, 197, 222), (247, 247, 247),
                              (244, 165, 130), (178, 24, 43), (103, 0, 31)], dtype=np.float64)
# The map in 255 levels (odd, so that 0 has a level of its own: the white middle), plus the gap colour: a
# 256-colour palette, so the grid is a palette PNG, quick to encode. No visible difference from more levels.
COLOUR_LEVELS = 255
PNG_COMPRESSION = 1  # the images are small; fast compression keeps the summary thread's share of CPU low


def prediction_gallery(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """One uint8 RGB picture of the first test digits, each captioned "pred 7 (true 7)", wrong ones in red."""
    count = min(GALLERY_DIGITS, len(images))
    cell, caption = 28 * GALLERY_SCALE, 14
    canvas = Image.new("RGB", (cell * count, cell + caption), "black")
    draw = ImageDraw.Draw(canvas)
    predicted = probabilities.argmax(axis=1)
    for index in range(count):
        digit = Image.fromarray((images[index] * 255).astype(np.uint8)).resize((cell, cell), Image.NEAREST)
        canvas.paste(digit.convert("RGB"), (index * cell, 0))
        colour = "lime" if predicted[index] == labels[index] else "red"
        draw.text((index * cell + 4, cell + 1), f"pred {predicted[index]} (true {labels[index]})", fill=colour)
    return np.asarray(canvas)


def evaluation_summaries(
    test_loss: float,
    test_accuracy: float,
    learning_rate: float,
    named_weights: dict[str, np.ndarray],
    x_test: np.ndarray,
    y_test: np.ndarray,
    probabilities: np.ndarray,
    first_layer: np.ndarray | None = None,
) -> list:
    """Summary protos for one evaluation: test loss and accuracy, learning rate, weight histograms, gallery,
    and the first layer's weights as one grid image (from core.insight.first_layer_images), if given."""
    protos = [
        scalar_summary.pb("test_loss", np.float32(test_loss)),
        scalar_summary.pb("test_accuracy", np.float32(test_accuracy)),
        scalar_summary.pb("learning_rate", np.float32(learning_rate)),
    ]
    protos += [histogram_summary.pb(f"weights/{name}", value) for name, value in named_weights.items()]
    protos = [_plain_tag(proto) for proto in protos]
    gallery = Image.fromarray(prediction_gallery(x_test, y_test, probabilities), "RGB")
    protos.append(image_pb("test_predictions", gallery, "First test digits with the model's predicted label"))
    if first_layer is not None:
        protos.append(image_pb(FIRST_LAYER_TAG, weights_grid_picture(first_layer),
                               "Each unit's first-layer weights over the input (blue negative, white 0, red "
                               "positive; one scale for all units)"))
    return protos


def image_pb(tag: str, picture: Image.Image, description: str) -> summary_pb2.Summary:
    """An image summary of one picture, as TensorBoard's image plugin stores it (width, height, PNG).

    The same proto as `tensorboard.plugins.image.summary.pb` makes, but encoded by Pillow: that helper runs
    a TensorFlow session op per image, several times slower, on the thread that shares the CPU with
    training.
    """
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=PNG_COMPRESSION)
    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=image_metadata.create_summary_metadata(display_name=tag,
                                                                                  description=description),
                      tensor=tensor_util.make_tensor_proto([b"%d" % picture.width, b"%d" % picture.height,
                                                            buffer.getvalue()]))
    return summary


def weights_grid(images: np.ndarray) -> np.ndarray:
    """One uint8 RGB picture of (units, h, w) weights: a cell per unit, 1 px apart, in a near-square grid.

    Colours are on one scale for the whole grid, centred on 0: the largest |weight| of any unit is full
    blue or red, so units can be compared with each other, not only within themselves.
    """
    return PALETTE[weights_grid_levels(images)]


def weights_grid_picture(images: np.ndarray) -> Image.Image:
    """weights_grid as a palette image: a third of the pixels' bytes to compress, so a PNG in a few ms."""
    picture = Image.fromarray(weights_grid_levels(images), "P")
    picture.putpalette(PALETTE.tobytes())
    return picture


def weights_grid_levels(images: np.ndarray) -> np.ndarray:
    """The grid of weights_grid as indices into PALETTE (uint8, height x width)."""
    count, height, width = images.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    scale = float(np.max(np.abs(images))) if images.size else 0.0
    levels = diverging_levels(images / scale if scale > 0 else np.zeros_like(images))
    canvas = np.full((rows * (height + GRID_GAP) - GRID_GAP, columns * (width + GRID_GAP) - GRID_GAP),
                     GAP_LEVEL, dtype=np.uint8)
    for unit in range(count):
        top, left = (unit // columns) * (height + GRID_GAP), (unit % columns) * (width + GRID_GAP)
        canvas[top:top + height, left:left + width] = levels[unit]
    return canvas


def diverging_levels(values: np.ndarray) -> np.ndarray:
    """Levels 0 (-1, dark blue) to 254 (1, dark red) of the diverging map for values in [-1, 1]; 127 is 0."""
    return np.rint((np.clip(values, -1.0, 1.0) + 1.0) * ((COLOUR_LEVELS - 1) / 2)).astype(np.uint8)


def _palette() -> np.ndarray:
    """COLOUR_LEVELS colours along the diverging map, then the gap colour: 256 RGB rows."""
    anchors = np.linspace(-1.0, 1.0, len(DIVERGING_COLOURS))
    levels = np.linspace(-1.0, 1.0, COLOUR_LEVELS)
    channels = [np.interp(levels, anchors, DIVERGING_COLOURS[:, channel]) for channel in range(3)]
    table = np.rint(np.stack(channels, axis=-1)).astype(np.uint8)
    return np.vstack([table, np.array([GAP_COLOUR], dtype=np.uint8)])


PALETTE = _palette()
GAP_LEVEL = COLOUR_LEVELS  # the palette's last row


def hparam_value(setting, value):
    """A setting's value as the HParams dashboard shows it: numbers stay numbers; lists read "128-128";
    None reads "auto"; a choice that is not text (xla, a bool) reads as its label; text stays text."""
    if value is None:
        return "auto"
    if isinstance(value, list):
        return "-".join(str(item) for item in value)
    if setting.choices and not isinstance(value, str):
        return str(setting.choice_labels.get(value, value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return str(value)


def hparam_values(config) -> dict:
    """Every setting of a run's config, by name, as the HParams dashboard shows it."""
    return {setting.name: hparam_value(setting, getattr(config, setting.name)) for setting in config.SETTINGS}


def hparams_summaries(config, run_id: str) -> list:
    """The HParams data of a run, written once at its start: every setting's value, in a session of its own.

    No experiment summary goes with it, on purpose: without one, TensorBoard works the experiment out from
    all the runs' values, so it knows which settings differ among them (its dashboard shows those first and
    offers a filter over the values seen for each), and takes as metrics the runs' scalars, among them
    test_accuracy and test_loss, whose last point is the run's final figure. Each run is its own session
    group (named by its run id), so two runs with the same settings stay two rows.
    """
    return [hparams_summary.hparams_pb(hparam_values(config), trial_id=run_id)]


def _plain_tag(proto):
    """Drop the "/scalar_summary"-style suffix the TF1-compatible `pb` helpers add, so tags read as named."""
    for value in proto.value:
        value.tag = value.tag.rsplit("/", 1)[0]
    return proto
