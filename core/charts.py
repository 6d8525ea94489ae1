"""Plotly figures the pages show. Figures only: no streamlit here, so tests can inspect them."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def smooth(values, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased so the start is not pulled to 0."""
    values = np.asarray(values, dtype=float)
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be from 0 to just under 1; got {weight}")
    smoothed = np.empty_like(values)
    last, debias = 0.0, 1.0
    for index, value in enumerate(values):
        last = last * weight + (1 - weight) * value
        debias *= weight
        smoothed[index] = last / (1 - debias) if weight > 0 else value
    return smoothed


def probability_figure(probabilities) -> go.Figure:
    """Bars of the ten class probabilities, the predicted class highlighted."""
    probabilities = np.asarray(probabilities, dtype=float).reshape(-1)
    predicted = int(probabilities.argmax())
    colours = [PALETTE[1] if digit == predicted else PALETTE[0] for digit in range(len(probabilities))]
    figure = go.Figure(go.Bar(x=[str(d) for d in range(len(probabilities))], y=probabilities, marker_color=colours,
                              text=[f"{p:.0%}" for p in probabilities], textposition="outside"))
    figure.update_layout(xaxis_title="digit", yaxis_title="probability", yaxis_range=[0, 1.15],
                         height=300, margin=dict(l=10, r=10, t=10, b=10), showlegend=False)
    return figure
