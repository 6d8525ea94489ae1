"""A personal hand drawn the way the Draw page's canvas draws: strokes of points, in canvas pixels (280 x 280).

The hand is a "continental" one: a slashed zero (Ø, as programmers write it, which MNIST never shows), a seven
with a bar across its stem and a one with a flag, the others plain. Each drawing of a digit is the template's
strokes moved, scaled, slanted and jittered a little, from a seeded generator, so the kept drawings and the
fresh ones are alike without being the same.

`render` paints strokes as the canvas's freedraw pen does (Fabric.js: white round-capped lines, anti-aliased,
on black) into the RGBA image the canvas returns (`image_data`), which core.digits.preprocess_drawing then
reads exactly as the page does. The browser tests send the same strokes as mouse moves.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

CANVAS_SIZE = 280
STROKE_WIDTH = 18  # the Draw page's default pen
SUPERSAMPLE = 4  # drawn 4x larger and scaled down: the canvas's anti-aliased edges


def _oval(centre_x, centre_y, radius_x, radius_y, points=28, start_degrees=-90.0):
    """An oval drawn from its top, anticlockwise on screen, closing on itself."""
    return [(centre_x + radius_x * math.cos(math.radians(start_degrees - 360 * i / points)),
             centre_y + radius_y * math.sin(math.radians(start_degrees - 360 * i / points)))
            for i in range(points + 1)]


def _arc(centre_x, centre_y, radius_x, radius_y, from_degrees, to_degrees, points=14):
    return [(centre_x + radius_x * math.cos(math.radians(from_degrees + (to_degrees - from_degrees) * i / points)),
             centre_y + radius_y * math.sin(math.radians(from_degrees + (to_degrees - from_degrees) * i / points)))
            for i in range(points + 1)]


# Each digit: a list of strokes, each a list of (x, y) points on the 280 x 280 canvas.
HAND = {
    0: [_oval(140, 140, 55, 90), [(78, 235), (202, 45)]],  # Ø: an oval and a slash through it, beyond its edges
    1: [[(105, 85), (145, 45), (145, 240)]],  # a flag, then the stem
    2: [_arc(140, 95, 55, 50, 200, 390, 10) + [(90, 235), (200, 235)]],
    3: [_arc(135, 90, 50, 45, 210, 450, 10) + _arc(135, 185, 55, 50, 270, 520, 12)],
    4: [[(160, 45), (85, 170), (205, 170)], [(170, 100), (170, 240)]],
    5: [[(195, 50), (105, 50), (95, 130)] + _arc(140, 175, 60, 55, 230, 500, 12)],
    6: [[(185, 50)] + _arc(140, 175, 55, 55, 200, 560, 16)],
    7: [[(80, 55), (205, 55), (130, 240)], [(110, 150), (195, 150)]],  # the bar, the stem, then the cross-bar
    8: [_arc(140, 90, 45, 42, 0, -360, 16) + _arc(140, 180, 55, 55, -90, 270, 18)],
    9: [_oval(145, 95, 50, 48, 18, 0) + [(195, 95), (180, 240)]],
}


def vary(strokes, rng: np.random.Generator) -> list[list[tuple[float, float]]]:
    """The strokes as one more drawing of the same hand: moved, scaled, slanted and jittered a little."""
    scale = rng.uniform(0.75, 1.1)
    slant = rng.uniform(-0.15, 0.15)  # x moves with height, as handwriting leans
    shift_x, shift_y = rng.uniform(-25, 25, size=2)
    varied = []
    for stroke in strokes:
        points = []
        for x, y in stroke:
            dx, dy = (x - 140) * scale, (y - 140) * scale
            jitter_x, jitter_y = rng.normal(0, 3, size=2)
            point = (140 + dx - slant * dy + shift_x + jitter_x, 140 + dy + shift_y + jitter_y)
            points.append(tuple(float(np.clip(value, 8, CANVAS_SIZE - 8)) for value in point))
        varied.append(points)
    return varied


def render(strokes, stroke_width: int = STROKE_WIDTH, canvas_size: int = CANVAS_SIZE) -> np.ndarray:
    """The canvas's RGBA uint8 image of these strokes: white round-capped lines on opaque black."""
    big = Image.new("L", (canvas_size * SUPERSAMPLE,) * 2, 0)
    pen = ImageDraw.Draw(big)
    width = stroke_width * SUPERSAMPLE
    for stroke in strokes:
        points = [(x * SUPERSAMPLE, y * SUPERSAMPLE) for x, y in stroke]
        pen.line(points, fill=255, width=width, joint="curve")
        for x, y in points:  # round caps and joins, as the canvas's pen draws them
            pen.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    ink = np.asarray(big.resize((canvas_size, canvas_size), Image.Resampling.BOX))
    image = np.zeros((canvas_size, canvas_size, 4), np.uint8)
    image[..., 0] = image[..., 1] = image[..., 2] = ink
    image[..., 3] = 255
    return image


def drawings(digits, count_each: int, seed: int) -> list[tuple[int, list]]:
    """`count_each` varied drawings of each digit as (digit, strokes), from `seed`."""
    rng = np.random.default_rng(seed)
    return [(digit, vary(HAND[digit], rng)) for digit in digits for _ in range(count_each)]
