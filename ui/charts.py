"""Plotly figures and pictures the pages show. Figures only: no streamlit here, so tests can inspect them."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go

from core.config import SETTINGS_BY_NAME

PALETTE = tuple(plotly.colors.qualitative.D3)  # Plotly's own default colours, the ones TensorBoard users know


def smooth(values, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased so the start is not pulled to 0.

    TensorBoard's debiased average is exactly pandas' adjusted EWM with alpha = 1 - weight.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be from 0 to just under 1; got {weight}")
    values = pd.Series(np.asarray(values, dtype=float))
    return values.ewm(alpha=1.0 - weight, adjust=True).mean().to_numpy()


def enlarge(image: np.ndarray, factor: int = 3) -> np.ndarray:
    """A 28x28 [0, 1] image as uint8, each pixel repeated factor x factor, so it stays crisp on screen."""
    pixels = np.round(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255).astype(np.uint8)
    return pixels.repeat(factor, axis=0).repeat(factor, axis=1)


def probability_figure(probabilities) -> go.Figure:
    """Bars of the ten class probabilities, the predicted class highlighted."""
    probabilities = np.asarray(probabilities, dtype=float).reshape(-1)
    predicted = int(probabilities.argmax())
    colours = [PALETTE[1] if digit == predicted else PALETTE[0] for digit in range(len(probabilities))]
    figure = go.Figure(go.Bar(x=[str(d) for d in range(len(probabilities))], y=probabilities, marker_color=colours,
                              text=[f"{p:.0%}" for p in probabilities], textposition="outside"))
    figure.update_xaxes(dtick=1)  # label every digit, not every other one
    figure.update_layout(xaxis_title="digit", yaxis_title="probability", yaxis_range=[0, 1.15],
                         height=300, margin=dict(l=10, r=10, t=10, b=10), showlegend=False)
    return figure


# ----------------------------------------------------------------------------------------- training curves

MAX_POINTS = 1000  # points per trace sent to the browser; a 200,000-step run is thinned, not truncated
RAW_OPACITY = 0.25  # the unsmoothed curve stays visible behind the smoothed one, as in TensorBoard
CURVE_HEIGHT = 340


@dataclass(frozen=True)
class Curve:
    """One run's series for a chart: a name for the legend, x steps and y values."""

    name: str
    steps: list
    values: list


def thin(steps, values, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Every k-th point so that at most about `max_points` remain, always keeping the last one."""
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    if len(steps) <= max_points:
        return steps, values
    keep = np.unique(np.append(np.arange(0, len(steps), int(np.ceil(len(steps) / max_points))), len(steps) - 1))
    return steps[keep], values[keep]


def _layout(figure: go.Figure, x_title: str, y_title: str, height: int = CURVE_HEIGHT, keep_zoom=None) -> go.Figure:
    figure.update_layout(
        xaxis_title=x_title, yaxis_title=y_title, height=height, margin=dict(l=10, r=10, t=30, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0),
        hovermode="x unified",
        # Plotly keeps the user's zoom across updates while uirevision stays the same: a live chart that
        # refreshes twice a second must not jump back out of a zoom.
        uirevision=keep_zoom,
    )
    return figure


def _smoothed_traces(figure: go.Figure, curve: Curve, weight: float, colour: str, legend: str) -> None:
    smoothed = smooth(curve.values, weight) if len(curve.values) else np.empty(0)
    raw_x, raw_y = thin(curve.steps, curve.values)
    x, y = thin(curve.steps, smoothed)
    figure.add_trace(go.Scatter(x=raw_x, y=raw_y, mode="lines", line=dict(color=colour, width=1),
                                opacity=RAW_OPACITY, name=f"{legend} (raw)", showlegend=False, hoverinfo="skip"))
    figure.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=colour, width=2), name=legend))


def loss_figure(curves: list[Curve], smoothing: float, keep_zoom=None, log_scale: bool = False) -> go.Figure:
    """Training loss per step for one or more runs: smoothed lines over their faint raw curves.

    A log scale keeps a run whose loss blew up to millions from flattening every other curve to a line.
    """
    figure = go.Figure()
    for index, curve in enumerate(curves):
        _smoothed_traces(figure, curve, smoothing, PALETTE[index % len(PALETTE)],
                         curve.name if len(curves) > 1 else "loss (smoothed)")
    _layout(figure, "step", "training loss (cross-entropy)", keep_zoom=keep_zoom)
    if log_scale:
        figure.update_yaxes(type="log")
    return figure


def accuracy_figure(batch: Curve, evaluations: Curve, smoothing: float, keep_zoom=None) -> go.Figure:
    """One run's accuracy: batch accuracy per step (smoothed over raw) and test accuracy at each evaluation."""
    figure = go.Figure()
    _smoothed_traces(figure, batch, smoothing, PALETTE[0], "batch accuracy (smoothed)")
    figure.add_trace(go.Scatter(x=evaluations.steps, y=evaluations.values, mode="markers+lines",
                                marker=dict(color=PALETTE[1], size=_marker_size(len(evaluations.steps))),
                                line=dict(color=PALETTE[1], dash="dot"), name="test accuracy"))
    _layout(figure, "step", "accuracy", keep_zoom=keep_zoom)
    figure.update_yaxes(range=_accuracy_range(list(batch.values) + list(evaluations.values)), tickformat=".0%")
    return figure


def test_accuracy_figure(curves: list[Curve]) -> go.Figure:
    """Test accuracy at each evaluation, one line per run."""
    figure = go.Figure()
    for index, curve in enumerate(curves):
        figure.add_trace(go.Scatter(x=curve.steps, y=curve.values, mode="markers+lines", name=curve.name,
                                    marker=dict(color=PALETTE[index % len(PALETTE)],
                                                size=_marker_size(len(curve.steps))),
                                    line=dict(color=PALETTE[index % len(PALETTE)])))
    _layout(figure, "step", "test accuracy")
    figure.update_yaxes(range=_accuracy_range([v for curve in curves for v in curve.values]), tickformat=".0%")
    return figure


def _marker_size(count: int) -> int:
    """Big points for a few evaluations, small ones when a long run has hundreds."""
    return 9 if count <= 40 else 5


def _accuracy_range(values) -> list[float]:
    """From a little under the lowest accuracy to just above 100%, so that late gains stay visible."""
    finite = [v for v in values if np.isfinite(v)]
    low = min(finite, default=0.0)
    return [max(0.0, low - 0.05), 1.01]


# ----------------------------------------------------------------------------------------- test-set analysis


def confusion_figure(confusion, class_names: list[str]) -> go.Figure:
    """Heatmap of true (rows) against predicted (columns) classes.

    Colour is each cell's share of its true class, so that a handful of confusions stands out next to a
    diagonal of hundreds; the text in each cell is the count.
    """
    confusion = np.asarray(confusion)
    totals = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, totals, out=np.zeros(confusion.shape, dtype=float), where=totals > 0)
    figure = go.Figure(go.Heatmap(
        z=share, x=class_names, y=class_names, text=confusion, texttemplate="%{text}", colorscale="Blues",
        zmin=0, zmax=1, colorbar=dict(title="share of<br>true class", tickformat=".0%"),
        hovertemplate="true %{y}, predicted %{x}: %{text} images (%{z:.1%})<extra></extra>",
    ))
    figure.update_layout(xaxis_title="predicted", yaxis_title="true", height=460,
                         margin=dict(l=10, r=10, t=10, b=10))
    figure.update_xaxes(type="category", side="bottom")
    figure.update_yaxes(type="category", autorange="reversed")
    return figure


def per_class_figure(accuracies, class_names: list[str]) -> go.Figure:
    """Bars of the share of each class predicted right, labelled with the percentage."""
    accuracies = np.asarray(accuracies, dtype=float)
    lowest = int(np.nanargmin(accuracies)) if np.isfinite(accuracies).any() else -1
    colours = [PALETTE[3] if index == lowest else PALETTE[0] for index in range(len(accuracies))]
    figure = go.Figure(go.Bar(x=class_names, y=accuracies, marker_color=colours, textposition="outside",
                              text=["—" if np.isnan(a) else f"{a:.1%}" for a in accuracies], cliponaxis=False,
                              textfont=dict(size=12)))
    figure.update_layout(xaxis_title="true class", yaxis_title="accuracy", height=460, showlegend=False,
                         margin=dict(l=10, r=10, t=10, b=10), uniformtext=dict(minsize=11, mode="show"))
    figure.update_xaxes(type="category")
    figure.update_yaxes(range=[0, 1.1], tickformat=".0%")
    return figure


# ----------------------------------------------------------------------------------------- inside the network

# Diverging, centred on 0: negative weights blue, positive red, zero near-white (ColorBrewer's RdBu, reversed).
DIVERGING = plotly.colors.diverging.RdBu_r
MAX_GRID_UNITS = 256  # more tiles than this are too small to read in a half-width column (and slow to send)
MIN_TILE_PIXELS = 20  # a CNN's 5x5 kernel is drawn as 20x20, so its frame stays thin beside it
# The colour scale ends at this percentile of |weight|: a few extreme weights would otherwise wash every tile
# out to near-white (in a trained 784-128-128-10 the largest |weight| is twice the 99.5th percentile).
SCALE_PERCENTILE = 99.5


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid of `count` tiles: about sqrt(count) columns, no empty row."""
    columns = max(1, math.ceil(math.sqrt(count)))
    return max(1, math.ceil(count / columns)), columns


def colour_limit(images: np.ndarray) -> float:
    """The |weight| at which the colour scale ends: a high percentile, or the largest if that is 0; 1 for all-0."""
    magnitudes = np.abs(images[np.isfinite(images)])
    if not magnitudes.size or magnitudes.max() == 0:
        return 1.0
    limit = float(np.percentile(magnitudes, SCALE_PERCENTILE))
    return limit if limit > 0 else float(magnitudes.max())


# Black at 0, then red, orange and yellow for the strongest pixels (like matplotlib's "hot").
SALIENCY_COLOURS = [[0.0, "#000000"], [0.35, "#b40000"], [0.7, "#ff8c00"], [1.0, "#ffff70"]]
OUTLINE_COLOUR = "#00e5ff"  # cyan: apart from every colour of the map
OUTLINE_INK = 0.4  # the digit's outline follows this ink level (0-1)
SALIENCY_HEIGHT = 280


def saliency_figure(digit: np.ndarray, saliency: np.ndarray) -> go.Figure:
    """The saliency map, black where the gradient is 0 through red to yellow, with the digit's outline over it.

    Colour is each pixel's gradient as a share of the largest one (the raw value is in the hover text). An MLP's
    map is speckled beyond the strokes too: pixels that are blank in every training image keep their random
    initial weights, so an outline shows the digit better than a see-through overlay would.
    """
    digit = np.asarray(digit, dtype=np.float32)
    saliency = np.asarray(saliency, dtype=np.float32)
    if digit.shape != saliency.shape or digit.ndim != 2:
        raise ValueError(f"got a digit of shape {digit.shape} and a saliency map of shape {saliency.shape}; "
                         "expected two (28, 28) arrays")
    largest = float(np.nanmax(saliency)) if np.isfinite(saliency).any() else 0.0
    share = saliency / largest if largest > 0 else np.zeros_like(saliency)
    figure = go.Figure([
        go.Heatmap(z=share, zmin=0.0, zmax=1.0, colorscale=SALIENCY_COLOURS, customdata=saliency, name="saliency",
                   colorbar=dict(title="|gradient|", tickformat=".0%", thickness=10, len=0.8, y=0, yanchor="bottom"),
                   hovertemplate="row %{y}, column %{x}<br>|∂p/∂pixel| %{customdata:.2e}<extra></extra>"),
        go.Contour(z=digit, name="digit", showscale=False, hoverinfo="skip", line=dict(color=OUTLINE_COLOUR, width=2),
                   contours=dict(start=OUTLINE_INK, end=OUTLINE_INK, size=1, coloring="none")),
    ])
    figure.update_layout(height=SALIENCY_HEIGHT, margin=dict(l=0, r=0, t=0, b=0), plot_bgcolor="#000000")
    figure.update_xaxes(visible=False, constrain="domain", range=[-0.5, digit.shape[1] - 0.5])
    figure.update_yaxes(visible=False, scaleanchor="x", scaleratio=1, constrain="domain",
                        range=[digit.shape[0] - 0.5, -0.5])
    return figure



# ----------------------------------------------------------------------------------------- comparing runs

COLOUR_LABEL = {"test_accuracy": "Test accuracy"}
MAX_LISTED_TICKS = 6  # up to this many distinct values (a sweep's), each is named on its axis


def parallel_coordinates_figure(rows: list[dict], dimensions: list[str], color: str = "test_accuracy") -> go.Figure:
    """One line per row across an axis per dimension, coloured by `color`, which is also the last axis.

    Numbers get a numeric axis (logarithmic for a setting declared log-scale, such as the learning rate);
    anything else (text, booleans, None, layer lists) becomes integer positions labelled with their text. A
    row without a `color` value (a run that ended before its test) is left out.
    """
    scored = [row for row in rows if _is_number(row.get(color))]
    axes = [name for name in dimensions if name != color] + [color]
    values = np.array([row[color] for row in scored], dtype=float)
    line = dict(color=values, colorscale="Viridis", showscale=True,
                colorbar=dict(title=COLOUR_LABEL.get(color, color).replace(" ", "<br>"), tickformat=".1%",
                              thickness=12))
    if len(values):
        line.update(cmin=float(values.min()), cmax=float(values.max()))
    figure = go.Figure(go.Parcoords(line=line, labelfont=dict(size=13), tickfont=dict(size=12),
                                    dimensions=[_axis(name, [row.get(name) for row in scored]) for name in axes]))
    figure.update_layout(height=380, margin=dict(l=70, r=40, t=60, b=20))
    return figure


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


def _axis(name: str, values: list) -> dict:
    """A Parcoords dimension for one setting (or the colour column) from the rows' values."""
    setting = SETTINGS_BY_NAME.get(name)
    label = setting.label if setting else COLOUR_LABEL.get(name, name)
    if values and all(_is_number(value) for value in values):
        numbers = np.array(values, dtype=float)
        distinct = np.unique(numbers)
        if setting is not None and setting.log_scale and numbers.min() > 0:
            ticks = distinct if len(distinct) <= MAX_LISTED_TICKS else 10.0 ** np.arange(
                np.floor(np.log10(numbers.min())), np.ceil(np.log10(numbers.max())) + 1)
            return dict(label=f"{label} (log)", values=np.log10(numbers), tickvals=np.log10(ticks),
                        ticktext=[f"{tick:g}" for tick in ticks])
        axis = dict(label=label, values=numbers)
        if name == "test_accuracy":
            axis["tickformat"] = ".1%"
        elif len(distinct) <= MAX_LISTED_TICKS:  # a sweep's few values, each named on the axis
            axis.update(tickvals=distinct, ticktext=[f"{value:g}" for value in distinct])
        return axis
    texts = [_category_text(setting, value) for value in values]
    order = sorted(set(texts), key=_natural_key)
    position = {text: index for index, text in enumerate(order)}
    return dict(label=label, values=[position[text] for text in texts], tickvals=list(range(len(order))),
                ticktext=order, range=[-0.25, len(order) - 0.75] if len(order) > 1 else [-1, 1])



def _category_text(setting, value) -> str:
    """How a non-numeric value reads on its axis: a choice's label for None/True/False (xla: auto/on/off)."""
    if isinstance(value, (list, tuple)):
        return "-".join(str(item) for item in value)
    if setting is not None and not isinstance(value, str) and value in setting.choice_labels:
        return setting.choice_labels[value]
    return "—" if value is None else f"{value:g}" if _is_number(value) else str(value)


def _natural_key(text: str) -> list:
    """Sort "16" before "128-128" and "64-64" before "128": numbers inside text compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part]
