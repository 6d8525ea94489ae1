"""Hybrid Lab's home page, the main page app.py serves; the other pages are the files in pages/.

Streamlit's pages/ folder convention is used rather than st.navigation: with a folder named pages/, Streamlit
decides per server start whether to route through st.navigation, depending on the first page a browser opens.
Being the main script, this file names the first entry of the sidebar: "Home". The home page must paint fast, so this file imports only modules that never import TensorFlow.
"""

from pathlib import Path

import streamlit as st

from core.data import default_source_is_sample, describe_default_source
from core.store import best_run, default_runs_dir
from ui import texts
from ui.identity import access_line
from ui.run_index import listed_runs
from ui.widgets import DRAW_PAGE, RUNS_PAGE, TENSORBOARD_PAGE, TRAIN_PAGE, train_first_link


def home() -> None:
    """What this is, the data in use, the best run, the latest runs, and the way to every page."""
    st.title("Hybrid Lab")
    operator = access_line().is_operator  # sign-in comes back here: say who you are now
    st.markdown(
        "An MNIST classifier built the way a 2017 article mixed the two libraries: the network is **Keras layers "
        "called on raw TensorFlow tensors**, and **TensorFlow owns the training** — the inputs, the loss, the "
        "optimizer, the loop and the TensorBoard logs. Train it with the article's settings or your own, watch "
        "the loss live, compare runs, and draw a digit for it to read."
    )
    runs_dir = default_runs_dir()
    runs = listed_runs(runs_dir)
    left, right = st.columns([3, 2], gap="large")
    with left:
        show_data()
        show_best_run(runs)
    with right:
        show_page_links()
    show_recent_runs(runs, runs_dir, operator)


def show_data() -> None:
    st.subheader("Data")
    st.markdown(f"Training uses the **{describe_default_source('mnist')}**.")
    if default_source_is_sample("mnist"):
        st.info("The offline sample is small, so accuracy tops out lower than on full MNIST. "
                + texts.FULL_MNIST_HINT, icon=":material/info:")


def show_best_run(runs: list) -> None:
    st.subheader("Best run so far")
    best = best_run(runs=runs)
    if best is None:
        st.markdown("No completed run yet.")
        train_first_link()
        return
    st.metric("Test accuracy", f"{best.test_accuracy:.4f}")
    st.caption(f"{best.config.describe_layers()} · {best.config.optimizer} at learning rate "
               f"{best.config.learning_rate:g} · {best.config.steps:,} steps · {texts.data_label(best)} · "
               f"run `{best.run_id}`")
    st.page_link(RUNS_PAGE, label="Examine it on the Runs page", icon=":material/arrow_forward:",
                 query_params={"run": best.run_id})


def show_page_links() -> None:
    st.subheader("Pages")
    st.page_link(TRAIN_PAGE, label="**Train** — set up a run, watch it learn", icon=":material/model_training:")
    st.page_link(RUNS_PAGE, label="**Runs** — compare and examine runs", icon=":material/table_chart:")
    st.page_link(TENSORBOARD_PAGE, label="**TensorBoard** — every run's logs", icon=":material/monitoring:")
    st.page_link(DRAW_PAGE, label="**Draw** — a digit for a model to read", icon=":material/draw:")


def show_recent_runs(runs: list, runs_dir: Path, operator: bool) -> None:
    st.subheader("Recent runs")
    if not runs:
        st.markdown(f"No runs yet{f' in `{runs_dir}`' if operator else ''}.")  # the server's path: operators'.
        train_first_link()
        return
    st.markdown(texts.recent_runs_markdown(runs[:5]))
    st.page_link(RUNS_PAGE, label=f"All {len(runs)} runs on the Runs page", icon=":material/arrow_forward:")


st.set_page_config(page_title="Hybrid Lab", page_icon="🧪", layout="wide")
home()
