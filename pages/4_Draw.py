"""Draw a digit and watch a trained run classify it, stroke by stroke."""

import streamlit as st
from streamlit_drawable_canvas import st_canvas

from core.config import TrainConfig
from core.store import default_runs_dir
from ui.charts import probability_figure, saliency_figure
from ui import texts
from ui.identity import access_line
from ui.run_index import listed_runs
from ui.submit import submit_run
from ui.teaching import keep_controls, selected_next, teach_section
from ui.widgets import follow_to_the_end
from ui.drawing import (
    CANVAS_LABEL_STYLE,
    DrawingModel,
    Prediction,
    canvas_label_html,
    choose_run,
    classify_drawing,
    explain_prediction,
    preview_image,
    run_label,
    top_units_markdown,
    training_failure,
    training_run,
)

CANVAS_SIZE = 280  # px; ten canvas pixels to one MNIST pixel
DEFAULT_STROKE_WIDTH = 18  # px; about an MNIST pen stroke once the digit is scaled down

st.set_page_config(page_title="Draw · Hybrid Lab", page_icon="✏️", layout="wide")


@st.cache_resource(max_entries=4, show_spinner=False)
def get_model(run_id: str, model_path: str, version: float) -> DrawingModel:
    """Load a run's model once; another run id or a rewritten model file (version) loads it again."""
    return DrawingModel(model_path)


def train_article_model() -> None:
    submitted = submit_run(TrainConfig(), default_runs_dir())
    # Kept until the next press: a run queued when no worker could start is followed, and the page reruns
    # when it ends; the reason must still be on screen then.
    st.session_state["draw_start_error"] = submitted.refusal
    if not submitted.refusal:
        st.session_state["draw_started_run"] = submitted.runs[0].run_id


def clear_canvas() -> None:
    # A canvas with a new key starts empty.
    st.session_state["draw_canvas_generation"] = st.session_state.get("draw_canvas_generation", 0) + 1


def offer_training() -> None:
    """With no model to draw with: train the article's network, or wait for the run already training."""
    failure = (st.session_state.get("draw_start_error")
               or training_failure(st.session_state.get("draw_started_run"), default_runs_dir()))
    if failure:
        st.error(failure)
    running = training_run(runs=listed_runs(default_runs_dir()))
    if running is None:
        st.info("There is no trained model to draw with yet. Train the article's 784-128-128-10 network "
                "(1,000 steps, about 10 seconds), or train your own on the Train page.")
    else:
        st.info(f"Training {running.config.describe_layers()} ({running.run_id}); you can draw once it is done.")
    # Shown in both states, disabled while training: a button that vanished would linger, faded, for
    # as long as the script run that follows the training lasts.
    st.button("Train the article's model", type="primary", on_click=train_article_model,
              disabled=running is not None, key="draw_train")
    if running is not None:
        follow_to_the_end(running.run_id, default_runs_dir())
        st.rerun()


def show_prediction(prediction: Prediction | None) -> None:
    """The predicted digit, its confidence, the image the model saw and all ten probabilities."""
    if prediction is None:
        st.info("Draw a digit on the canvas to see what the model thinks it is.")
        return None
    text_column, preview_column = st.columns([3, 2])
    with text_column:
        st.header(f"Prediction: {prediction.predicted}", anchor=False)
        st.metric("Confidence", f"{prediction.confidence:.1%}")
        st.caption(f"Preprocessing and classification took {prediction.seconds * 1000:.1f} ms.")
    with preview_column:
        st.image(preview_image(prediction.digit), caption="What the model saw (28 × 28)")
    st.plotly_chart(probability_figure(prediction.probabilities))


def show_explanation(model: DrawingModel, prediction: Prediction) -> None:
    """Where the drawing mattered to the predicted digit (saliency), and each hidden layer's most active units.

    Called once the prediction is on its way to the browser: this part takes longer and must not hold it up.
    """
    st.subheader("Why this prediction", anchor=False)
    explanation = explain_prediction(model, prediction)
    saliency_column, units_column = st.columns([2, 3], gap="large")
    with saliency_column:
        st.plotly_chart(saliency_figure(prediction.digit, explanation.saliency))
        st.caption(f"Saliency: how much a change of each pixel would move the probability of "
                   f"{prediction.predicted} (the size of its gradient), brightest where it moves it most; "
                   "the digit's outline in blue.")
    with units_column:
        st.markdown("**Most active units** of each hidden layer, with their activation (units numbered from 0, "
                    "as in the first-layer weights on the Train page)")
        st.markdown(top_units_markdown(explanation.top_units))
        st.caption(f"Saliency and top units: {explanation.seconds * 1000:.0f} ms, after the prediction was shown.")


st.title("Draw")
access_line()
st.html(CANVAS_LABEL_STYLE)  # style only: Streamlit gives it no room on the page
st.write("Draw a digit in the black square: the model classifies it after every stroke, "
         "from the same 28 × 28 image it was trained on.")

fine_tuned = selected_next()  # a fine-tuning run that just ended: the picker selects it
if fine_tuned:
    # Through the widget's state, which the browser is told to show: a changed index alone would not move it.
    st.query_params["run"] = st.session_state["draw_run"] = fine_tuned
choice = choose_run(default_runs_dir(), st.query_params.get("run"), runs=listed_runs(default_runs_dir()))
# The notice keeps its slot even when empty (it goes once the address names a usable run): a canvas
# that moves down the page is mounted again, blank, while the page still holds the old drawing.
notice = st.empty()
if choice.notice:
    notice.warning(choice.notice)
if not choice.runs:
    offer_training()
    st.stop()

runs_by_id = {run.run_id: run for run in choice.runs}
run_ids = list(runs_by_id)
run_id = st.selectbox("Model", run_ids, index=run_ids.index(choice.default_run_id),
                      format_func=lambda run_id: run_label(runs_by_id[run_id]), key="draw_run")
st.query_params["run"] = run_id  # the address names the run shown, for reloads and shared links
run = runs_by_id[run_id]

# A fixed-width column keeps the canvas square; the results take the rest, or go below it (ui.drawing's
# CANVAS_LABEL_STYLE: in a narrow row, the line above the canvas then says the prediction).
with st.container(horizontal=True, gap="large", key="draw_row"):
    canvas_column = st.container(width=CANVAS_SIZE)
    result_column = st.container(key="draw_results")

with canvas_column:
    # Filled once the drawing is classified (below); until then the last run's line stays, so nothing moves.
    above_canvas = st.container(key="draw_above_canvas")
    canvas = st_canvas(
        # The slider below sets the pen; its value is in session_state before this line runs.
        stroke_width=st.session_state.get("draw_stroke_width", DEFAULT_STROKE_WIDTH),
        stroke_color="#FFFFFF",
        background_color="#000000",
        width=CANVAS_SIZE,
        height=CANVAS_SIZE,
        drawing_mode="freedraw",
        return_image_data=True,
        key=f"draw_canvas_{st.session_state.get('draw_canvas_generation', 0)}",
    )
    st.slider("Pen width (px)", 6, 40, DEFAULT_STROKE_WIDTH, key="draw_stroke_width")
    st.button("Clear", icon=":material/delete:", on_click=clear_canvas)

model, prediction = None, None
with result_column:
    try:
        with st.spinner("Loading the model…"):
            model = get_model(run.run_id, str(run.model_path), run.model_mtime)
    except (OSError, ValueError) as error:  # ModelError: a file that is not a model of ours
        st.error(f"Could not load the model of run {run.run_id}: {error}. Pick another run above.")
    else:
        prediction = classify_drawing(model, canvas.image_data)
with above_canvas:
    # Sent before the results: on a phone this line is the prediction in sight, and it must not wait for the
    # chart and the Keep controls under the canvas. The canvas's toolbar (undo, redo, reset) shows on hover here.
    st.html(canvas_label_html(prediction))
with result_column:
    if model is not None:
        show_prediction(prediction)
    if prediction is not None:
        keep_controls(prediction, default_runs_dir(), st.session_state.get("draw_canvas_generation", 0),
                      on_kept=clear_canvas)
# Under the canvas and the prediction, with the page's full width; the prediction is already shown.
if prediction is not None:
    show_explanation(model, prediction)
teach_section(default_runs_dir(), run)
