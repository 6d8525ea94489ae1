"""Runs page: every run in a table; compare a few; see one on its test set; download or delete it."""

from pathlib import Path

import streamlit as st

from core import access, evaluation
from core.export_script import run_script, script_file_name
from core.records import RunStoreError
from core.store import default_runs_dir, delete_run
from ui import charts, texts
from ui.clipboard import copy_button
from ui.identity import access_line, current_identity
from ui.links import train_settings_link
from ui.run_index import listed_runs
from ui.widgets import outcome_box, run_links, smoothing_control, train_first_link

GALLERY_WIDTH = 84  # px: each 28x28 digit enlarged 3x, pixel for pixel
DELETING = "runs_deleting"  # the run whose delete confirmation is open
DELETE_REFUSED = "runs_delete_refused"  # why the last Delete was refused, shown once in the dialog
EVERYONES, MINE = "Everyone's", "Mine"

st.set_page_config(page_title="Runs · Hybrid Lab", layout="wide")
st.title("Runs")
identity = access_line()
st.markdown("Every training run, newest first; click a column header to sort. Tick rows to compare runs, "
            "and examine one of them on its test set below.")
runs_dir = default_runs_dir()


@st.cache_data(show_spinner=False, max_entries=16)
def analyse(run_id: str, runs_directory: str, model_mtime: float) -> evaluation.RunAnalysis:
    """The run's model on its test set; the model's mtime in the key reloads a replaced model."""
    return evaluation.analyse_run(run_id, Path(runs_directory))


def stop_deleting() -> None:
    st.session_state.pop(DELETING, None)


@st.dialog("Delete this run?", on_dismiss=stop_deleting)
def confirm_delete(run_id: str) -> None:
    if st.session_state.get(DELETING) != run_id:  # deleted or cancelled, by the buttons' callbacks below
        st.rerun()  # the whole page, without the dialog: it closes
    st.markdown(f"Run `{run_id}` and everything in its folder — model, metrics, TensorBoard logs — will be "
                "deleted. This cannot be undone.")
    if refusal := st.session_state.pop(DELETE_REFUSED, None):
        st.error(refusal)
    delete, cancel = st.columns(2)
    delete.button("Delete", type="primary", icon=":material/delete:", width="stretch", on_click=delete_confirmed,
                  args=(run_id,))
    cancel.button("Cancel", width="stretch", on_click=stop_deleting)


def delete_confirmed(run_id: str) -> None:
    """The dialog's Delete, as a callback: Streamlit calls it as the click's rerun starts, before the page or the
    dialog runs, so the delete is done before anything is drawn again; the dialog then closes itself, or shows
    why not."""
    try:
        delete_run(run_id, runs_dir, identity=current_identity())
    except access.PermissionRefused as refusal:  # a crafted request: the button shows only to who may
        st.session_state[DELETE_REFUSED] = texts.plain(f"Cannot delete this run: {refusal}.")
        return
    except (ValueError, RunStoreError) as error:  # RunNotFound included: someone else deleted it first
        st.session_state[DELETE_REFUSED] = f"{error}."
        return
    stop_deleting()
    st.query_params.pop("run", None)


def show_comparison(selected: list) -> None:
    """Loss curves and test accuracy of the selected runs on shared axes, and their differing settings (as a table
    and against test accuracy)."""
    st.header("Compare" if len(selected) > 1 else "Curves")
    smoothing, log_scale = smoothing_control("runs")
    losses, accuracies = [], []
    for run in selected:
        metrics, evaluations = run.read_metrics(), run.read_evaluations()
        losses.append(charts.Curve(run.run_id, metrics["step"], metrics["loss"]))
        accuracies.append(charts.Curve(run.run_id, evaluations["step"], evaluations["test_accuracy"]))
    loss_column, accuracy_column = st.columns(2)
    with loss_column:
        st.markdown("**Training loss per step**")
        st.plotly_chart(charts.loss_figure(losses, smoothing, log_scale=log_scale), key="runs_loss_chart")
    with accuracy_column:
        st.markdown("**Test accuracy at each evaluation**")
        if any(curve.steps for curve in accuracies):
            st.plotly_chart(charts.test_accuracy_figure(accuracies), key="runs_accuracy_chart")
        else:
            st.caption("No evaluation was made: the run ended before its first one.")
    if len(selected) > 1:
        st.markdown("**Settings that differ**")
        differences = texts.config_diff(selected)
        if differences:
            st.dataframe(differences, hide_index=True)
            show_settings_chart(selected)
        else:
            st.caption("None: these runs share every setting.")


def show_settings_chart(selected: list) -> None:
    """The settings that differ among the selected runs against their test accuracy, one line per run."""
    rows, varying = texts.settings_rows(selected)
    scored = [row for row in rows if row["test_accuracy"] is not None]
    if len(scored) < 2:
        st.caption("The chart of settings against test accuracy needs two runs that reached their test.")
        return
    st.markdown("**Settings against test accuracy** (one line per run; drag along an axis to pick runs)")
    st.plotly_chart(charts.parallel_coordinates_figure(scored, varying), key="runs_parallel")


def show_run(run) -> None:
    """One run: how it ended, its files, and its model on the test set."""
    st.header(f"Run `{run.run_id}`")
    outcome_box(run)
    if run.config and not run.damaged:
        st.caption(f"Settings: {texts.describe_config(run.config)} · data: {texts.data_label(run)}")
    show_actions(run)
    if run.damaged:
        return  # its files cannot be trusted, its model included
    if not run.has_model:
        st.info("This run saved no model (only completed and stopped runs do), so there is nothing to examine "
                "on the test set.")
        return
    show_analysis(run)


def show_actions(run) -> None:
    """Downloads, links and Delete for one run, side by side: only those that apply to it."""
    with st.container(horizontal=True, gap="small", vertical_alignment="center"):
        if run.has_model:  # a file of the folder, never a link out of it
            st.download_button("model.keras", data=run.model_bytes, file_name=f"{run.run_id}.keras",
                               mime="application/octet-stream", icon=":material/download:", on_click="ignore")
        if run.has_config:
            st.download_button("config.json", data=run.config_bytes,
                               file_name=f"{run.run_id}.config.json", mime="application/json",
                               icon=":material/download:", on_click="ignore")
        if not run.damaged:  # a damaged folder's settings cannot be trusted to rebuild anything
            st.download_button("Download as a script", data=run_script(run), file_name=script_file_name(run),
                               mime="text/x-python", icon=":material/code:", on_click="ignore",
                               help=texts.SCRIPT_HELP)
        active = run.state.active  # queued or training
        run_links(run, train=active, short=True)
        if run.config and not run.damaged:
            train_settings_link(run.config)
        copy_button({"run": run.run_id}, "Copy link to this run", key="runs_copy_link", width="content",
                    help_text="Copies a link that opens this page on this run.")
        if access.may_delete(identity, run) and st.button(  # a courtesy: delete_run checks it again
                "Delete…", icon=":material/delete:", key="runs_delete", disabled=active,
                help="Stop the run on the Train page first." if active else None):
            st.session_state[DELETING] = run.run_id
    if st.session_state.get(DELETING) == run.run_id:
        confirm_delete(run.run_id)


def show_analysis(run) -> None:
    """Confusion matrix, per-class accuracy and the most confident mistakes."""
    st.subheader("On its test set")
    try:
        with st.spinner("Loading the model and its test set (the first time also imports TensorFlow)…"):
            analysis = analyse(run.run_id, str(runs_dir), run.model_mtime)
    except ValueError as error:  # RunNotFound, DatasetError and ModelError included
        st.error(f"Cannot examine this run: {error}")
        return
    st.markdown(f"{analysis.test_size:,} test images from {analysis.data_description}: "
                f"**{analysis.test_size - analysis.mistake_count:,} right, {analysis.mistake_count:,} wrong** "
                f"(accuracy {analysis.accuracy:.4f}).")
    if not analysis.same_data_as_training:
        st.warning(f"This run was trained on {analysis.trained_on}, but that data is not the one its settings "
                   f"find today, so it is examined on {analysis.data_description}.")
    matrix_column, classes_column = st.columns(2)
    with matrix_column:
        st.markdown("**Confusion matrix** (rows: true class, columns: predicted)")
        st.plotly_chart(charts.confusion_figure(analysis.confusion, analysis.class_names), key="runs_confusion")
    with classes_column:
        st.markdown("**Accuracy per class** (the weakest in red)")
        st.plotly_chart(charts.per_class_figure(analysis.per_class_accuracy, analysis.class_names),
                        key="runs_per_class")
    names = analysis.class_names
    st.markdown(f"**Misclassified test images** — the {len(analysis.mistakes)} the model was most sure about "
                f"(of {analysis.mistake_count:,}); caption: true → predicted (confidence)")
    if analysis.mistakes:
        st.image([charts.enlarge(mistake.image) for mistake in analysis.mistakes],
                 caption=[f"{names[m.true_label]} → {names[m.predicted_label]} ({m.confidence:.1%})"
                          for m in analysis.mistakes], width=GALLERY_WIDTH)
    else:
        st.caption("None: every test image is classified right.")


# ------------------------------------------------------------------------------------------- the page

runs = listed_runs(runs_dir)
if not runs:
    st.info(f"No runs yet{f' in `{runs_dir}`' if identity.is_operator else ''}.")  # the server's path: operators'
    train_first_link()
    st.stop()
if identity.may_act and identity.key != access.OPERATOR_KEY:  # a guest or a signed-in user: one among others
    shown = st.segmented_control("Show", [EVERYONES, MINE], default=EVERYONES, key="runs_show")
    if shown == MINE:
        runs = [run for run in runs if access.owns(identity, run)]
        if not runs:
            st.info("You have no runs yet: the ones you start on the Train page show here.")
            train_first_link()
            st.stop()
damaged = texts.damaged_count(runs)
if damaged:
    st.warning(f"{damaged} run folder(s) cannot be read. They are marked 'damaged' in the table, with the reason "
               "in the Problem column; the other runs are unaffected.")

# Selection is by row position, so the table's key changes whenever the set of runs does (a new or deleted
# run), which starts a fresh selection instead of pointing at the wrong rows.
table = st.dataframe(
    texts.run_rows(runs),
    column_order=("started", "status", "test_accuracy", "owner", "engine", "devices", "node", "data", "architecture",
                  "activation", "optimizer", "learning_rate", "batch_size", "steps", "seconds", "problem", "run"),
    column_config={
        "started": st.column_config.DatetimeColumn("Started", format="YYYY-MM-DD HH:mm:ss"),
        "status": "Status",
        "test_accuracy": st.column_config.NumberColumn("Test accuracy", format="%.4f"),
        "owner": st.column_config.TextColumn("Owner", help="Who started the run (\"operator\": the command line, "
                                                          "the person at the server, or runs from before owners)"),
        "engine": "Engine",
        "devices": st.column_config.TextColumn(
            "Devices",
            help="Where it trained: one device, mirrored over N replicas, or several workers (tf.distribute)"),
        "node": st.column_config.TextColumn(
            "Node", help="The machine that trained it: its host name, and its Ray node on a Ray cluster"),
        "data": st.column_config.TextColumn("Dataset and source", width="medium"),
        "architecture": "Architecture",
        "activation": "Activation",
        "optimizer": "Optimizer",
        "learning_rate": st.column_config.NumberColumn("Learning rate", format="%g"),
        "batch_size": st.column_config.NumberColumn("Batch", format="%d"),
        "steps": st.column_config.NumberColumn("Steps", format="%d"),
        "seconds": st.column_config.NumberColumn("Time (s)", format="%.1f", help="Training time"),
        "problem": st.column_config.TextColumn("Problem", width="medium"),
        "run": "Run id",
    },
    hide_index=True,
    placeholder="—",
    on_select="rerun",
    selection_mode="multi-row",
    selection_default={"selection": {"rows": texts.default_selection(runs, st.query_params.get("run"))}},
    key=f"runs_table_{texts.runs_signature(runs)}",
)
selected = [runs[index] for index in table.selection.rows if index < len(runs)]
if not selected:
    st.info("Tick one or more rows in the table to compare runs and to examine one on its test set.")
    st.stop()
show_comparison(selected)
examined = selected[0]
if len(selected) > 1:
    examined_id = st.selectbox("Examine one of them", [run.run_id for run in selected], key="runs_examine")
    examined = next(run for run in selected if run.run_id == examined_id)
show_run(examined)
