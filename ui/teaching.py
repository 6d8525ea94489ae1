"""The Draw page's teaching loop: keep a drawing as the digit it is, review the kept drawings, fine-tune on them,
and read what the fine-tuned run learned (core/collection.py keeps them, core/fine_tune.py trains on them).

Who asks is `current_identity()`: a drawing belongs to whoever kept it, and core checks it again in every call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from core.collection import HOLD_OUT_WORDS, delete_drawing, freeze, gather, held_out_mask, keep_drawing, \
    keras_npz, list_drawings
from core.fine_tune import FINE_TUNE_SHARE, FINE_TUNE_STEPS, LEARNING_RATE_FACTOR, fine_tune_config
from core.records import RunState
from core.run_folder import Run
from ui import texts
from ui.charts import enlarge
from ui.drawing import Prediction
from ui.identity import current_identity
from ui.submit import submit_run
from ui.widgets import follow_to_the_end

GALLERY_SCALE = 2  # the kept 28 x 28 drawings at 56 px
TUNING_KEY = "draw_tuning_run"  # the fine-tuning run this session started, followed until it ends
MESSAGE_KEY = "draw_teach_message"  # (kind, sentence) of the last keep, delete or fine-tune press
SELECT_KEY = "draw_select_run"  # a run for the page's picker to select on its next run


def _say(kind: str, sentence: str) -> None:
    st.session_state[MESSAGE_KEY] = (kind, sentence if sentence.endswith(".") else sentence + ".")


def _keep(runs_dir: Path, digit, label_key: str, on_kept) -> None:
    label = st.session_state.get(label_key)
    try:
        kept = keep_drawing(runs_dir, digit, label, identity=current_identity())
    except ValueError as error:  # CollectionError, PermissionRefused: a sentence for the person
        _say("error", f"Cannot keep this drawing: {error}")
        return
    count = sum(1 for drawing in list_drawings(runs_dir, identity=current_identity()) if drawing.label == kept.label)
    _say("success", f"Kept as a {kept.label}: you have {count} drawing{'s' if count != 1 else ''} of {kept.label}; "
                    "draw the next one")
    on_kept()


def keep_controls(prediction: Prediction, runs_dir: Path, generation: int, on_kept) -> None:
    """Under the prediction: "Keep this drawing as a …" with the ten digits, the predicted one preselected."""
    if not current_identity().may_act:
        st.caption("Sign in to keep your drawings and teach the model your handwriting.")
        return
    # A new drawing or a new prediction preselects the digit read, whatever was picked for the last one.
    label_key = f"draw_keep_label_{generation}_{prediction.predicted}"
    with st.container(horizontal=True, vertical_alignment="bottom", gap="small", key="draw_keep"):
        st.segmented_control("Keep this drawing as a …", list(range(10)), default=prediction.predicted,
                             key=label_key, required=True, wrap=True)  # two rows on a phone, not a scroll
        st.button("Keep", icon=":material/bookmark_add:", on_click=_keep,
                  args=(runs_dir, prediction.digit, label_key, on_kept), key="draw_keep_button")


def _delete(runs_dir: Path, drawing_id: str) -> None:
    try:
        delete_drawing(runs_dir, drawing_id, identity=current_identity())
    except ValueError as error:
        _say("error", f"Cannot delete this drawing: {error}")


def show_message() -> None:
    """The last keep, delete or fine-tune press's outcome, once."""
    if MESSAGE_KEY in st.session_state:
        kind, sentence = st.session_state.pop(MESSAGE_KEY)
        (st.error if kind == "error" else st.success)(sentence)


# The held-out drawings get an orange frame (the page's accent), the delete buttons stay small; keys are the
# containers' (st.container(key=...) gives them the class st-key-<key>).
GALLERY_STYLE = """<style>
[class*="st-key-draw_held_"] img { outline: 3px solid #ff7f0e; outline-offset: 1px; }
[class*="st-key-draw_delete_"] button { min-height: 1.6rem; padding: 0 0.3rem; }
</style>"""


def gallery(runs_dir: Path, drawings: list) -> None:
    """The kept drawings (list_drawings'), a row per digit, each with its delete button; held-out ones framed."""
    if not drawings:
        st.caption("No drawings kept yet: draw a digit, pick what it is under the prediction and press Keep.")
        return
    st.html(GALLERY_STYLE)
    # Held out as fine-tuning holds them out: core's rule, applied to the drawings in the order they are listed.
    held = dict(zip((drawing.drawing_id for drawing in drawings),
                    held_out_mask(np.array([drawing.label for drawing in drawings]))))
    for digit in sorted({drawing.label for drawing in drawings}):
        mine = [drawing for drawing in drawings if drawing.label == digit]
        with st.container(horizontal=True, gap="small", key=f"draw_gallery_{digit}"):
            st.markdown(f"**{digit}**", width=20)
            for drawing in mine:
                held_out = bool(held[drawing.drawing_id])
                kind = "held" if held_out else "kept"
                with st.container(width=60, gap=None, horizontal_alignment="center",
                                  key=f"draw_{kind}_{drawing.drawing_id}"):
                    st.image(enlarge(drawing.image, GALLERY_SCALE))
                    st.button("", icon=":material/close:", key=f"draw_delete_{drawing.drawing_id}",
                              help="Delete this drawing" + (" (held out)" if held_out else ""), on_click=_delete,
                              args=(runs_dir, drawing.drawing_id), type="tertiary")


def _fine_tune(runs_dir: Path, source: Run) -> None:
    try:
        snapshot = freeze(runs_dir, identity=current_identity())
    except ValueError as error:
        _say("error", f"Cannot fine-tune yet: {error}")
        return
    submitted = submit_run(fine_tune_config(source, snapshot.snapshot_id), runs_dir)
    if submitted.refusal:
        _say("error", submitted.refusal)
    else:
        st.session_state[TUNING_KEY] = submitted.runs[0].run_id


def teach_section(runs_dir: Path, source: Run) -> None:
    """Below the drawing: the chosen run's figures if it is fine-tuned, Fine-tune on my drawings with its progress,
    Download my drawings, and the gallery."""
    st.subheader("Teach it your handwriting", anchor=False)
    fine_tuned_figures(source)
    if not current_identity().may_act:
        st.caption("Sign in to keep drawings: on this server every drawing belongs to whoever kept it.")
        return
    show_message()
    kept = list_drawings(runs_dir, identity=current_identity())  # read once a rerun: the button and the gallery
    st.caption(f"Keep drawings of the digits it misreads, as you write them, then fine-tune: {FINE_TUNE_STEPS} "
               f"steps from the model chosen above at {LEARNING_RATE_FACTOR:g} × its learning rate, "
               f"{FINE_TUNE_SHARE:.0%} of every batch from your drawings (shifted and rotated), the rest from its "
               f"training data. Held out: {HOLD_OUT_WORDS} (framed in orange).")
    with st.container(horizontal=True, gap="small"):
        st.button("Fine-tune on my drawings", type="primary", icon=":material/school:", disabled=not kept,
                  on_click=_fine_tune, args=(runs_dir, source), key="draw_fine_tune")
        st.download_button("Download my drawings (.npz)", data=lambda: keras_npz(gather(
            runs_dir, identity=current_identity())), file_name="my-drawings.npz", mime="application/octet-stream",
            icon=":material/download:", on_click="ignore", disabled=not kept, key="draw_download")
    tuning = st.session_state.get(TUNING_KEY)
    if tuning:
        follow_fine_tuning(runs_dir, tuning)
    gallery(runs_dir, kept)


def follow_fine_tuning(runs_dir: Path, run_id: str) -> None:
    """The fine-tuning run's progress, read from its folder, until it ends; then the page selects it."""
    run = follow_to_the_end(run_id, runs_dir, label="Fine-tuning: ")
    del st.session_state[TUNING_KEY]
    if run.state is RunState.COMPLETED:
        st.session_state[SELECT_KEY] = run_id
    else:
        _say("error", f"Fine-tuning ended {run.state}: {run.message or 'no details'}")
    st.rerun()


def selected_next() -> str | None:
    """The run the picker should select now (a fine-tuning run that just ended), once."""
    return st.session_state.pop(SELECT_KEY, None)


def fine_tuned_figures(run: Run) -> None:
    """For a fine-tuned run: its accuracy on the original test set and on the held-out drawings, before and after."""
    summary = run.summary
    if summary is None or summary.collection_accuracy is None:
        return
    with st.container(horizontal=True, gap="large", key="draw_fine_tuned"):
        st.metric("Original test set", f"{summary.test_accuracy:.1%}", width="content",
                  delta=_points(summary.test_accuracy, summary.initial_test_accuracy),
                  help=f"The {summary.data_sizes['test']:,} test digits of its training data, before fine-tuning "
                       f"{summary.initial_test_accuracy:.1%}.")
        st.metric("Your held-out drawings", f"{summary.collection_accuracy:.0%}", width="content",
                  delta=_points(summary.collection_accuracy, summary.initial_collection_accuracy),
                  help=f"{summary.collection_held_out} drawings it never trained on, before fine-tuning "
                       f"{summary.initial_collection_accuracy:.0%}.")
    st.caption(f"The model chosen above was fine-tuned from run {run.config.init_from} on your drawings "
               f"(snapshot {run.config.collection}), {summary.collection_held_out} of them held out.")


def _points(after: float | None, before: float | None) -> str | None:
    if after is None or before is None:
        return None
    return f"{(after - before) * 100:+.1f} points"
