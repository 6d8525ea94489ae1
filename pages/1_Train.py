"""Train page: set the hyperparameters, train in the background, and watch the run live from its folder."""


import streamlit as st

from core import access, queue, service, sweeps
from core.config import TrainConfig, config_from_preset
from core.data import DATASET_TITLES, describe_default_source
from core.records import RunNotFound
from core.store import default_runs_dir, load_run, load_runs, watch_run
from core.uploads import list_uploads
from ui import live_run, texts
from ui.form import put_form, settings_form, sweep_form
from ui.identity import access_line, current_identity
from ui.links import copy_link_button, keep_in_address, open_link, show_link_notice, sweep_from_link
from ui.run_groups import show_engine_comparison, show_sweep
from ui.run_index import listed_runs
from ui.submit import submit_engine_comparison, submit_run, submit_sweep
from ui.uploads import upload_box, upload_labels
from ui.widgets import files_offered_here, outcome_box, run_links

REFRESH_SECONDS = 0.5  # the sweep and the engine comparison
PROGRESS_SECONDS = 0.5  # the followed run's progress bar is redrawn this often
WATCH_SECONDS = 0.4  # and between two, the page watches the run's status file for its end (core.store.watch_run),
WATCH_END_SECONDS = 1.0  # or longer, up to this, when the run says it ends before (its steps left at its speed)
FOLLOWED = "train_followed_run"  # this browser session's run; ?run= in the URL keeps it across reloads
STOP_REFUSED = "train_stop_refused"  # why the last Stop was refused, shown once under the bar

st.set_page_config(page_title="Train · Hybrid Lab", layout="wide")
st.title("Train")
identity = access_line()
st.markdown("Set the hyperparameters in the sidebar and press **Train**. Training runs in the background: you "
            "can leave this page, reload it or open another tab, and the run keeps going.")
runs_dir = default_runs_dir()
my_uploads = list_uploads(runs_dir, identity)  # read once a rerun: for the Upload select and the Your own data box
uploads_offered = upload_labels(my_uploads, identity)


def follow(run_id: str | None) -> None:
    """Make `run_id` this session's run (None: none), in session state and in the URL."""
    if run_id:
        st.session_state[FOLLOWED] = run_id
        st.query_params["run"] = run_id
    else:
        st.session_state.pop(FOLLOWED, None)
        st.query_params.pop("run", None)


def auto_source_caption(values: dict) -> str | None:
    """Under the Source select: what "auto" means on this machine today."""
    if values.get("source") == "auto" and values.get("dataset") in DATASET_TITLES:
        return f"auto, here: {describe_default_source(values['dataset'])}."
    return None


def withheld_choices() -> dict[str, tuple]:
    """Choices the form does not offer here (a link naming one is told so)."""
    # A multi-worker run starts from the command line on every machine of its cluster, never from here.
    withheld = {"distribute": ("multi-worker",)}
    # The server's files for those it reads them for; uploads for those who may keep some (not a reader).
    withheld["source"] = tuple(choice for choice, offered in (("path", files_offered_here()),
                                                              ("uploaded", access.may_train(identity))) if not offered)
    return withheld


def show_settings():
    """The settings in the sidebar, one widget per setting; returns the config they describe (None if wrong), the
    messages, and the place of the Copy link button (filled once the sweep form below is read too)."""
    st.header("Settings")
    st.button("Reset to the article's settings", icon=":material/restart_alt:", width="stretch",
              on_click=lambda: put_form(TrainConfig()))
    st.button("The CNN preset", icon=":material/grid_on:", width="stretch",
              on_click=lambda: put_form(config_from_preset("cnn")),
              help="Conv2D and pooling layers called on the raw tensors, Adam, shifts and rotations on the fly: "
                   "about 0.98 on the real MNIST test set from the offline sample.")
    copy_slot = st.empty()
    config, errors = settings_form(captions={"source": auto_source_caption, "distribute": texts.distribute_caption},
                                   withheld=withheld_choices(), offered={"upload": uploads_offered})
    return config, errors, copy_slot


def show_run(run_id: str, live: bool, identity: access.Identity) -> None:
    """The followed run: progress and Stop (for its owner and operators) while it trains, its outcome when it is
    done. Its curves are show_live_curves' (a fragment of their own, redrawn less often)."""
    try:
        run = load_run(run_id, runs_dir)
    except RunNotFound:
        st.warning(f"Run {run_id} no longer exists (deleted on the Runs page?).")
        return
    if run.state.active and not live:
        # The page's own read, a moment ago, caught the run leaving the queue for a worker and took it for
        # finished, so this view would never refresh; the rerun reads it again (issue 17).
        st.rerun()
    st.subheader(f"Run `{run.run_id}`")
    if run.config and not run.damaged:
        st.caption(texts.describe_config(run.config) + f" · {texts.data_label(run)}")
    progress = st.empty()  # the bar; empty once the run has ended, so the outcome stays where it first appeared
    # The outcome and its links, in one slot that a new run's view fills with nothing: the browser keeps what an
    # earlier script run drew until this one ends, and this one watches the run (below), so the previous run's
    # accuracy stood under the new run's bar for as long as the watch lasted.
    ending = st.empty()
    if run.state.active:
        with progress.container():
            show_progress(run, identity)
        # A run active here is followed live (else the rerun above). Until the next refresh, watch its status file
        # rather than sleep: its end is on screen a few hundredths of a second after it is on disk (issue 17).
        run = watch_run(run, WATCH_SECONDS, between=let_clicks_in, longest=WATCH_END_SECONDS)
        if run.state.active:
            return
        # Ended while watched: this fragment puts the outcome where the bar was, and the page is idle with the
        # answer on screen without redrawing the rest of it (a whole-page rerun, with the settings form and two
        # Plotly charts, cost the browser about a quarter of a second more: issue 17).
        progress.empty()
    with ending.container():
        outcome_box(run)
        live_run.outcome_shown(run.run_id)
        with st.container(horizontal=True, gap="medium"):
            run_links(run, runs=True)
    if live and live_run.outcome_on_screen(run.run_id):
        # The first refresh once the outcome has been on screen for a moment: one rerun of the whole page draws
        # the last curves and stops the refreshing. A page whose fragments kept refreshing lost the next press of
        # Train (issue 17). Sooner, the rerun would hold the answer back: the browser shows a page only once its
        # script run has ended, and the fragment's timer may already have asked for the next refresh.
        st.rerun()


def show_progress(run, identity: access.Identity) -> None:
    """A training or queued run's progress bar, and Stop for who may."""
    bar, stop = st.columns([5, 1], vertical_alignment="bottom")
    if not access.may_stop(identity, run):  # a courtesy: service.stop checks it again
        st.caption(texts.only_owner_can_stop(run))
    else:
        stop.button("Stop", icon=":material/stop:", key="train_stop", width="stretch", disabled=run.stop_requested(),
                    on_click=stop_followed, args=(run.run_id,),
                    help="A queued run leaves the queue; a running one stops after the current chunk of steps "
                         "and keeps everything it logged.")
    if refusal := st.session_state.pop(STOP_REFUSED, None):
        st.error(refusal)
    view = texts.progress_view(run, queue.position(run.run_id, runs_dir))
    bar.progress(view.fraction, text=view.text)
    if view.before_steps:
        # Here, not in the curves' fragment: it goes with the bar when the run ends. A short run can end before
        # the curves' fragment (refreshed once a second) has drawn anything, and the sentence stayed under the
        # outcome until the next whole-page rerun.
        st.caption("The loss curve appears below with the first training steps.")


def let_clicks_in() -> None:
    """Called while the page watches a run: a look at session state is where Streamlit ends a script run that a
    click has asked to replace, so Train or a link to another page ends the watch at once. A Stop (a rerun of
    this fragment, which Streamlit lets a run in progress finish) waits for it: at most WATCH_END_SECONDS."""
    _ = STOP_REFUSED in st.session_state


def stop_followed(run_id: str) -> None:
    """Stop's callback. Streamlit calls it as the click's rerun starts, before any of the page runs, so the stop
    waits for nothing the page draws above the button, and the page that follows shows the run stopping."""
    try:
        service.stop(load_run(run_id, runs_dir), current_identity())
    except access.PermissionRefused as refusal:
        st.session_state[STOP_REFUSED] = texts.plain(f"Cannot stop this run: {refusal}.")
    except RunNotFound:
        pass  # show_run says it no longer exists


def show_live_curves(run_id: str, live: bool) -> None:
    """The followed run's curves and first-layer weights (ui/live_run.py), in a fragment of their own."""
    try:
        run = load_run(run_id, runs_dir)
    except RunNotFound:
        return
    live_run.show_curves(run, live)


# ------------------------------------------------------------------------------------------- the page

followed = st.query_params.get("run") or st.session_state.get(FOLLOWED)
followed_run = None
if followed:
    try:
        followed_run = load_run(followed, runs_dir)
    except RunNotFound as error:
        st.warning(f"The run in the address cannot be shown: {error}.")
        follow(None)
    else:
        follow(followed)  # after a visit to another page the URL lost ?run=; put it back
if "form_layer_count" not in st.session_state:
    # A fresh session (a reload or a shared link) shows the settings of the run it follows.
    put_form(followed_run.config if followed_run and not followed_run.damaged else TrainConfig())
# Settings in the address win over the followed run's: they are the whole form (what differs from the defaults),
# as the page wrote it or a link gives it, so ?run=X&learning_rate=0.1 is the defaults with 0.1, not run X's
# settings with 0.1. Only an address with no settings (?run=X alone) shows the followed run's, as above.
open_link(withheld_choices())
running = followed_run is not None and followed_run.state.active

with st.sidebar:
    config, errors, copy_slot = show_settings()
show_link_notice()
if errors:
    st.error("These settings cannot train: " + " ".join(errors.values()))
button_column, compare_column, summary_column = st.columns([1, 1, 3], vertical_alignment="center")
# Keyed: a widget's identity is then its key alone. Unkeyed, Train's help (which says more while a run trains)
# made it another button when the page began following a run; the browser showed the old one beside the new one
# until the script run ended, and the run's view jumped up under the pointer (a Stop clicked then was lost).
clicked = button_column.button("Train", type="primary", icon=":material/play_arrow:", width="stretch",
                               disabled=config is None, key="train",
                               help="Queues another run while this one trains; this tab then follows the new one."
                               if running else None)
compare_clicked = compare_column.button("Compare engines", icon=":material/compare_arrows:", width="stretch",
                                        disabled=config is None, key="compare",
                                        help="Train these settings with both engines at once, the article's TF1 "
                                             "Session and today's tf.function, and overlay their curves.")
if config is not None:
    data = (texts.plain(uploads_offered.get(config.upload, "an upload that is not yours")) if config.upload
            else f"{DATASET_TITLES[config.dataset]}, {texts.choice_label('source', config.source)}")
    summary_column.markdown(f"**{texts.describe_config(config)}** · {data}")
if clicked or compare_clicked:
    submitted = (submit_run if clicked else submit_engine_comparison)(config, runs_dir)
    if submitted.refusal:
        st.error(submitted.refusal)
    else:
        if clicked:
            follow(submitted.runs[0].run_id)
        else:
            st.query_params["compare"] = ",".join(run.run_id for run in submitted.runs)
        st.rerun()

with st.expander("Sweep: a grid of runs over one or two settings", icon=":material/grid_view:",
                 expanded=sweep_from_link()):
    st.caption("Every combination of the values goes into the queue as one named sweep, with the other settings "
               f"as in the sidebar; at most {sweeps.MAX_SWEEP_RUNS} runs.")
    axes, sweep_errors = sweep_form()
    planned = 0
    if config is not None and axes and not sweep_errors:
        try:
            planned = len(sweeps.grid(config, axes))
        except ValueError as error:  # too many runs, the same setting twice, a combination out of range
            st.error(f"{error}.")
    if st.button(f"Queue sweep ({planned} runs)" if planned else "Queue sweep", icon=":material/grid_view:",
                 disabled=not planned, key="sweep_queue"):
        submitted = submit_sweep(config, axes, runs_dir)
        if submitted.refusal:
            st.error(submitted.refusal)
        else:
            st.query_params["sweep"] = submitted.sweep
            st.rerun()
with st.expander("Your own data: upload a dataset", icon=":material/upload_file:",
                 expanded=st.session_state.get("form_source") == "uploaded"):
    upload_box(runs_dir, identity, my_uploads)
# The address follows the form, so a reload, a bookmark or a copied link opens these settings.
with copy_slot:
    copy_link_button(keep_in_address())

st.divider()
swept = st.query_params.get("sweep")
if swept:
    sweeping = any(run.state.active for run in sweeps.sweep_runs(swept, runs=listed_runs(runs_dir)))
    st.fragment(run_every=REFRESH_SECONDS if sweeping else None)(show_sweep)(swept, runs_dir, sweeping)
    st.divider()
compared = [run_id for run_id in st.query_params.get("compare", "").split(",") if run_id]
if compared:
    comparing = any(run.state.active for run in load_runs(compared, runs_dir))
    st.fragment(run_every=REFRESH_SECONDS if comparing else None)(show_engine_comparison)(compared, runs_dir,
                                                                                     comparing)
    st.divider()
if followed_run is not None:
    run_box, curves_box = st.container(), st.container()
    with curves_box:  # drawn first: the run's fragment ends this script run watching the run
        st.fragment(run_every=live_run.CURVES_EVERY_SECONDS if running else None)(show_live_curves)(
            followed_run.run_id, running)
    with run_box:
        st.fragment(run_every=PROGRESS_SECONDS if running else None)(show_run)(followed_run.run_id, running,
                                                                            identity)
elif not compared:
    st.info("No run in this tab yet. The article's settings (784-128-128-10, SGD at learning rate 0.5, batch 50, "
            "1,000 steps) train in a few seconds: press **Train**.")
