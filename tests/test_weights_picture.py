"""Tests for ui.live_run.weights_picture: the Train page's first-layer weights as one PNG, read back as palette
indices. A tile per unit, in order, in a near-square grid, framed; one colour scale centred on 0 for every tile."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from ui import charts
from ui.live_run import BLANK_LEVEL, COLOUR_LEVELS, FRAME_COLOUR, TILE_GAP, weights_picture
from tests.factories import make_run

TOP = COLOUR_LEVELS - 1  # the level of +limit (red); -limit is level 0 (blue), 0 is BLANK_LEVEL (white)
FRAME = COLOUR_LEVELS  # the palette index of the frame colour


def levels_of(picture: bytes) -> np.ndarray:
    """The picture's palette indices (height x width), checking it is a palette image."""
    image = Image.open(io.BytesIO(picture))
    assert image.mode == "P"
    return np.asarray(image)


def expected_levels(weights: np.ndarray, limit: float) -> np.ndarray:
    """Weights on the one scale: -limit -> 0, 0 -> the middle (white), +limit -> TOP; beyond ±limit, the end."""
    return np.rint((np.clip(weights / limit, -1.0, 1.0) + 1.0) * (TOP / 2)).astype(np.uint8)


def tile_window(unit: int, columns: int, side: int) -> tuple[slice, slice]:
    """Where unit's tile of side x side pixels lies, inside its frame."""
    top = TILE_GAP + (unit // columns) * (side + TILE_GAP)
    left = TILE_GAP + (unit % columns) * (side + TILE_GAP)
    return slice(top, top + side), slice(left, left + side)


def assert_framed(levels: np.ndarray, unit: int, columns: int, side: int) -> None:
    """A line of the frame colour all round unit's tile."""
    rows, cols = tile_window(unit, columns, side)
    around = slice(rows.start - 1, rows.stop + 1), slice(cols.start - 1, cols.stop + 1)
    ring = levels[around].copy()
    ring[1:-1, 1:-1] = FRAME
    assert (ring == FRAME).all(), f"unit {unit}'s tile is not framed all round"


def test_each_unit_has_its_own_framed_tile_in_order_in_a_near_square_grid():
    images = np.random.default_rng(0).normal(0.0, 0.1, size=(128, 28, 28)).astype(np.float32)

    picture, limit = weights_picture(images)

    levels = levels_of(picture)
    assert levels.shape == (11 * 29 + 1, 12 * 29 + 1)  # 11 rows of 12 tiles of 28 x 28, 1-px frames
    for unit in range(128):
        np.testing.assert_array_equal(levels[tile_window(unit, 12, 28)], expected_levels(images[unit], limit))
        assert_framed(levels, unit, 12, 28)
    assert (levels[-29:-1, 8 * 29 + 1:] == BLANK_LEVEL).all()  # the last row holds 128 - 120 = 8 tiles: no frame on
    # The palette sent with it: blue at level 0, white in the middle, red at the top, then the frame colour.
    palette = np.array(Image.open(io.BytesIO(picture)).getpalette()[:3 * (COLOUR_LEVELS + 1)]).reshape(-1, 3)
    blue, white, red = palette[0], palette[BLANK_LEVEL], palette[TOP]
    assert blue[2] > blue[0] and red[0] > red[2] and (white > 240).all()
    assert tuple(palette[FRAME]) == FRAME_COLOUR and (palette[FRAME] < white).all()


@pytest.mark.parametrize(("units", "shape"), [(2, (1, 2)), (64, (8, 8)), (5, (2, 3))])
def test_the_grid_is_near_square_with_no_empty_row(units, shape):
    levels = levels_of(weights_picture(np.ones((units, 28, 28), np.float32))[0])

    assert levels.shape == (shape[0] * 29 + 1, shape[1] * 29 + 1)


def test_every_tile_is_on_one_colour_scale_centred_on_zero_that_ends_at_the_99_5th_percentile():
    images = np.random.default_rng(2).normal(0.0, 0.1, size=(16, 28, 28)).astype(np.float32)
    images[0] *= 0.01  # a quiet unit: on a scale of its own it would be as bright as the others
    images[1, 0, :4] = 0.0
    images[3, 5, 5] = -5.0  # one extreme weight

    picture, limit = weights_picture(images)

    # The scale ends at the 99.5th percentile of |weight|: the outlier takes the end colour, not the whole scale.
    assert limit == pytest.approx(np.percentile(np.abs(images), 99.5)) and 0.2 < limit < 0.4
    levels = levels_of(picture)
    tiles = np.stack([levels[tile_window(unit, 4, 28)] for unit in range(16)])
    np.testing.assert_array_equal(tiles, expected_levels(images, limit))
    assert tiles[3, 5, 5] == 0 and (tiles[1, 0, :4] == BLANK_LEVEL).all()  # the outlier blue; weight 0 white
    assert (tiles[images >= limit] == TOP).all() and (tiles[images <= -limit] == 0).all()
    assert np.abs(tiles[0].astype(int) - BLANK_LEVEL).max() <= 2  # the quiet unit stays near white
    assert tiles.max() == TOP and tiles.min() == 0


@pytest.mark.parametrize(("nonzero", "limit"), [(0.0, 1.0), (0.3, 0.3)])
def test_the_colour_range_for_all_zero_and_almost_all_zero_weights(nonzero, limit):
    images = np.zeros((16, 28, 28), np.float32)
    images[4, 10, 10] = -nonzero  # one weight: the 99.5th percentile of |weight| is 0, so the scale takes it

    picture, given_limit = weights_picture(images)

    assert given_limit == pytest.approx(limit)
    tiles = np.stack([levels_of(picture)[tile_window(unit, 4, 28)] for unit in range(16)])
    assert tiles[4, 10, 10] == (0 if nonzero else BLANK_LEVEL)
    tiles[4, 10, 10] = BLANK_LEVEL
    assert (tiles == BLANK_LEVEL).all()


def test_a_cnns_small_kernels_are_enlarged_pixel_for_pixel_to_be_framed():
    kernels = np.random.default_rng(1).normal(size=(32, 5, 5)).astype(np.float32)

    picture, limit = weights_picture(kernels)

    side = 5 * 4  # each 5 x 5 kernel drawn 4x: at least MIN_TILE_PIXELS
    assert side >= charts.MIN_TILE_PIXELS
    levels = levels_of(picture)
    assert levels.shape == (6 * (side + 1) + 1, 6 * (side + 1) + 1)  # 6 x 6 tiles
    for unit in (0, 7, 31):
        enlarged = expected_levels(kernels[unit], limit).repeat(4, axis=0).repeat(4, axis=1)
        np.testing.assert_array_equal(levels[tile_window(unit, 6, side)], enlarged)
        assert_framed(levels, unit, 6, side)


def test_a_very_wide_layer_shows_its_first_units():
    images = np.ones((1024, 28, 28), np.float32)
    images[:charts.MAX_GRID_UNITS] = -1.0  # the first units blue, the others red

    picture, limit = weights_picture(images)

    levels = levels_of(picture)
    assert charts.MAX_GRID_UNITS == 256 and levels.shape == (16 * 29 + 1, 16 * 29 + 1)  # 16 x 16 tiles
    assert set(np.unique(levels)) == {0, FRAME} and limit == 1.0


def first_layer_script(run_path: str) -> None:
    """A page that shows one run's first-layer weights, as the Train page does."""
    from pathlib import Path

    from core.run_folder import read_folder
    from ui import live_run

    run = read_folder(Path(run_path))
    live_run.show_first_layer(run, live_run.live_view(run), [100])


@pytest.mark.parametrize(("units", "note"), [(256, ""), (1024, "; the first 256 of 1024 units")])
def test_the_caption_says_when_only_the_first_units_are_shown(tmp_path, units, note):
    run = make_run(tmp_path)
    run.write_first_layer(np.ones((units, 5, 5), np.float32))

    app = AppTest.from_function(first_layer_script, args=(str(run.path),), default_timeout=60).run()

    (caption,) = app.markdown
    assert caption.value.startswith("**First-layer weights** at step 100: one tile per unit")
    assert caption.value.endswith(f"full colour at ±1.000{note}.")
    assert len(app.get("image")) == 1


@pytest.mark.parametrize("shape", [(784, 128), (0, 28, 28), (2, 28, 28, 1)])
def test_what_is_not_a_stack_of_images_is_refused_with_the_shape_expected(shape):
    with pytest.raises(ValueError, match=r"got images of shape \(.*\); expected \(units, height, width\)"):
        weights_picture(np.zeros(shape, np.float32))
