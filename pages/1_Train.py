"""Train page: set the hyperparameters, train in the background, and watch the run live from its folder."""


import streamlit as st

from core import charts, report, train_form
from core.config import ACTIVATIONS, DATASETS, ENGINES, OPTIMIZERS, SOURCES, TrainConfig
from core.data import DATASET_TITLES, check_data_path, describe_default_source
from core.runs import RunNotFound, default_runs_dir, load_run
from core.training import start_engine_comparison, start_training

REFRESH_SECONDS = 0.5
FOLLOWED = "train_followed_run"  # this browser session's run; ?run= in the URL keeps it across reloads
KEEP = {"persist_state": "session"}  # widget values survive a visit to another page
OPTIMIZER_LABELS = {"sgd": "SGD (the article's)", "momentum": "SGD with momentum 0.9", "adam": "Adam",
                    "rmsprop": "RMSprop"}
SOURCE_LABELS = {"auto": "auto (full if available)", "keras": "keras (full download)",
                 "offline": "offline sample", "path": "my own files"}
ENGINE_LABELS = {"function": "function (TF2 tf.function)", "session": "session (TF1, the article's)"}
BOXES = {"success": st.success, "info": st.info, "warning": st.warning, "error": st.error}
# The two slots of a steady chart share one grid cell; the old figure hides once the new one has drawn.
STACK_STYLE = """<style>
.STACK { display: grid; grid-template-columns: 100%; }
.STACK > div { grid-area: 1 / 1; width: 100%; }
.STACK:has(.FRONT .js-plotly-plot:not([style*="hidden"]) .scatterlayer .trace) > div:has(.BACK) {
  visibility: hidden;
}
</style>"""

st.set_page_config(page_title="Train · Hybrid Lab", layout="wide")
st.title("Train")
st.markdown("Set the hyperparameters in the sidebar and press **Train**. Training runs in the background: you "
            "can leave this page, reload it or open another tab, and the run keeps going.")
runs_dir = default_runs_dir()


def put_form(values: train_form.FormValues) -> None:
    """Show these values in the form's widgets."""
    st.session_state["form_layer_count"] = values.layer_count
    for index, units in enumerate(values.layer_units):
        st.session_state[f"form_units_{index}"] = units
    for name, value in values.settings.items():
        st.session_state[f"form_{name}"] = value


def read_form() -> train_form.FormValues:
    """The values the form's widgets hold now."""
    state = st.session_state
    settings = {name: state[f"form_{name}"] for name in train_form.form_values(TrainConfig()).settings}
    units = [state[f"form_units_{index}"] for index in range(train_form.MAX_HIDDEN_LAYERS)]
    return train_form.FormValues(state["form_layer_count"], units, settings)


def follow(run_id: str | None) -> None:
    """Make `run_id` this session's run (None: none), in session state and in the URL."""
    if run_id:
        st.session_state[FOLLOWED] = run_id
        st.query_params["run"] = run_id
    else:
        st.session_state.pop(FOLLOWED, None)
        st.query_params.pop("run", None)


def settings_form() -> None:
    """One widget per TrainConfig field, in the sidebar; their values live in session state (form_*)."""
    st.header("Settings")
    st.button("Reset to the article's settings", icon=":material/restart_alt:", width="stretch",
              on_click=lambda: put_form(train_form.form_values(TrainConfig())))
    st.slider("Hidden layers", 1, train_form.MAX_HIDDEN_LAYERS, key="form_layer_count", **KEEP)
    unit_columns = st.columns(2)
    for index in range(st.session_state["form_layer_count"]):
        key = f"form_units_{index}"
        unit_columns[index % 2].select_slider(f"Units, layer {index + 1}",
                                              train_form.hidden_unit_choices(st.session_state[key]), key=key, **KEEP)
    activation_column, dropout_column = st.columns(2)
    activation_column.selectbox("Activation", ACTIVATIONS, key="form_activation", **KEEP)
    dropout_column.slider("Dropout", 0.0, 0.8, step=0.05, key="form_dropout_rate", **KEEP,
                          help="Share of hidden units dropped at each training step; 0 (none) in the article.")
    st.selectbox("Optimizer", OPTIMIZERS, format_func=OPTIMIZER_LABELS.get, key="form_optimizer", **KEEP)
    st.select_slider("Learning rate (log scale)", train_form.learning_rate_choices(st.session_state["form_learning_rate"]),
                     format_func=lambda rate: f"{rate:g}", key="form_learning_rate", **KEEP)
    st.select_slider("Batch size", train_form.batch_size_choices(st.session_state["form_batch_size"]),
                     key="form_batch_size", **KEEP)
    steps_column, eval_column = st.columns(2)
    steps_column.number_input("Steps", 1, 200_000, step=100, key="form_steps", **KEEP,
                              help="Training steps (batches), not epochs.")
    eval_column.number_input("Evaluate every", 1, 200_000, step=50, key="form_eval_every", **KEEP,
                             help="Steps between two measures of test accuracy (there is always one at the end).")
    st.number_input("Seed", 0, 2**31 - 1, key="form_seed", **KEEP,
                    help="Fixes the initial weights, the batch order and dropout: same seed, same run.")
    st.selectbox("Dataset", DATASETS, format_func=DATASET_TITLES.get, key="form_dataset", **KEEP)
    st.selectbox("Source", SOURCES, format_func=SOURCE_LABELS.get, key="form_source", **KEEP)
    if st.session_state["form_source"] == "path":
        st.text_input("Data path", key="form_data_path", placeholder="/data/mnist.npz or a folder of IDX files",
                      **KEEP)
    elif st.session_state["form_source"] == "auto":
        st.caption(f"auto, here: {describe_default_source(st.session_state['form_dataset'])}.")
    st.selectbox("Engine", ENGINES, format_func=ENGINE_LABELS.get, key="form_engine", **KEEP,
                 help="function: Keras 3 layers in a tf.function step with GradientTape. session: the article's "
                      "own form, a TF1 graph with placeholders run in a Session.")
    st.selectbox("XLA", list(train_form.XLA_CHOICES.values()), key="form_xla", **KEEP,
                 disabled=st.session_state["form_engine"] == "session",
                 help="function engine: compile each chunk of steps with XLA. Compiling takes about a second "
                      "and then runs steps about twice as fast, so auto uses it from 5,000 steps on. The "
                      "session engine runs its TF1 graph as built.")


def show_run(run_id: str, live: bool) -> None:
    """The followed run: progress and Stop while it trains, its outcome when it is done, and its curves."""
    try:
        run = load_run(run_id, runs_dir)
    except RunNotFound:
        st.warning(f"Run {run_id} no longer exists (deleted on the Runs page?).")
        return
    if live and run.state != "running":
        st.rerun()  # it just finished: redraw the whole page (Train button, links), and stop refreshing
    st.subheader(f"Run `{run.run_id}`")
    if run.config:
        st.caption(report.describe_config(run.config) + f" · {report.data_label(run)}")
    if run.state == "running":
        bar, stop = st.columns([5, 1], vertical_alignment="bottom")
        if stop.button("Stop", icon=":material/stop:", key="train_stop", width="stretch",
                       disabled=run.stop_requested(),
                       help="Stops after the current chunk of steps; the run keeps everything it logged."):
            run.request_stop()
        view = report.progress_view(run)
        bar.progress(view.fraction, text=view.text)
    else:
        show_outcome(run)
    show_curves(run)


def show_outcome(run) -> None:
    """How the run ended, what it took, and where to go next."""
    result = report.outcome(run)
    BOXES[result.kind](result.headline)
    if result.details:
        st.caption(result.details)
    with st.container(horizontal=True, gap="large"):
        if report.has_tensorboard_logs(run):
            st.page_link("pages/3_TensorBoard.py", label="See this run in TensorBoard", icon=":material/monitoring:",
                         query_params={"run": run.run_id})
        if run.has_model:
            st.page_link("pages/2_Runs.py", label="Confusion matrix and mistakes", icon=":material/table_chart:",
                         query_params={"run": run.run_id})
        if run.has_model:
            st.page_link("pages/4_Draw.py", label="Draw a digit for this model", icon=":material/draw:",
                         query_params={"run": run.run_id})


def show_curves(run) -> None:
    """Loss and accuracy per step, read incrementally from the run's metrics.csv."""
    follower = st.session_state.get("train_metrics")
    if follower is None or follower[0] != run.run_id:
        follower = (run.run_id, report.MetricsFollower(run.path / "metrics.csv"))
        st.session_state["train_metrics"] = follower
    metrics, evaluations = follower[1].read(), run.read_evaluations()
    if not metrics["step"]:
        if run.state == "running":
            st.caption("The loss curve appears here with the first training steps.")
        return
    smoothing_column, scale_column = st.columns([4, 1], vertical_alignment="bottom")
    smoothing = smoothing_column.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="train_smoothing", **KEEP,
                                        help="TensorBoard's smoothing: an exponential moving average of the "
                                             "curve. The raw curve stays faint behind it.")
    log_scale = scale_column.toggle("Log-scale loss", key="train_log_loss", **KEEP)
    loss = charts.Curve(run.run_id, metrics["step"], metrics["loss"])
    batch = charts.Curve("batch accuracy", metrics["step"], metrics["batch_accuracy"])
    tested = charts.Curve("test accuracy", evaluations["step"], evaluations["test_accuracy"])
    loss_column, accuracy_column = st.columns(2)
    with loss_column:
        steady_chart(charts.loss_figure([loss], smoothing, keep_zoom=run.run_id, log_scale=log_scale), "train_loss")
    with accuracy_column:
        steady_chart(charts.accuracy_figure(batch, tested, smoothing, keep_zoom=run.run_id), "train_accuracy")


def show_engine_comparison(run_ids: list[str], live: bool) -> None:
    """Both engines' runs of one setting: their progress or outcome, and their loss curves overlaid."""
    runs = report.load_existing(run_ids, runs_dir)
    if not runs:
        st.warning("The runs of this engine comparison no longer exist (deleted on the Runs page?).")
        return
    if live and not any(run.state == "running" for run in runs):
        st.rerun()
    st.subheader("Engines compared")
    st.caption(report.describe_config(runs[0].config, with_engine=False)
               + " · the same initial weights and batches for both engines")
    for run, column in zip(runs, st.columns(len(runs))):
        with column:
            st.markdown(f"**{ENGINE_LABELS[run.config.engine]}** · `{run.run_id}`")
            if run.state == "running":
                view = report.progress_view(run)
                st.progress(view.fraction, text=view.text)
            else:
                result = report.outcome(run)
                BOXES[result.kind](result.headline)
                if result.details:
                    st.caption(result.details)
    curves = [charts.Curve(f"{run.config.engine} engine", *report.loss_series(run)) for run in runs]
    smoothing = st.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="compare_smoothing", **KEEP)
    steady_chart(charts.loss_figure(curves, smoothing, keep_zoom=",".join(run_ids)), "compare_loss")
    agreement = report.loss_agreement(runs)
    if agreement:
        st.caption(agreement)


def steady_chart(figure, key: str) -> None:
    """A Plotly chart that can be redrawn twice a second without blinking.

    Streamlit remounts a Plotly chart whenever its figure changes (the element's id hashes the figure), and a
    freshly mounted chart stays empty for a frame or two: redrawn twice a second, a live chart would blink.
    So two stacked slots take turns. The new figure mounts in one; the other keeps the previous figure, which
    is unchanged and therefore not remounted, and stays visible until the new one has drawn its traces.
    """
    turn = st.session_state.get(f"{key}_turn", 0) + 1
    previous = st.session_state.get(f"{key}_previous")
    front, back = f"{key}_slot{turn % 2}", f"{key}_slot{(turn + 1) % 2}"
    with st.container(key=f"{key}_stack"):
        for slot in (0, 1):
            with st.container(key=f"{key}_slot{slot}"):
                shown = figure if slot == turn % 2 else previous
                if shown is not None:
                    st.plotly_chart(shown, key=f"{key}_chart{slot}")
    st.html(STACK_STYLE.replace("STACK", f"st-key-{key}_stack").replace("FRONT", f"st-key-{front}")
            .replace("BACK", f"st-key-{back}"))
    st.session_state[f"{key}_turn"], st.session_state[f"{key}_previous"] = turn, figure


# ------------------------------------------------------------------------------------------- the page

followed = st.query_params.get("run") or st.session_state.get(FOLLOWED)
followed_run = None
if followed:
    try:
        followed_run = load_run(followed, runs_dir)
    except RunNotFound:
        st.warning(f"The run in the address, {followed}, does not exist (deleted on the Runs page?).")
        follow(None)
    else:
        follow(followed)  # after a visit to another page the URL lost ?run=; put it back
if "form_activation" not in st.session_state:
    # A fresh session (a reload or a shared link) shows the settings of the run it follows.
    put_form(train_form.form_values(followed_run.config if followed_run and followed_run.config else TrainConfig()))
running = followed_run is not None and followed_run.state == "running"

with st.sidebar:
    settings_form()
try:
    config = train_form.config_from_form(read_form())
except ValueError as error:
    config = None
    st.error(f"These settings cannot train: {error}")
button_column, compare_column, summary_column = st.columns([1, 1, 3], vertical_alignment="center")
clicked = button_column.button("Train", type="primary", icon=":material/play_arrow:", width="stretch",
                               disabled=running or config is None,
                               help="Stop the current run first, or open another tab to train in parallel."
                               if running else None)
compare_clicked = compare_column.button("Compare engines", icon=":material/compare_arrows:", width="stretch",
                                        disabled=config is None,
                                        help="Train these settings with both engines at once, the article's TF1 "
                                             "Session and today's tf.function, and overlay their curves.")
if config is not None:
    summary_column.markdown(f"**{report.describe_config(config)}** · {DATASET_TITLES[config.dataset]}, "
                            f"{SOURCE_LABELS[config.source]}")
if clicked or compare_clicked:
    try:
        check_data_path(config.source, config.data_path)
        if clicked:
            follow(start_training(config, runs_dir).run_id)
        else:
            st.query_params["compare"] = ",".join(run.run_id for run in start_engine_comparison(config, runs_dir))
    except ValueError as error:  # DatasetError: the data files are not where the form says
        st.error(f"Cannot train: {error}")
    except OSError as error:  # the runs directory cannot be written, or the worker cannot start
        st.error(f"Cannot start training in {runs_dir}: {error.strerror or error}")
    else:
        st.rerun()

st.divider()
compared = [run_id for run_id in st.query_params.get("compare", "").split(",") if run_id]
if compared:
    comparing = any(report.is_running(run_id, runs_dir) for run_id in compared)
    st.fragment(run_every=REFRESH_SECONDS if comparing else None)(show_engine_comparison)(compared, comparing)
    st.divider()
if followed_run is not None:
    st.fragment(run_every=REFRESH_SECONDS if running else None)(show_run)(followed_run.run_id, running)
elif not compared:
    st.info("No run in this tab yet. The article's settings (784-128-128-10, SGD at learning rate 0.5, batch 50, "
            "1,000 steps) train in a few seconds: press **Train**.")
