"""TensorBoard's HParams data and the first-layer weights image, read back with TensorBoard's own code.

Two tiny runs (one per engine, with different settings) are trained into one runs directory; their event
files are read by TensorBoard's event accumulator and by the HParams plugin of the TensorBoard app the lab
serves (core.tensorboard_child), through the same HTTP requests its dashboard makes.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from PIL import Image
from tensorboard.plugins.hparams import metadata as hparams_metadata
from werkzeug.test import Client

from core.config import TrainConfig
from core.tensorboard_child import tensorboard_wsgi_app
from core.tensorboard_summaries import (DIVERGING_COLOURS, GAP_COLOUR, hparam_values, hparams_summaries,
                                        weights_grid)
from core.training import MAX_FIRST_LAYER_PICTURES, draws_first_layer, train
from tests.factories import TINY, TINY_EVALUATION_STEPS
from tests.tensorboard_events import RunEvents

SESSION_RUN = TINY.replace(engine="session", learning_rate=0.1, hidden_units=[32, 16])
# What the HParams dashboard shows for TINY, written out by hand from tests/factories.py.
TINY_HPARAMS = {
    "architecture": "mlp", "hidden_units": "16", "activation": "relu", "dropout_rate": 0.0, "augment": "off",
    "optimizer": "sgd", "learning_rate": 0.5,
    "batch_size": 50, "steps": 35, "eval_every": 10, "seed": 42, "dataset": "mnist", "source": "offline",
    "data_path": "auto", "engine": "function", "xla": "auto",
}
SESSION_HPARAMS = {**TINY_HPARAMS, "hidden_units": "32-16", "learning_rate": 0.1, "engine": "session"}
SETTING_NAMES = {setting.name for setting in TrainConfig.SETTINGS}
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    return runs_dir, train(TINY, runs_dir), train(SESSION_RUN, runs_dir)


def plain(value):
    """A google.protobuf.Value as Python: its number, text or bool."""
    return getattr(value, value.WhichOneof("kind"))


def session_start_info(run):
    content = RunEvents(run.path).accumulator.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    return hparams_metadata.parse_session_start_info_plugin_data(content[hparams_metadata.SESSION_START_INFO_TAG])


# --- the summary as written, read with TensorBoard's event accumulator and the plugin's metadata ----------


@pytest.mark.parametrize("which, expected", [(1, TINY_HPARAMS), (2, SESSION_HPARAMS)], ids=["function", "session"])
def test_session_start_info_holds_every_setting_with_the_runs_value(runs, which, expected):
    run = runs[which]

    info = session_start_info(run)
    values = {name: plain(value) for name, value in info.hparams.items()}

    assert set(values) == SETTING_NAMES  # every setting, including any added after this test was written
    assert {name: values[name] for name in expected} == expected
    for name in SETTING_NAMES - set(expected):
        assert isinstance(values[name], (str, float)) and values[name] != "", (name, values[name])
    assert info.group_name == run.run_id  # each run its own row, even beside a run with the same settings
    assert 0 < time.time() - info.start_time_secs < 3600


def test_hparams_are_written_once_at_the_start(runs):
    for run in runs[1:]:
        events = RunEvents(run.path)
        assert events.steps(hparams_metadata.SESSION_START_INFO_TAG) == [0]
        # No experiment summary: TensorBoard works it out from the runs (see hparams_summaries).
        assert hparams_metadata.EXPERIMENT_TAG not in events.accumulator.PluginTagToContent(
            hparams_metadata.PLUGIN_NAME)


def test_hparam_values_are_numbers_or_text_as_the_dashboard_needs():
    config = TrainConfig(hidden_units=[128, 64], xla=False, learning_rate=0.05, source="offline")

    values = hparam_values(config)

    assert values["hidden_units"] == "128-64"
    assert values["xla"] == "off" and hparam_values(config.replace(xla=True))["xla"] == "on"
    assert values["learning_rate"] == 0.05 and values["steps"] == 1000
    assert values["data_path"] == "auto"
    summary = hparams_summaries(config, "some-run")[0]
    info = hparams_metadata.parse_session_start_info_plugin_data(summary.value[0].metadata.plugin_data.content)
    assert info.hparams["hidden_units"].string_value == "128-64"
    assert info.hparams["steps"].number_value == 1000


# --- what TensorBoard's HParams dashboard receives from the app's TensorBoard ---------------------------


@pytest.fixture(scope="module")
def hparams_plugin(runs):
    """A client of the lab's TensorBoard app over the runs directory, once it has loaded both runs."""
    client = Client(tensorboard_wsgi_app(runs[0]))
    deadline = time.monotonic() + 60
    while True:  # TensorBoard loads event files on a thread of its own
        groups = post(client, "session_groups", session_groups_request())
        if len(groups.get("sessionGroups", [])) == 2 or time.monotonic() > deadline:
            return client
        time.sleep(0.5)


def post(client, route: str, request: dict) -> dict:
    response = client.post(f"/data/plugin/hparams/{route}", data=json.dumps(request))
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return json.loads(response.get_data(as_text=True))


def session_groups_request() -> dict:
    return {"startIndex": 0, "sliceSize": 100, "allowedStatuses": ALL_STATUSES, "colParams": []}


def test_the_hparams_dashboard_lists_every_setting_and_what_differs(runs, hparams_plugin):
    experiment = post(hparams_plugin, "experiment", {"experimentName": ""})
    infos = {info["name"]: info for info in experiment["hparamInfos"]}

    assert set(infos) == SETTING_NAMES
    assert {name for name, info in infos.items() if info.get("differs")} == {"hidden_units", "learning_rate",
                                                                              "engine"}
    assert sorted(infos["hidden_units"]["domainDiscrete"]) == ["16", "32-16"]
    assert infos["learning_rate"]["type"] == "DATA_TYPE_FLOAT64"
    assert infos["learning_rate"]["domainInterval"] == {"minValue": 0.1, "maxValue": 0.5}
    metrics = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert {"test_accuracy", "test_loss"} <= metrics


def test_the_hparams_dashboard_compares_the_two_runs_by_their_final_test_figures(runs, hparams_plugin):
    _, function_run, session_run = runs

    groups = post(hparams_plugin, "session_groups", session_groups_request())["sessionGroups"]

    by_name = {group["name"]: group for group in groups}
    assert set(by_name) == {function_run.run_id, session_run.run_id}
    for run, expected in ((function_run, TINY_HPARAMS), (session_run, SESSION_HPARAMS)):
        group = by_name[run.run_id]
        assert {name: group["hparams"][name] for name in expected} == expected
        metrics = {value["name"]["tag"]: value for value in group["metricValues"]}
        assert metrics["test_accuracy"]["value"] == pytest.approx(run.summary.test_accuracy, abs=1e-6)
        assert metrics["test_loss"]["value"] == pytest.approx(run.summary.test_loss, rel=1e-6)
        assert metrics["test_accuracy"]["trainingStep"] == 35  # the run's last evaluation, not its first
    assert by_name[function_run.run_id]["hparams"] != by_name[session_run.run_id]["hparams"]


# --- the first layer's weights as a TensorBoard image ---------------------------------------------------


def decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.mark.parametrize("which, units, side", [(1, 16, 4 * 28 + 3), (2, 32, 6 * 28 + 5)], ids=["function", "session"])
def test_first_layer_image_at_every_evaluation_is_a_grid_of_the_units(runs, which, units, side):
    run = runs[which]
    events = RunEvents(run.path)

    assert events.steps("first_layer_weights") == TINY_EVALUATION_STEPS
    images = events.values("first_layer_weights")
    for width, height, png in (image[:3] for image in images):
        assert (int(width), int(height)) == (side, side)  # a square grid of 28 x 28 cells, 1 px apart
        assert png.startswith(b"\x89PNG")
    last = decoded(images[-1][2])
    weights = run.read_first_layer()
    assert weights.shape == (units, 28, 28)
    # The last evaluation drew the weights the run ended with, which first_layer.npy holds.
    np.testing.assert_array_equal(last, weights_grid(weights))
    assert (last[:, 28] == GAP_COLOUR).all() and (last[28, :] == GAP_COLOUR).all()
    assert not np.array_equal(decoded(images[0][2]), last)  # the weights moved between evaluations


def test_first_layer_image_of_the_strongest_weight_is_an_end_of_the_colour_map(runs):
    run = runs[1]
    weights = run.read_first_layer()
    last = decoded(RunEvents(run.path).values("first_layer_weights")[-1][2])

    unit, row, column = np.unravel_index(np.argmax(np.abs(weights)), weights.shape)
    pixel = last[(unit // 4) * 29 + row, (unit % 4) * 29 + column]

    end = DIVERGING_COLOURS[-1] if weights[unit, row, column] > 0 else DIVERGING_COLOURS[0]
    assert tuple(pixel) == tuple(end.astype(np.uint8))


def test_weights_grid_shares_one_scale_centred_on_zero():
    images = np.zeros((5, 28, 28), np.float32)
    images[0] = 2.0  # the largest weight: full red
    images[1] = -2.0  # full blue
    images[3] = 1.0  # half as strong: a lighter red on the same scale
    images[4, 0, 0] = -1.0

    grid = weights_grid(images)

    assert grid.shape == (2 * 28 + 1, 3 * 28 + 2, 3) and grid.dtype == np.uint8  # 3 columns, 2 rows, 1 px gaps
    cell = lambda unit: grid[(unit // 3) * 29:(unit // 3) * 29 + 28, (unit % 3) * 29:(unit % 3) * 29 + 28]
    assert (cell(0) == (103, 0, 31)).all()
    assert (cell(1) == (5, 48, 97)).all()
    assert (cell(2) == (247, 247, 247)).all()  # zero is white, the middle of the map
    red, green, blue = cell(3)[0, 0].astype(int)
    assert red > blue and green > 0  # positive, but lighter than the strongest
    assert cell(4)[0, 0][2] > cell(4)[0, 0][0] and (cell(4)[1:, :] == (247, 247, 247)).all()
    assert (grid[:, 28] == GAP_COLOUR).all() and (grid[28, :] == GAP_COLOUR).all()
    assert (grid[29:, 58:] == GAP_COLOUR).all()  # no sixth unit: the empty cell is background


def test_a_run_with_many_evaluations_draws_evenly_spaced_first_layers_and_the_last(tmp_path):
    config = TINY.replace(steps=60, eval_every=1)  # 60 evaluations, more than MAX_FIRST_LAYER_PICTURES

    events = RunEvents(train(config, tmp_path).path)

    assert events.steps("test_accuracy") == list(range(1, 61))  # every evaluation is still measured
    assert events.steps("first_layer_weights") == list(range(2, 61, 2))


def test_first_layer_pictures_are_capped_for_long_runs():
    config = TrainConfig(steps=200_000, eval_every=100)
    steps = list(range(100, 200_001, 100))

    drawn = [step for step in steps if draws_first_layer(step, config)]

    assert len(drawn) <= MAX_FIRST_LAYER_PICTURES + 1 and drawn[-1] == 200_000
    gaps = {later - earlier for earlier, later in zip(drawn, drawn[1:])}
    assert gaps == {4_000}  # evenly spaced over the whole run
    assert all(draws_first_layer(step, TINY) for step in TINY_EVALUATION_STEPS)
