"""Tests for ui.charts: the figures the pages show, inspected as data (traces, axes, text), not as pixels."""

from __future__ import annotations

import numpy as np
import pytest

from ui import charts
from ui.charts import Curve


def traces_named(figure, name):
    return [trace for trace in figure.data if trace.name == name]


# --- smooth (shared with the Draw page's author: must keep its behaviour) -----------------------------


def test_smooth_with_weight_zero_returns_the_values():
    assert charts.smooth([3.0, 1.0, 2.0], 0.0).tolist() == [3.0, 1.0, 2.0]


def test_smooth_is_debiased_so_the_first_point_is_the_first_value():
    smoothed = charts.smooth([10.0, 10.0, 10.0], 0.9)

    np.testing.assert_allclose(smoothed, [10.0, 10.0, 10.0])


def test_smooth_matches_tensorboards_moving_average_by_hand():
    # TensorBoard: last = last * w + (1 - w) * v, divided by 1 - w ** (i + 1).
    smoothed = charts.smooth([1.0, 3.0], 0.5)

    assert smoothed[1] == pytest.approx((0.5 * 0.5 * 1.0 + 0.5 * 3.0) / (1 - 0.25))


def test_smooth_matches_tensorboards_loop_on_a_long_noisy_series():
    values = np.random.default_rng(0).normal(2.0, 1.0, size=500)
    weight, last, debias, expected = 0.9, 0.0, 1.0, []
    for value in values:  # TensorBoard's smoothing, step by step
        last = last * weight + (1 - weight) * value
        debias *= weight
        expected.append(last / (1 - debias))

    np.testing.assert_allclose(charts.smooth(values, weight), expected, rtol=1e-10)


def test_smooth_rejects_a_weight_outside_zero_to_one():
    with pytest.raises(ValueError, match="smoothing weight"):
        charts.smooth([1.0], 1.0)


def test_smooth_of_nothing_is_empty():
    assert charts.smooth([], 0.6).tolist() == []


def test_enlarge_repeats_pixels_into_a_crisp_uint8_image():
    image = np.zeros((28, 28), dtype=np.float32)
    image[0, 0] = 1.0

    big = charts.enlarge(image, factor=3)

    assert big.shape == (84, 84) and big.dtype == np.uint8
    assert (big[:3, :3] == 255).all() and big[3:, :].max() == 0 and big[:, 3:].max() == 0


def test_enlarge_clips_and_rounds_to_0_255():
    image = np.array([[-0.5, 0.5], [1.5, 0.2]], dtype=np.float32)

    assert charts.enlarge(image, factor=1).tolist() == [[0, 128], [255, 51]]


def test_probability_figure_still_highlights_the_predicted_digit():
    probabilities = np.full(10, 0.02)
    probabilities[7] = 0.82

    figure = charts.probability_figure(probabilities)

    colours = figure.data[0].marker.color
    assert colours[7] != colours[0] and len(set(colours)) == 2
    assert figure.data[0].text[7] == "82%"


# --- training curves ------------------------------------------------------------------------------


def test_thin_keeps_short_series_and_thins_long_ones_keeping_the_last_point():
    steps, values = charts.thin(range(10), range(10), max_points=20)
    assert len(steps) == 10

    steps, values = charts.thin(np.arange(200_000), np.arange(200_000), max_points=2000)

    assert len(steps) <= 2001 and steps[0] == 0 and steps[-1] == 199_999
    assert np.array_equal(steps, values)


def test_loss_figure_draws_a_faint_raw_curve_behind_the_smoothed_one():
    losses = [2.3, 1.0, 3.0, 0.5, 0.4]

    figure = charts.loss_figure([Curve("run-a", list(range(5)), losses)], smoothing=0.6)

    raw, smoothed = figure.data
    assert list(raw.y) == losses and raw.opacity == charts.RAW_OPACITY and raw.showlegend is False
    np.testing.assert_allclose(smoothed.y, charts.smooth(losses, 0.6))
    assert smoothed.name == "loss (smoothed)"
    assert figure.layout.yaxis.type != "log"


def test_palette_is_plotlys_d3_colours():
    assert charts.PALETTE[:3] == ("#1F77B4", "#FF7F0E", "#2CA02C")
    assert len(set(charts.PALETTE)) == len(charts.PALETTE) == 10


def test_loss_figure_overlays_runs_in_their_own_colours_and_can_use_a_log_axis():
    curves = [Curve("run-a", [0, 1], [2.0, 1.0]), Curve("run-b", [0, 1], [1e6, 1.0])]

    figure = charts.loss_figure(curves, smoothing=0.0, log_scale=True)

    assert [trace.name for trace in figure.data if trace.showlegend is not False] == ["run-a", "run-b"]
    assert traces_named(figure, "run-a")[0].line.color != traces_named(figure, "run-b")[0].line.color
    assert figure.layout.yaxis.type == "log"


def test_live_figures_keep_the_users_zoom_across_refreshes():
    figure = charts.loss_figure([Curve("r", [0], [1.0])], 0.6, keep_zoom="run-1")

    assert figure.layout.uirevision == "run-1"


def test_accuracy_figure_shows_test_accuracy_as_points_on_a_percent_axis():
    batch = Curve("batch accuracy", [0, 1, 2, 3], [0.1, 0.5, 0.8, 0.9])
    tested = Curve("test accuracy", [2, 4], [0.85, 0.93])

    figure = charts.accuracy_figure(batch, tested, smoothing=0.6)

    test_trace = traces_named(figure, "test accuracy")[0]
    assert list(test_trace.x) == [2, 4] and "markers" in test_trace.mode
    assert figure.layout.yaxis.tickformat == ".0%"
    low, high = figure.layout.yaxis.range
    assert low <= 0.1 and high >= 1.0


def test_test_accuracy_figure_has_one_line_per_run():
    figure = charts.test_accuracy_figure([Curve("a", [100], [0.9]), Curve("b", [100, 200], [0.8, 0.95])])

    assert [trace.name for trace in figure.data] == ["a", "b"]


def test_empty_curves_draw_without_error():
    figure = charts.loss_figure([Curve("empty", [], [])], smoothing=0.6)

    assert all(len(trace.x) == 0 for trace in figure.data)


# --- test-set analysis -----------------------------------------------------------------------------


def test_confusion_figure_colours_by_share_of_the_true_class_and_prints_counts():
    confusion = np.array([[8, 2], [0, 0]])

    figure = charts.confusion_figure(confusion, ["cat", "dog"])

    heatmap = figure.data[0]
    assert np.asarray(heatmap.z).tolist() == [[0.8, 0.2], [0.0, 0.0]]
    assert np.asarray(heatmap.text).tolist() == [[8, 2], [0, 0]]
    assert list(heatmap.x) == ["cat", "dog"] and figure.layout.yaxis.autorange == "reversed"


def test_per_class_figure_marks_the_weakest_class_and_labels_percentages():
    figure = charts.per_class_figure([0.99, 0.80, np.nan], ["0", "1", "2"])

    bars = figure.data[0]
    assert bars.marker.color[1] != bars.marker.color[0]
    assert list(bars.text) == ["99.0%", "80.0%", "—"]


# --- inside the network: the weights grid's shape (its picture: test_weights_picture.py), saliency ----


@pytest.mark.parametrize(("units", "rows", "columns"), [(16, 4, 4), (32, 6, 6), (64, 8, 8), (128, 11, 12)])
def test_grid_shape_is_near_square_with_no_empty_row(units, rows, columns):
    assert charts.grid_shape(units) == (rows, columns)


def test_saliency_figure_shows_the_saliency_with_the_digits_outline_over_it():
    digit = np.zeros((28, 28), np.float32)
    digit[10:18, 14] = 1.0
    saliency = np.zeros((28, 28), np.float32)
    saliency[12, 14], saliency[3, 3] = 0.04, 0.01

    figure = charts.saliency_figure(digit, saliency)

    overlay, outline = figure.data
    assert overlay.type == "heatmap" and outline.type == "contour"  # the outline is drawn last, on top
    share = np.asarray(overlay.z)
    assert share.shape == (28, 28) and share[12, 14] == 1.0 and share[3, 3] == pytest.approx(0.25)
    np.testing.assert_array_equal(np.asarray(overlay.customdata), saliency)  # raw gradients in the hover text
    assert (overlay.zmin, overlay.zmax) == (0.0, 1.0) and overlay.colorbar.tickformat == ".0%"
    np.testing.assert_array_equal(np.asarray(outline.z), digit)
    assert outline.contours.coloring == "none" and outline.contours.start == outline.contours.end  # one line
    assert outline.showscale is False
    assert figure.layout.yaxis.scaleanchor == "x" and figure.layout.yaxis.range[0] > figure.layout.yaxis.range[1]


def test_saliency_figure_of_a_flat_gradient_is_all_zero_not_nan():
    figure = charts.saliency_figure(np.ones((28, 28)), np.zeros((28, 28)))

    assert not np.isnan(np.asarray(figure.data[0].z)).any() and np.asarray(figure.data[0].z).max() == 0


def test_saliency_figure_rejects_maps_of_different_shapes():
    with pytest.raises(ValueError, match="expected two"):
        charts.saliency_figure(np.zeros((28, 28)), np.zeros((14, 14)))


# --- comparing runs: parallel coordinates -----------------------------------------------------------

SWEEP_ROWS = [
    {"hidden_units": "128-128", "optimizer": "sgd", "learning_rate": 0.5, "batch_size": 50, "xla": None,
     "test_accuracy": 0.94, "run": "a"},
    {"hidden_units": "16", "optimizer": "adam", "learning_rate": 0.001, "batch_size": 200, "xla": True,
     "test_accuracy": 0.81, "run": "b"},
    {"hidden_units": "64-64", "optimizer": "adam", "learning_rate": 0.01, "batch_size": 50, "xla": False,
     "test_accuracy": 0.9, "run": "c"},
    {"hidden_units": "16", "optimizer": "sgd", "learning_rate": 10.0, "batch_size": 200, "xla": None,
     "test_accuracy": None, "run": "diverged"},
]


def axes_of(figure) -> dict:
    (parcoords,) = figure.data
    assert parcoords.type == "parcoords"
    return {axis.label: axis for axis in parcoords.dimensions}


def test_parallel_coordinates_has_an_axis_per_setting_then_test_accuracy():
    figure = charts.parallel_coordinates_figure(SWEEP_ROWS, ["hidden_units", "optimizer", "learning_rate"])

    assert list(axes_of(figure)) == ["Hidden layers", "Optimizer", "Learning rate (log)", "Test accuracy"]
    # Naming the colour column among the dimensions does not give it two axes.
    again = charts.parallel_coordinates_figure(SWEEP_ROWS, ["test_accuracy", "optimizer"])
    assert list(axes_of(again)) == ["Optimizer", "Test accuracy"]


def test_parallel_coordinates_leaves_out_runs_without_accuracy_and_colours_by_it():
    figure = charts.parallel_coordinates_figure(SWEEP_ROWS, ["optimizer"])

    line = figure.data[0].line
    assert list(line.color) == [0.94, 0.81, 0.9]  # "diverged" has no test accuracy: no line
    assert (line.cmin, line.cmax) == (0.81, 0.94) and line.showscale is True
    assert all(len(axis.values) == 3 for axis in figure.data[0].dimensions)
    assert list(axes_of(figure)["Test accuracy"].values) == [0.94, 0.81, 0.9]


def test_parallel_coordinates_turns_categories_into_labelled_integer_ticks():
    axes = axes_of(charts.parallel_coordinates_figure(SWEEP_ROWS, ["hidden_units", "optimizer", "xla"]))

    layers = axes["Hidden layers"]
    assert list(layers.ticktext) == ["16", "64-64", "128-128"]  # numbers in the text sort as numbers
    assert list(layers.tickvals) == [0, 1, 2] and list(layers.values) == [2, 0, 1]
    assert list(axes["Optimizer"].ticktext) == ["adam", "sgd"] and list(axes["Optimizer"].values) == [1, 0, 0]
    assert list(axes["XLA"].ticktext) == ["auto", "off", "on"]  # None/False/True read as the choice labels
    assert list(axes["XLA"].values) == [0, 2, 1]


def test_parallel_coordinates_puts_the_learning_rate_on_a_log_axis_labelled_in_real_values():
    axis = axes_of(charts.parallel_coordinates_figure(SWEEP_ROWS, ["learning_rate"]))["Learning rate (log)"]

    np.testing.assert_allclose(axis.values, np.log10([0.5, 0.001, 0.01]))
    np.testing.assert_allclose(axis.tickvals, np.log10([0.001, 0.01, 0.5]))
    assert list(axis.ticktext) == ["0.001", "0.01", "0.5"]


def test_parallel_coordinates_names_each_value_of_a_swept_number():
    axis = axes_of(charts.parallel_coordinates_figure(SWEEP_ROWS, ["batch_size"]))["Batch size"]

    assert list(axis.values) == [50, 200, 50]
    assert list(axis.tickvals) == [50, 200] and list(axis.ticktext) == ["50", "200"]


def test_parallel_coordinates_with_no_scored_run_is_an_empty_chart_not_an_error():
    figure = charts.parallel_coordinates_figure(SWEEP_ROWS[3:], ["optimizer"])

    assert all(len(axis.values) == 0 for axis in figure.data[0].dimensions)
