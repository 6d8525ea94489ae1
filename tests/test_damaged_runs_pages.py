"""Every page beside a damaged run folder, a model file that is not ours, and an address nobody should send.

One run is trained for real once per module. Each damaged variant is a copy of it (shutil.copytree) with one
file edited as a hand or a crash could leave it; the pages must open without an exception, never show a
traceback, keep listing the good run, and say which run is damaged and why. The damaged copies come and go
in one runs directory, which the TensorBoard page embeds (the app serves TensorBoard under /tensorboard/).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from core.records import EVALUATIONS_FILE, METRICS_FILE, MODEL_FILE, STATUS_FILE, SUMMARY_FILE, RunState
from core.store import RUNS_DIR_ENV, list_runs
from core.training import train
from tests.apptest_support import open_app as open_page
from tests.factories import TINY, rewrite_json
from ui.texts import runs_signature

DAMAGED_LABEL = "damaged (unreadable)"
LONG_ID = "x" * 300


# --- the damage ----------------------------------------------------------------------------------------


def summary_field(name, value):
    return lambda folder: rewrite_json(folder / SUMMARY_FILE, lambda summary: {**summary, name: value})


def status_field(name, value):
    return lambda folder: rewrite_json(folder / STATUS_FILE, lambda status: {**status, name: value})


def status_file(values: dict):
    return lambda folder: (folder / STATUS_FILE).write_text(json.dumps(values))


def random_bytes(name: str):
    # Seeded: the same bytes on every run, so a failure can be reproduced.
    return lambda folder: (folder / name).write_bytes(random.Random(name).randbytes(2048))


def folder_instead_of(name: str):
    def damage(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).mkdir()
    return damage


# (id, what is done to the copy, what the Runs page must say about it)
VARIANTS = [
    ("accuracy-text", summary_field("test_accuracy", "high"),
     "summary.json: test_accuracy is 'high'; expected a number from 0 to 1"),
    ("accuracy-nan", summary_field("test_accuracy", float("nan")),
     "summary.json: test_accuracy is nan; expected a number from 0 to 1"),
    ("accuracy-5", summary_field("test_accuracy", 5), "summary.json: test_accuracy is 5; expected a number from 0 to 1"),
    ("data-sizes-text", summary_field("data_sizes", "z"), "summary.json: data_sizes is 'z'; expected the train and"),
    ("summary-steps-text", summary_field("steps", "x"), "summary.json: steps is 'x'; expected a whole number"),
    ("message-null", status_file({"status": "failed", "message": None}), "status.json: message is None; expected text"),
    ("status-number", status_field("status", 5),
     "status.json: status is 5; expected one of queued, running, completed"),
    ("step-text", status_field("step", "x"), "status.json: step is 'x'; expected a whole number"),
    ("status-empty", status_file({}), "status.json has no status"),
    ("status-unknown", status_field("status", "exploded"), "status.json: status is 'exploded'; expected one of"),
    ("metrics-garbage", random_bytes(METRICS_FILE),
     "metrics.csv does not start with the header step,loss,batch_accuracy"),
    ("evaluations-garbage", random_bytes(EVALUATIONS_FILE),
     "evaluations.csv does not start with the header step,test_loss,test_accuracy"),
    ("metrics-folder", folder_instead_of(METRICS_FILE), "metrics.csv is not a file"),
]


# --- fixtures and helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """One tiny run trained for real (it has a model, metrics, evaluations and event files)."""
    runs_dir = tmp_path_factory.mktemp("shared") / "runs"
    run = train(TINY, runs_dir)
    assert run.state is RunState.COMPLETED and run.has_model
    return SimpleNamespace(runs_dir=runs_dir, run=run)


@pytest.fixture(params=VARIANTS, ids=[variant[0] for variant in VARIANTS])
def damaged(request, good, monkeypatch):
    """A damaged copy of the good run beside it, for one test; the runs directory is the page's."""
    name, damage, reason = request.param
    folder = good.runs_dir / f"{good.run.run_id[:15]}-damaged-{name}"
    shutil.copytree(good.run.path, folder)
    damage(folder)
    monkeypatch.setenv(RUNS_DIR_ENV, str(good.runs_dir))
    yield SimpleNamespace(run_id=folder.name, reason=reason)
    shutil.rmtree(folder)


def everything_on(app: AppTest) -> str:
    """Every element the page sent, main area and sidebar, as protobuf text: all a person could see."""
    parts = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(app.main)
    walk(app.sidebar)
    return "\n".join(parts)


def assert_opens_cleanly(app: AppTest) -> None:
    assert not app.exception, [element.value for element in app.exception]
    assert "Traceback" not in everything_on(app)


def values(elements) -> list[str]:
    return [element.value for element in elements]


# --- every page beside a damaged run ---------------------------------------------------------------


def test_home_lists_the_good_run_and_marks_the_damaged_one(good, damaged):
    app = open_page("Home.py")

    assert_opens_cleanly(app)
    table = next(text for text in values(app.markdown) if text.startswith("| Started"))
    rows = table.splitlines()[2:]
    assert len(rows) == 2
    assert sum(f"| completed | {good.run.test_accuracy:.4f} |" in row for row in rows) == 1
    assert sum(f"| {DAMAGED_LABEL} |" in row for row in rows) == 1
    assert app.metric[0].value == f"{good.run.test_accuracy:.4f}"
    assert f"run `{good.run.run_id}`" in everything_on(app)


def test_runs_table_marks_the_damaged_run_with_its_reason_and_examines_the_good_one(good, damaged):
    app = open_page("pages/2_Runs.py")

    assert_opens_cleanly(app)
    table = app.dataframe[0].value.set_index("run")
    assert sorted(table.index) == sorted([good.run.run_id, damaged.run_id])
    assert table.loc[good.run.run_id, "status"] == "completed" and table.loc[good.run.run_id, "problem"] == ""
    assert table.loc[damaged.run_id, "status"] == DAMAGED_LABEL
    assert damaged.reason in table.loc[damaged.run_id, "problem"]
    assert "1 run folder(s) cannot be read" in app.warning[0].value
    # The good run is selected on arrival and examined on its test set, the damaged one notwithstanding.
    assert f"Run `{good.run.run_id}`" in values(app.header)
    assert "1,000 test images" in everything_on(app)
    assert not app.error


def test_runs_page_on_the_damaged_run_says_why_it_cannot_be_read(good, damaged):
    app = open_page("pages/2_Runs.py", run=damaged.run_id)

    assert_opens_cleanly(app)
    assert f"Run `{damaged.run_id}`" in values(app.header)
    assert any(text.startswith("This run folder cannot be read:") and damaged.reason in text
               for text in values(app.warning))
    # Its model.keras is still there, but a damaged run is not examined, nor offered for drawing, nor as a script.
    assert not app.error
    assert "On its test set" not in values(app.subheader)
    assert not [link for link in app.get("page_link") if "Draw" in link.proto.label]
    assert "Download as a script" not in [button.proto.label for button in app.get("download_button")]


def test_train_page_on_the_damaged_run_says_why_and_still_trains(good, damaged):
    app = open_page("pages/1_Train.py", run=damaged.run_id)

    assert_opens_cleanly(app)
    assert any(text.startswith("This run folder cannot be read:") and damaged.reason in text
               for text in values(app.warning))
    assert not next(button for button in app.button if button.label == "Train").disabled


def test_tensorboard_page_offers_both_runs(good, damaged):
    app = open_page("pages/3_TensorBoard.py")

    assert_opens_cleanly(app)
    assert not app.error
    assert set(app.selectbox(key="run").options) == {"All runs", good.run.run_id, damaged.run_id}


def test_draw_page_offers_the_good_run_and_says_why_the_damaged_one_cannot_draw(good, damaged):
    app = open_page("pages/4_Draw.py", run=damaged.run_id)

    assert_opens_cleanly(app)
    select = app.selectbox(key="draw_run")
    assert select.options == [f"{good.run.run_id} · 784-16-10 · {good.run.test_accuracy:.1%} test accuracy"]
    assert select.value == good.run.run_id
    (warning,) = values(app.warning)
    assert f"run {damaged.run_id} could not be read ({damaged.reason}" in warning
    assert "the most accurate run is selected instead" in warning
    assert not app.error


# --- a model file that is not ours ---------------------------------------------------------------------


def with_a_foreign_class(model_path: Path) -> None:
    """Rewrite config.json inside the .keras zip so that a layer names os.system as its class."""
    with zipfile.ZipFile(model_path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    layer = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    layer.update(module="os", class_name="system", registered_name="system")
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(model_path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def with_random_bytes(model_path: Path) -> None:
    model_path.write_bytes(random.Random("model").randbytes(4096))


BAD_MODELS = [
    ("names-os-system", with_a_foreign_class, "cannot be loaded as a model"),
    ("random-bytes", with_random_bytes, "is not a Keras model file"),
]


@pytest.fixture(params=BAD_MODELS, ids=[model[0] for model in BAD_MODELS])
def bad_model(request, good, tmp_path, monkeypatch):
    """A runs directory with the good run and a copy of it whose model.keras is not a model of ours."""
    name, spoil, said = request.param
    runs_dir = tmp_path / "runs"
    shutil.copytree(good.run.path, runs_dir / good.run.run_id)
    folder = runs_dir / f"{good.run.run_id[:15]}-model-{name}"
    shutil.copytree(good.run.path, folder)
    spoil(folder / MODEL_FILE)
    monkeypatch.setenv(RUNS_DIR_ENV, str(runs_dir))
    # Were the class looked up and called, os.system would run: record instead of running anything.
    calls = []
    monkeypatch.setattr(os, "system", lambda *args, **kwargs: calls.append(args) or 0)
    return SimpleNamespace(runs_dir=runs_dir, run_id=folder.name, said=said, system_calls=calls)


def test_draw_page_says_a_bad_model_cannot_be_loaded_and_still_draws_with_the_good_one(good, bad_model):
    app = open_page("pages/4_Draw.py", run=bad_model.run_id)

    assert_opens_cleanly(app)
    assert app.selectbox(key="draw_run").value == bad_model.run_id
    (error,) = values(app.error)
    assert error.startswith(f"Could not load the model of run {bad_model.run_id}:") and bad_model.said in error
    assert error.endswith("Pick another run above.")

    app.selectbox(key="draw_run").set_value(good.run.run_id).run()

    assert_opens_cleanly(app)
    assert not app.error
    assert app.query_params["run"] == good.run.run_id
    assert any("Draw a digit on the canvas" in text for text in values(app.info))
    assert bad_model.system_calls == []


def test_runs_page_says_a_bad_model_cannot_be_examined_and_still_examines_the_good_one(good, bad_model):
    app = open_page("pages/2_Runs.py", run=bad_model.run_id)

    assert_opens_cleanly(app)
    (error,) = values(app.error)
    assert error.startswith("Cannot examine this run:") and MODEL_FILE in error and bad_model.said in error

    runs = list_runs(bad_model.runs_dir)
    good_row = [run.run_id for run in runs].index(good.run.run_id)
    app.session_state[f"runs_table_{runs_signature(runs)}"] = {"selection": {"rows": [good_row], "columns": []}}
    app.run()

    assert_opens_cleanly(app)
    assert not app.error
    assert f"Run `{good.run.run_id}`" in values(app.header)
    assert "1,000 test images" in everything_on(app)
    assert bad_model.system_calls == []


# --- an address nobody should send ---------------------------------------------------------------------


def test_train_page_with_a_300_character_run_id_warns_in_plain_words(good, monkeypatch):
    monkeypatch.setenv(RUNS_DIR_ENV, str(good.runs_dir))

    app = open_page("pages/1_Train.py", run=LONG_ID)

    assert_opens_cleanly(app)
    (warning,) = values(app.warning)
    assert warning.startswith("The run in the address cannot be shown:") and "is not a run id" in warning
    assert LONG_ID not in warning  # cut short, not echoed whole
    assert "run" not in app.query_params


def test_draw_page_with_a_300_character_run_id_warns_and_draws_with_the_good_run(good, monkeypatch):
    monkeypatch.setenv(RUNS_DIR_ENV, str(good.runs_dir))

    app = open_page("pages/4_Draw.py", run=LONG_ID)

    assert_opens_cleanly(app)
    (warning,) = values(app.warning)
    assert warning.startswith("The link asked for a run to draw with, but 'xxxx")
    assert "is not a run id" in warning and len(warning) < 200  # the 300 characters are not echoed back
    assert app.selectbox(key="draw_run").value == good.run.run_id
    assert not app.error


# --- deleting a run whose folder is a symbolic link -----------------------------------------------------


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with a digest of its bytes."""
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_deleting_a_linked_run_on_the_runs_page_removes_only_the_link(good, tmp_path, monkeypatch):
    runs_dir, outside = tmp_path / "runs", tmp_path / "elsewhere"
    shutil.copytree(good.run.path, runs_dir / good.run.run_id)
    shutil.copytree(good.run.path, outside / "kept")
    link = runs_dir / f"{good.run.run_id[:15]}-linked"
    link.symlink_to(outside / "kept", target_is_directory=True)
    before, kept_before = snapshot(outside), snapshot(runs_dir / good.run.run_id)
    monkeypatch.setenv(RUNS_DIR_ENV, str(runs_dir))
    app = open_page("pages/2_Runs.py", run=link.name)
    assert f"Run `{link.name}`" in values(app.header)

    app.button(key="runs_delete").click().run()
    next(button for button in app.button if button.label == "Delete").click().run()

    assert_opens_cleanly(app)
    assert not link.exists() and not link.is_symlink()
    assert snapshot(outside) == before
    assert snapshot(runs_dir / good.run.run_id) == kept_before
    assert list(app.dataframe[0].value["run"]) == [good.run.run_id]

