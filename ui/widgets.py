"""Page pieces more than one page shows: a run's outcome box, the smoothing control, links onward, steady charts."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import queue, service
from core.run_folder import Run
from core.store import load_run, watch_run
from ui import outcomes, texts
from ui.identity import current_identity

KEEP = {"persist_state": "session"}  # widget values survive a visit to another page
BOXES = {"good": st.success, "neutral": st.info, "bad": st.warning, "broken": st.error}
TRAIN_PAGE, RUNS_PAGE, TENSORBOARD_PAGE, DRAW_PAGE = ("pages/1_Train.py", "pages/2_Runs.py",
                                                      "pages/3_TensorBoard.py", "pages/4_Draw.py")
# The two slots of a steady chart share one grid cell; the old figure hides once the new one has drawn.
STACK_STYLE = """<style>
.STACK { display: grid; grid-template-columns: 100%; }
.STACK > div { grid-area: 1 / 1; width: 100%; }
.STACK:has(.FRONT .js-plotly-plot:not([style*="hidden"]) :is(.scatterlayer .trace, .heatmaplayer .hm)) > div:has(.BACK) {
  visibility: hidden;
}
</style>"""


def outcome_box(run: Run) -> None:
    """How a run ended, in the box that fits (success, info, warning, error), with its details below."""
    result = outcomes.outcome(run)
    BOXES[result.tone](result.headline)
    if result.details:
        st.caption(result.details)


def smoothing_control(key: str, with_log_scale: bool = True) -> tuple[float, bool]:
    """TensorBoard's smoothing slider (and a log-scale switch for the loss); returns both values."""
    help_text = ("TensorBoard's smoothing: an exponential moving average of the curve. The raw curve stays faint "
                 "behind it.")
    if not with_log_scale:
        return st.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key=f"{key}_smoothing", help=help_text, **KEEP), False
    smoothing_column, scale_column = st.columns([4, 1], vertical_alignment="bottom")
    smoothing = smoothing_column.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key=f"{key}_smoothing", help=help_text,
                                        **KEEP)
    log_scale = scale_column.toggle("Log-scale loss", key=f"{key}_log_loss", **KEEP)
    return smoothing, log_scale


def run_links(run: Run, *, train: bool = False, runs: bool = False, short: bool = False) -> None:
    """Links from a run to the pages that can show more of it: only those that apply to it."""
    query = {"run": run.run_id}
    if run.has_tensorboard_logs:
        st.page_link(TENSORBOARD_PAGE, label="In TensorBoard" if short else "See this run in TensorBoard",
                     icon=":material/monitoring:", query_params=query)
    usable_model = run.has_model and not run.damaged
    if runs and usable_model:
        st.page_link(RUNS_PAGE, label="Confusion matrix and mistakes", icon=":material/table_chart:",
                     query_params=query)
    if usable_model:
        st.page_link(DRAW_PAGE, label="Draw a digit for it" if short else "Draw a digit for this model",
                     icon=":material/draw:", query_params=query)
    if train:
        st.page_link(TRAIN_PAGE, label="Follow it live", icon=":material/model_training:", query_params=query)


def train_first_link() -> None:
    """The way forward when there is no run yet."""
    st.page_link(TRAIN_PAGE, label=texts.TRAIN_FIRST, icon=":material/arrow_forward:")


def steady_chart(figure, key: str) -> None:
    """A Plotly chart that can be redrawn twice a second without blinking, and costs little when it did not change.

    Streamlit remounts a Plotly chart whenever its figure changes (the element's id hashes the figure), and a
    freshly mounted chart stays empty for a frame or two: redrawn twice a second, a live chart would blink.
    So two stacked slots take turns. A new figure mounts in one; the other keeps the previous figure, which
    is unchanged and therefore not remounted, and stays visible until the new one has drawn its traces. The
    same figure (the same object) again flips nothing and sends only the front slot: the back one has done its
    job, and every figure sent is validated and serialised again.
    """
    turn = st.session_state.get(f"{key}_turn", 0)
    previous = st.session_state.get(f"{key}_previous")
    changed = figure is not previous
    if changed:
        turn += 1
    front, back = f"{key}_slot{turn % 2}", f"{key}_slot{(turn + 1) % 2}"
    with st.container(key=f"{key}_stack"):
        for slot in (0, 1):
            with st.container(key=f"{key}_slot{slot}"):
                shown = figure if slot == turn % 2 else previous if changed else None
                if shown is not None:
                    st.plotly_chart(shown, key=f"{key}_chart{slot}")
    st.html(STACK_STYLE.replace("STACK", f"st-key-{key}_stack").replace("FRONT", f"st-key-{front}")
            .replace("BACK", f"st-key-{back}"))
    if changed:
        st.session_state[f"{key}_turn"], st.session_state[f"{key}_previous"] = turn, figure


def files_offered_here() -> bool:
    """Whether who is asking may name the server's own files as data (operators only, unless HYBRID_LAB_FILES)."""
    return service.files_offered(current_identity())


FOLLOW_SECONDS = 0.25  # follow_to_the_end redraws the bar this often


def follow_to_the_end(run_id: str, runs_dir: Path, label: str = "") -> Run:
    """A run's progress bar, redrawn from its folder as it moves on, until the run ends; returns it, ended.

    One long script run rather than a rerun per look: each rerun of a page pays Streamlit's clear_session and
    garbage collection. Between two redraws the run's status file is watched (core.store.watch_run), so its end
    is seen at once; each redraw is where a click ends the script run.
    """
    progress = st.progress(0.0, text=f"{label}Starting")
    while (run := load_run(run_id, runs_dir)).state.active:
        view = texts.progress_view(run, queue.position(run_id, runs_dir))
        progress.progress(view.fraction, text=f"{label}{view.text}")
        watch_run(run, FOLLOW_SECONDS)
    return run
