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
