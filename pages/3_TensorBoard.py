"""TensorBoard page: one TensorBoard server over the runs directory, embedded, with the command to run it."""

import streamlit as st

from core.runs import default_runs_dir, list_runs
from core.tensorboard_server import TensorBoardError, dashboard_url, start_tensorboard, tensorboard_command
from ui.widgets import train_first_link

EMBED_HEIGHT = 900
ALL_RUNS = "All runs"

st.set_page_config(page_title="TensorBoard · Hybrid Lab", layout="wide")
st.title("TensorBoard")
st.markdown("Every run writes TensorBoard event files into its folder: the loss and batch accuracy per step, "
            "test loss and accuracy, weight histograms, the training graph and captioned test digits.")
runs_dir = default_runs_dir()


@st.cache_resource(show_spinner=False)
def tensorboard_for(runs_directory: str):
    """One server per runs directory for the life of the app process, shared by every session and rerun."""
    return start_tensorboard(runs_directory)


command = tensorboard_command(runs_dir.expanduser().resolve())
try:
    with st.spinner("Starting TensorBoard (it imports TensorFlow: a few seconds, once)…"):
        server = tensorboard_for(str(runs_dir.expanduser().resolve()))
except TensorBoardError as error:
    st.error(f"TensorBoard could not start here: {error}. You can run it yourself from a terminal:")
    st.code(command, language="bash")
    st.stop()

run_ids = [run.run_id for run in list_runs(runs_dir)]
choice_column, open_column = st.columns([3, 1], vertical_alignment="bottom")
# Bound to ?run= in the URL, so the Train and Runs pages can link straight to one run.
choice = choice_column.selectbox("Show", [ALL_RUNS, *run_ids], key="run", bind="query-params",
                                 help="One run uses TensorBoard's run filter; you can change it in TensorBoard too.")
url = dashboard_url(server.url, None if choice == ALL_RUNS else choice)
open_column.link_button("Open in a new tab", url, icon=":material/open_in_new:", width="stretch")
address_column, command_column = st.columns(2, vertical_alignment="center")
address_column.markdown(f"TensorBoard is serving at [{server.url}]({url}), on this machine only. "
                        "The same view from a terminal:")
command_column.code(command, language="bash")
if not run_ids:
    st.info("No runs yet: TensorBoard will show them as soon as the first run writes its logs.")
    train_first_link()
st.iframe(url, height=EMBED_HEIGHT, alt="TensorBoard")
