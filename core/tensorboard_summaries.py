"""TensorBoard summaries written at each evaluation, as protos any engine's writer can take.

The function engine writes them with `tf.summary.experimental.write_raw_pb`, the session engine with its
`FileWriter.add_summary`, so both runs look the same in TensorBoard and one writer per run folder is enough
(TensorBoard reads a folder's event files one after another, so two live writers would lose points).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from tensorboard.plugins.histogram import summary as histogram_summary
from tensorboard.plugins.image import summary as image_summary
from tensorboard.plugins.scalar import summary as scalar_summary

GALLERY_DIGITS = 8  # test digits shown with their predicted labels
GALLERY_SCALE = 3  # each 28x28 digit drawn 84x84 so the caption fits under it


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
) -> list:
    """Summary protos for one evaluation: test loss and accuracy, learning rate, weight histograms, gallery."""
    protos = [
        scalar_summary.pb("test_loss", np.float32(test_loss)),
        scalar_summary.pb("test_accuracy", np.float32(test_accuracy)),
        scalar_summary.pb("learning_rate", np.float32(learning_rate)),
    ]
    protos += [histogram_summary.pb(f"weights/{name}", value) for name, value in named_weights.items()]
    gallery = prediction_gallery(x_test, y_test, probabilities)
    protos.append(image_summary.pb("test_predictions", gallery[np.newaxis], max_outputs=1,
                                   description="First test digits with the model's predicted label"))
    return [_plain_tag(proto) for proto in protos]


def _plain_tag(proto):
    """Drop the "/scalar_summary"-style suffix the TF1-compatible `pb` helpers add, so tags read as named."""
    for value in proto.value:
        value.tag = value.tag.rsplit("/", 1)[0]
    return proto
