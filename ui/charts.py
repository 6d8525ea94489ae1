"""Plotly figures and pictures the pages show. Figures only: no streamlit here, so tests can inspect them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go

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

MAX_POINTS = 2000  # points per trace sent to the browser; a 200,000-step run is thinned, not truncated
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
