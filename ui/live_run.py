"""The Train page's view of one run's curves and first-layer weights, cheap enough to redraw while it trains.

A page that watches a run shares the machine with the worker training it. Redrawn twice a second as whole Plotly
figures, the curves and the weights grid (a 100,000-cell heatmap, built and serialised to 1 MB of JSON twice per
redraw) kept the app server busy for more than a second of every second, and the run trained at a quarter of its
speed (issue 17). Here each redraw does only what changed:

- the rows of metrics.csv and evaluations.csv are read incrementally (CsvFollower), never the whole file again;
- the curves are rebuilt at most once a second (CURVES_EVERY_SECONDS), and only when there are new rows, with at
  most charts.MAX_POINTS points per trace; between rebuilds the same figures are shown again;
- when the run ends, its outcome goes first: a refresh of the curves in between keeps the figures it has, and
  the page's rerun that follows the outcome draws the last ones;
- the weights are one PNG picture, made once per evaluation (first_layer.npy's mtime says when there is a new
  one) and then sent again as the same file, which the browser does not reload.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field

import numpy as np
import plotly.colors
import streamlit as st
from PIL import Image

from core.records import EVALUATION_FIELDS, EVALUATIONS_FILE
from core.run_files import CsvFollower
from core.run_folder import Run
from ui import charts
from ui.widgets import smoothing_control, steady_chart

CURVES_EVERY_SECONDS = 1.0  # at most this often are the curves rebuilt while a run trains
STATE_KEY = "train_live_view"
OUTCOME_KEY = "train_outcome_shown"  # (run id, when its outcome was sent)
# After a run ends, its last curves (and the Train page's rerun that stops the refreshing) come at the first
# refresh this long after its outcome was sent, not at the same moment: the browser draws the outcome (a few lines
# in the progress fragment: 0.1 s here) before it starts on two Plotly charts and the whole page.
OUTCOME_FIRST_SECONDS = 0.2
TILE_GAP = 1  # px of frame colour between two units' tiles
FRAME_COLOUR = (90, 90, 90)  # dark enough to frame a tile whose weights are all near 0
COLOUR_LEVELS = 255  # levels of the diverging map; the palette's last entry is the frame colour
BLANK_LEVEL = (COLOUR_LEVELS - 1) // 2  # weight 0, white: where a last row has no tile


@dataclass
class LiveView:
    """What this session last drew of one run, so that the next redraw can skip what has not changed."""

    run_id: str
    metrics: CsvFollower
    evaluations: CsvFollower
    curves_key: tuple | None = None  # (rows, evaluations, smoothing, log scale) the figures were built for
    curves_at: float = 0.0  # time.monotonic() when they were built
    figures: tuple = ()
    weights_version: int | None = None  # first_layer.npy's mtime_ns when the picture was made
    weights: bytes | None = None
    weights_caption: str = ""
    figure_builds: int = field(default=0)  # for tests: how many times the curves were built


def live_view(run: Run) -> LiveView:
    """This session's view of `run`, made fresh when the page follows another run."""
    view = st.session_state.get(STATE_KEY)
    if view is None or view.run_id != run.run_id:
        view = LiveView(run.run_id, run.follow_metrics(), CsvFollower(run.path / EVALUATIONS_FILE, EVALUATION_FIELDS))
        st.session_state[STATE_KEY] = view
    return view


def outcome_shown(run_id: str) -> None:
    """Say that the page has sent how `run_id` ended (the progress fragment, or the whole page); the first time
    counts."""
    shown = st.session_state.get(OUTCOME_KEY)
    if shown is None or shown[0] != run_id:
        st.session_state[OUTCOME_KEY] = (run_id, time.monotonic())


def outcome_on_screen(run_id: str) -> bool:
    """True once the outcome of `run_id` was sent OUTCOME_FIRST_SECONDS ago or more."""
    shown = st.session_state.get(OUTCOME_KEY)
    return shown is not None and shown[0] == run_id and time.monotonic() - shown[1] >= OUTCOME_FIRST_SECONDS


def show_curves(run: Run, live: bool = False) -> None:
    """Loss and accuracy per step, and the first layer's weights, redrawn only where they changed; `live` while a
    fragment refreshes them as the run trains."""
    view = live_view(run)
    metrics, evaluations = view.metrics.read(), view.evaluations.read()
    if not metrics["step"]:
        # Nothing yet (the progress fragment says the curves come with the first steps). One empty element where
        # the view's container goes: it replaces all of a previous run's view at once, which the browser would
        # otherwise keep under this run's bar until the page's script run ends.
        st.empty()
        return
    with st.container():
        draw_curves(run, live, view, metrics, evaluations)


def draw_curves(run: Run, live: bool, view: LiveView, metrics: dict, evaluations: dict) -> None:
    """show_curves' view of a run with steps: the figures rebuilt when due (or asked for), then drawn."""
    smoothing, log_scale = smoothing_control("train")
    key = (len(metrics["step"]), len(evaluations["step"]), smoothing, log_scale)
    due = time.monotonic() - view.curves_at >= CURVES_EVERY_SECONDS or not run.state.active
    if live and view.figures and not run.state.active and not outcome_on_screen(run.run_id):
        due = False  # the last curves wait until the outcome is on screen: a browser busy drawing them would not be
    asked = view.curves_key is not None and key[2:] != view.curves_key[2:]  # smoothing or scale: redraw now
    if key != view.curves_key and (due or asked):
        loss = charts.Curve(run.run_id, metrics["step"], metrics["loss"])
        batch = charts.Curve("batch accuracy", metrics["step"], metrics["batch_accuracy"])
        tested = charts.Curve("test accuracy", evaluations["step"], evaluations["test_accuracy"])
        view.figures = (charts.loss_figure([loss], smoothing, keep_zoom=run.run_id, log_scale=log_scale),
                        charts.accuracy_figure(batch, tested, smoothing, keep_zoom=run.run_id))
        view.curves_key, view.curves_at = key, time.monotonic()
        view.figure_builds += 1
    loss_column, accuracy_column = st.columns(2)
    with loss_column:
        steady_chart(view.figures[0], "train_loss")
    with accuracy_column:
        steady_chart(view.figures[1], "train_accuracy")
    show_first_layer(run, view, evaluations["step"])


def show_first_layer(run: Run, view: LiveView, evaluation_steps: list) -> None:
    """What the first layer has learned: one picture of its weights, made again only after an evaluation."""
    version = run.first_layer_version()
    if version is None:
        return
    if version != view.weights_version:
        images = run.read_first_layer()
        if images is None:
            return
        view.weights, limit = weights_picture(images)
        view.weights_version = version
        view.weights_caption = (f"one tile per unit (0, 1, 2, … along the rows), red where a pixel pushes the unit "
                                f"up, blue where it pushes it down, on one scale for all: full colour at ±{limit:.3f}"
                                + (f"; the first {charts.MAX_GRID_UNITS} of {len(images)} units"
                                   if len(images) > charts.MAX_GRID_UNITS else ""))
    step = f" at step {evaluation_steps[-1]:,}" if evaluation_steps else ""
    st.markdown(f"**First-layer weights**{step}: {view.weights_caption}.")
    st.image(view.weights, output_format="PNG")


# ------------------------------------------------------------------------------------------- the picture


def _palette() -> np.ndarray:
    """COLOUR_LEVELS colours along the page's diverging map (blue, white, red), then the frame colour."""
    stops = [plotly.colors.unlabel_rgb(colour) for colour in plotly.colors.convert_colors_to_same_type(
        charts.DIVERGING, colortype="rgb")[0]]
    anchors = np.linspace(0.0, 1.0, len(stops))
    levels = np.linspace(0.0, 1.0, COLOUR_LEVELS)
    channels = [np.interp(levels, anchors, [stop[channel] for stop in stops]) for channel in range(3)]
    table = np.rint(np.stack(channels, axis=-1)).astype(np.uint8)
    return np.vstack([table, np.array([FRAME_COLOUR], dtype=np.uint8)])


PALETTE = _palette()


def weights_picture(images: np.ndarray) -> tuple[bytes, float]:
    """(units, h, w) weights as one PNG: a tile per unit in a near-square grid, framed, on one colour scale centred
    on 0 whose ends are at charts' percentile of |weight| (returned with it); at least charts.MIN_TILE_PIXELS a
    tile, pixel for pixel."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or 0 in images.shape:
        raise ValueError(f"got images of shape {images.shape}; expected (units, height, width), e.g. "
                         "(128, 28, 28) from core.insight.first_layer_images")
    images = images[:charts.MAX_GRID_UNITS]
    limit = charts.colour_limit(images)
    scale = max(1, math.ceil(charts.MIN_TILE_PIXELS / max(images.shape[1:])))
    levels = np.rint((np.clip(np.nan_to_num(images / limit), -1.0, 1.0) + 1.0) * ((COLOUR_LEVELS - 1) / 2))
    levels = levels.astype(np.uint8).repeat(scale, axis=1).repeat(scale, axis=2)
    count, height, width = levels.shape
    rows, columns = charts.grid_shape(count)
    canvas = np.full((rows * (height + TILE_GAP) + TILE_GAP, columns * (width + TILE_GAP) + TILE_GAP),
                     BLANK_LEVEL, dtype=np.uint8)
    for unit in range(count):
        top = TILE_GAP + (unit // columns) * (height + TILE_GAP)
        left = TILE_GAP + (unit % columns) * (width + TILE_GAP)
        canvas[top - TILE_GAP:top + height + TILE_GAP, left - TILE_GAP:left + width + TILE_GAP] = COLOUR_LEVELS
        canvas[top:top + height, left:left + width] = levels[unit]
    picture = Image.fromarray(canvas, "P")
    picture.putpalette(PALETTE.tobytes())
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue(), limit
