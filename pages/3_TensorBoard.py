"""TensorBoard page: the app's own TensorBoard over the runs directory, embedded, with the command to run it."""

import streamlit as st

from core.store import default_runs_dir
from core.tensorboard_server import MOUNT_PATH, dashboard_url, tensorboard_command
from ui.identity import current_identity
from ui.run_index import listed_runs
from ui.widgets import train_first_link

EMBED_HEIGHT = 900
ALL_RUNS = "All runs"

st.set_page_config(page_title="TensorBoard · Hybrid Lab", layout="wide")
st.title("TensorBoard")
st.markdown("Every run writes TensorBoard event files into its folder: the loss and batch accuracy per step, "
            "test loss and accuracy, weight histograms, the training graph and captioned test digits.")
runs_dir = default_runs_dir()

run_ids = [run.run_id for run in listed_runs(runs_dir)]
choice_column, open_column = st.columns([3, 1], vertical_alignment="bottom")
# Bound to ?run= in the URL, so the Train and Runs pages can link straight to one run.
choice = choice_column.selectbox("Show", [ALL_RUNS, *run_ids], key="run", bind="query-params",
                                 help="One run uses TensorBoard's run filter; you can change it in TensorBoard too.")
url = dashboard_url(None if choice == ALL_RUNS else choice)
open_column.link_button("Open in a new tab", url, icon=":material/open_in_new:", width="stretch")
served = (f"TensorBoard is served by this app at [{MOUNT_PATH}/]({url}), through the same address and port as "
          "these pages. The first visit starts it (a few seconds).")
if current_identity().is_operator:  # the terminal command names a folder of the server: operators only
    address_column, command_column = st.columns(2, vertical_alignment="center")
    address_column.markdown(served + " The same view from a terminal on the server:")
    command_column.code(tensorboard_command(runs_dir.expanduser().resolve()), language="bash")
else:
    st.markdown(served)
if not run_ids:
    st.info("No runs yet: TensorBoard will show them as soon as the first run writes its logs.")
    train_first_link()
st.iframe(url, height=EMBED_HEIGHT, alt="TensorBoard")
