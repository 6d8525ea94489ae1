"""The Train page's views of a group of runs, each in a fragment of its own that the page refreshes while they
train: an engine comparison (the same settings on both engines) and a sweep (a grid of settings).

A view that finds all its runs ended while it was refreshing reruns the whole page, which then draws it once more
and stops refreshing it.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import queue, sweeps
from core.config import SETTINGS_BY_NAME
from core.store import load_runs
from ui import charts, texts
from ui.run_index import listed_runs
from ui.widgets import outcome_box, smoothing_control, steady_chart


def show_engine_comparison(run_ids: list[str], runs_dir: Path, live: bool) -> None:
    """Both engines' runs of one setting: their progress or outcome, and their loss curves overlaid."""
    runs = load_runs(run_ids, runs_dir)
    if not runs:
        st.warning("The runs of this engine comparison no longer exist (deleted on the Runs page?).")
        return
    if live and not any(run.state.active for run in runs):
        st.rerun()
    st.subheader("Engines compared")
    st.caption(texts.describe_config(runs[0].config, with_engine=False)
               + " · the same initial weights and batches for both engines")
    for run, column in zip(runs, st.columns(len(runs))):
        with column:
            st.markdown(f"**{texts.choice_label('engine', run.config.engine)}** · `{run.run_id}`")
            if run.state.active:
                view = texts.progress_view(run, queue.position(run.run_id, runs_dir))
                st.progress(view.fraction, text=view.text)
            else:
                outcome_box(run)
    curves = []
    for run in runs:
        metrics = run.read_metrics()
        curves.append(charts.Curve(f"{run.config.engine} engine", metrics["step"], metrics["loss"]))
    smoothing, _ = smoothing_control("compare", with_log_scale=False)
    steady_chart(charts.loss_figure(curves, smoothing, keep_zoom=",".join(run_ids)), "compare_loss")
    agreement = texts.loss_agreement(runs)
    if agreement:
        st.caption(agreement)


def show_sweep(name: str, runs_dir: Path, live: bool) -> None:
    """A sweep's runs: how many are done, training and queued; its table; and, once runs end, the chart."""
    runs = sweeps.sweep_runs(name, runs=listed_runs(runs_dir))
    if not runs:
        st.warning("The runs of this sweep no longer exist (deleted on the Runs page?).")
        return
    if live and not any(run.state.active for run in runs):
        st.rerun()
    st.subheader(f"Sweep `{name}`")
    done = sum(1 for run in runs if run.state.finished)
    st.progress(done / len(runs), text=texts.sweep_progress(runs))
    rows, varying = texts.settings_rows(runs)
    st.dataframe(rows, hide_index=True, column_config={
        **{name: SETTINGS_BY_NAME[name].label for name in varying}, "status": "Status", "run": "Run id",
        "test_accuracy": st.column_config.NumberColumn("Test accuracy", format="%.4f")})
    scored = [row for row in rows if row["test_accuracy"] is not None]
    if len(scored) >= 2 and varying:
        st.markdown("**Settings against test accuracy**")
        st.plotly_chart(charts.parallel_coordinates_figure(scored, varying), key="sweep_parallel")
    elif any(run.state.active for run in runs):
        st.caption("The chart of settings against test accuracy appears once two runs have finished.")
