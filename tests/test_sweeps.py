"""Sweeps: values read the way each setting declares them, grids checked whole, queued whole or not at all."""

from __future__ import annotations

import pytest

from core import queue, service, sweeps
from core.access import OPERATOR, PermissionRefused, member
from core.records import RunState, RunStoreError
from core.store import list_runs
from tests.factories import TINY

ALICE = member({"iss": "https://id.example.org", "sub": "alice", "name": "Alice Liddell"}, operators=frozenset())


@pytest.fixture
def no_workers(monkeypatch):
    """Queue runs without starting worker processes."""
    monkeypatch.setattr(service, "ensure_pool", lambda runs_dir=None: None)


@pytest.mark.parametrize(("setting", "text", "expected"), [
    ("learning_rate", "0.05, 0.1 ,0.5", (0.05, 0.1, 0.5)),
    ("batch_size", "50,200", (50, 200)),
    ("optimizer", "sgd, Adam, rmsprop", ("sgd", "adam", "rmsprop")),
    ("optimizer", "SGD with momentum 0.9", ("momentum",)),  # a choice by its label
    ("xla", "auto, on, off", (None, True, False)),
    ("xla", "null", (None,)),  # as the refusal lists the choices: "one of null, true, false"
    ("hidden_units", "128-128, 64, 256x32, 32 - 16", ([128, 128], [64], [256, 32], [32, 16])),
    ("learning_rate", "5e-2, .5, 1.", (0.05, 0.5, 1.0)),
    ("learning_rate", "0.1, 0.1, 0.5", (0.1, 0.5)),  # repeats count once
])
def test_values_are_read_as_the_setting_declares_them(setting, text, expected):
    assert sweeps.parse_axis(setting, text).values == expected


@pytest.mark.parametrize(("setting", "text", "named"), [
    ("learning_rate", "0.1, fast", "'fast' is not a number"),
    ("learning_rate", "0.1, 20", "learning_rate must be from 1e-05 to 10; got 20"),
    ("batch_size", "50, 2.5", "not a whole number"),
    ("optimizer", "sgd, lbfgs", "'lbfgs' is not one of"),
    ("hidden_units", "128-8", "hidden_units[1] must be"),
    ("learning_rate", " , ", "at least one value"),
    ("data_path", "/etc", "a sweep varies one of"),
    ("colour", "red", "a sweep varies one of"),
    # An empty item is refused by its place, not dropped (it used to queue 0.1 and 0.2).
    ("learning_rate", "0.1,,0.2", "learning_rate: value 2 of 3 is empty (two commas in a row, or one at the end)"),
    ("learning_rate", "0.1, 0.2, ", "learning_rate: value 3 of 3 is empty"),
    ("hidden_units", "128--64", "'128--64' is not a list of layer sizes written with the digits 0 to 9"),
    # Python's float() and int() read other scripts' digits, underscores and words; a sweep does not.
    ("learning_rate", "\uff10.\uff15", "learning_rate: '\uff10.\uff15' is not a number written with the digits 0 to 9"),
    ("batch_size", "\u0665\u0660", "batch_size: '\u0665\u0660' is not a whole number written with the digits 0 to 9"),
    ("hidden_units", "\uff11\uff12\uff18", "is not a list of layer sizes written with the digits 0 to 9"),
    ("seed", "1_000", "seed: '1_000' is not a whole number"),
    ("learning_rate", "nan", "learning_rate: 'nan' is not a number"),
    # A text setting is read as text and held to its pattern (it used to be refused as "not a number").
    ("collection", "0123456789abcdef0123, ../etc", "collection must be a snapshot of kept drawings, 20 hexadecimal "
                                                   "digits; got '../etc'"),
])
def test_a_bad_value_is_refused_naming_the_setting_and_the_value(setting, text, named):
    with pytest.raises(ValueError) as raised:
        sweeps.parse_axis(setting, text)

    assert named in str(raised.value)


def test_more_values_than_a_sweep_takes_are_refused_by_their_count_before_any_is_read(monkeypatch):
    read = []
    monkeypatch.setattr(sweeps, "parse_value", lambda setting, text: read.append(text))

    with pytest.raises(ValueError) as raised:
        sweeps.parse_axis("seed", ",".join(map(str, range(10_000))))

    assert str(raised.value) == ("seed: 10,000 values are more than one sweep takes: at most 16 runs go into one "
                                 "sweep; give fewer values")
    assert read == []


def test_the_grid_is_every_combination_with_the_first_axis_slowest():
    axes = [sweeps.parse_axis("learning_rate", "0.1, 0.5"), sweeps.parse_axis("batch_size", "20, 50")]

    configs = sweeps.grid(TINY, axes)

    assert [(c.learning_rate, c.batch_size) for c in configs] == [(0.1, 20), (0.1, 50), (0.5, 20), (0.5, 50)]
    assert all(c.replace(learning_rate=TINY.learning_rate, batch_size=TINY.batch_size) == TINY for c in configs)


def test_grids_that_are_too_big_or_vary_one_setting_twice_are_refused():
    big = [sweeps.parse_axis("seed", ",".join(map(str, range(5)))), sweeps.parse_axis("batch_size", "1,2,3,4")]
    twice = [sweeps.parse_axis("seed", "1,2"), sweeps.parse_axis("seed", "3,4")]

    with pytest.raises(ValueError, match="20 runs; at most 16"):
        sweeps.grid(TINY, big)
    with pytest.raises(ValueError, match="given twice"):
        sweeps.grid(TINY, twice)
    with pytest.raises(ValueError, match="1 or 2 settings"):
        sweeps.grid(TINY, [])


REFUSED_GRIDS = [  # (axes as the page takes them, the base config's changes, what the refusal says)
    ({"cpu_replicas": "1, 8"}, {}, "cpu_replicas applies only with distribute 'mirrored', and this sweep's runs "
                                   "have distribute 'none': set distribute to 'mirrored' first"),
    ({"cpu_replicas": "4"}, {}, "cpu_replicas applies only with distribute 'mirrored'"),
    ({"hidden_units": "64, 128"}, {"architecture": "cnn"}, "hidden_units applies only with architecture 'mlp', and "
                                                             "this sweep's runs have architecture 'cnn'"),
    ({"xla": "auto, off"}, {"engine": "session"}, "xla applies only with engine 'function'"),
    ({"distribute": "none, mirrored", "cpu_replicas": "1, 8"}, {},
     "this sweep would train the same run twice: with distribute 'none', cpu_replicas 1 and 8 make no difference "
     "(cpu_replicas applies only with distribute 'mirrored'); sweep cpu_replicas alone with distribute 'mirrored', "
     "or give cpu_replicas one value"),
    ({"architecture": "mlp, cnn", "hidden_units": "64, 128-64"}, {},
     "with architecture 'cnn', hidden_units 64 and 128-64 make no difference"),
    ({"engine": "function, session", "xla": "auto, off"}, {}, "with engine 'session', xla auto and off make no"),
    ({"collection_share": "0.25, 0.5"}, {}, "collection_share applies only with a collection, and this sweep's runs "
                                             "have none: choose a collection first"),
    ({"collection": "0123456789abcdef0123, null", "collection_share": "0.25, 0.5"}, {},
     "with collection None, collection_share 0.25 and 0.5 make no difference (collection_share applies only with a "
     "collection)"),
]


@pytest.mark.parametrize(("axes", "changes", "named"), REFUSED_GRIDS,
                         ids=[" x ".join(axes) for axes, _, _ in REFUSED_GRIDS])
def test_a_grid_that_would_waste_runs_is_refused_naming_the_setting_it_depends_on(axes, changes, named, tmp_path,
                                                                                  no_workers):
    # It used to queue them: CPU replicas 1 and 8 with distribute none were two identical runs.
    parsed = [sweeps.parse_axis(name, text) for name, text in axes.items()]

    with pytest.raises(ValueError) as raised:
        service.submit_sweep(TINY.replace(**changes), parsed, tmp_path, identity=OPERATOR)

    assert named in str(raised.value)
    assert list_runs(tmp_path) == []


def test_a_text_setting_is_swept_by_its_values_as_written_and_null():
    axis = sweeps.parse_axis("collection", "0123456789abcdef0123, null")

    assert axis.values == ("0123456789abcdef0123", None)


def test_a_setting_that_applies_to_some_runs_of_the_grid_is_swept_with_them():
    axes = [sweeps.parse_axis("distribute", "none, mirrored"), sweeps.parse_axis("cpu_replicas", "4")]

    configs = sweeps.grid(TINY, axes)

    assert [(c.distribute, c.cpu_replicas) for c in configs] == [("none", 4), ("mirrored", 4)]


def test_a_sweep_one_of_whose_runs_the_service_refuses_queues_nothing(tmp_path, no_workers):
    # The Train page's sweep over distribute none, multi-worker used to queue the first run, then refuse.
    axes = [sweeps.parse_axis("distribute", "none, multi-worker")]

    with pytest.raises(service.SubmissionRefused) as raised:
        service.submit_sweep(TINY, axes, tmp_path, identity=ALICE)

    assert str(raised.value).startswith("the run with distribute multi-worker: a multi-worker run starts from the "
                                        "command line")
    assert list_runs(tmp_path) == [] and queue.queued_ids(tmp_path) == []


def test_a_sweep_on_the_servers_files_is_refused_whole_when_files_are_not_offered(tmp_path, no_workers):
    config = TINY.replace(source="path", data_path=str(tmp_path / "mnist.npz"))

    with pytest.raises(PermissionRefused, match="does not read its own files"):
        service.submit_sweep(config, [sweeps.parse_axis("seed", "1, 2")], tmp_path / "runs", identity=ALICE)

    assert list_runs(tmp_path / "runs") == []


def test_a_combination_the_settings_forbid_is_refused_before_anything_is_queued(tmp_path, no_workers):
    axes = [sweeps.parse_axis("engine", "function, session"), sweeps.parse_axis("xla", "on")]

    with pytest.raises(ValueError, match="xla=True is a function-engine option"):
        service.submit_sweep(TINY, axes, tmp_path, identity=OPERATOR)

    assert list_runs(tmp_path) == []


def test_a_sweep_is_queued_whole_under_one_name(tmp_path, no_workers):
    axes = [sweeps.parse_axis("learning_rate", "0.1, 0.5"), sweeps.parse_axis("batch_size", "20, 50")]

    name, runs = service.submit_sweep(TINY, axes, tmp_path, identity=ALICE)

    assert len(runs) == 4 and len({run.run_id for run in runs}) == 4
    assert queue.queued_ids(tmp_path) == [run.run_id for run in runs]  # in grid order
    found = sweeps.sweep_runs(name, tmp_path)
    assert [run.run_id for run in found] == [run.run_id for run in runs]
    assert all(run.state is RunState.QUEUED and run.status.sweep == name for run in found)
    other, _ = service.submit_sweep(TINY, axes[:1], tmp_path, identity=ALICE)
    assert other != name and len(sweeps.sweep_runs(other, tmp_path)) == 2


def test_a_sweep_over_the_persons_limit_is_refused_whole(tmp_path, no_workers, monkeypatch):
    monkeypatch.setenv("HYBRID_LAB_QUEUE_LIMIT", "5")
    service.submit(TINY, tmp_path, identity=ALICE)
    axes = [sweeps.parse_axis("learning_rate", "0.1, 0.5"), sweeps.parse_axis("batch_size", "20, 50, 100")]

    with pytest.raises(service.SubmissionRefused, match="this asks for 6 more"):
        service.submit_sweep(TINY, axes, tmp_path, identity=ALICE)

    assert len(list_runs(tmp_path)) == 1  # not a single run of the sweep was queued


def test_a_sweep_the_runs_directory_fails_halfway_leaves_nothing_queued(tmp_path, no_workers, monkeypatch):
    # The third run cannot be created (a full disk, say): the two already queued are taken back out.
    made = []
    real_create_run = service.create_run

    def create_run(*args, **kwargs):
        if len(made) == 2:
            raise RunStoreError(f"cannot create a run in {tmp_path}: No space left on device")
        made.append(real_create_run(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(service, "create_run", create_run)
    axes = [sweeps.parse_axis("learning_rate", "0.1, 0.2, 0.3, 0.4")]

    with pytest.raises(RunStoreError, match="No space left"):
        service.submit_sweep(TINY, axes, tmp_path, identity=OPERATOR)

    assert len(made) == 2
    assert list_runs(tmp_path) == [] and queue.queued_ids(tmp_path) == []


def test_an_engine_comparison_one_engine_refuses_queues_neither(tmp_path, no_workers):
    # Mirrored replicas are the function engine's; the session engine runs on one device. Refused whole, so
    # the function engine's run is not left queued alone.
    with pytest.raises(ValueError, match="session"):
        service.submit_engine_comparison(TINY.replace(distribute="mirrored"), tmp_path, identity=OPERATOR)

    assert list_runs(tmp_path) == [] and queue.queued_ids(tmp_path) == []


def test_the_cli_flag_takes_the_setting_by_flag_or_by_name():
    assert sweeps.parse_flag("--learning-rate=0.1,0.2") == sweeps.Axis("learning_rate", (0.1, 0.2))
    assert sweeps.parse_flag("batch_size=8") == sweeps.Axis("batch_size", (8,))
    with pytest.raises(ValueError, match="SETTING=VALUE"):
        sweeps.parse_flag("learning_rate")


def test_sweep_names_differ_and_say_when():
    first, second = sweeps.new_sweep_name(), sweeps.new_sweep_name()

    assert first != second and first.startswith("sweep-20")


def test_the_train_page_follows_a_sweep_to_its_table_and_chart(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.factories import make_run

    name = sweeps.new_sweep_name()
    for rate, accuracy in ((0.1, 0.8), (0.5, 0.9)):
        make_run(tmp_path, TINY.replace(learning_rate=rate), test_accuracy=accuracy, sweep=name)
    monkeypatch.setenv("HYBRID_LAB_RUNS", str(tmp_path))
    app = AppTest.from_file("../Home.py", default_timeout=60)
    app.switch_page("pages/1_Train.py")
    app.query_params["sweep"] = name
    app.run()

    assert not app.exception
    assert f"Sweep `{name}`" in [header.value for header in app.subheader]
    assert "2 runs: 2 done, 0 training, 0 queued" in [bar.text for bar in app.get("progress")][0]
    table = app.dataframe[0].value
    assert list(table["learning_rate"]) == [0.1, 0.5] and list(table["test_accuracy"]) == [0.8, 0.9]
    assert any("parcoords" in chart.proto.spec for chart in app.get("plotly_chart"))


def sweep_inputs(app, index: int):
    """The sweep form's setting box and values box number `index` (1 or 2), found by their labels."""
    setting = next(box for box in app.selectbox if box.label == f"Setting {index}")
    values = next(box for box in app.text_input if box.label == f"Values {index}")
    return setting, values


def test_the_train_page_refuses_a_sweep_whole_and_says_which_run(tmp_path, monkeypatch, no_workers):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("HYBRID_LAB_RUNS", str(tmp_path))
    app = AppTest.from_file("../Home.py", default_timeout=60)
    app.switch_page("pages/1_Train.py")
    app.run()
    sweep_inputs(app, 1)[0].set_value("distribute").run()
    sweep_inputs(app, 1)[1].input("none, multi-worker").run()
    app.button(key="sweep_queue").click().run()

    assert not app.exception
    assert any(error.value.startswith("Cannot queue this sweep: the run with distribute multi-worker: a multi-worker "
                                      "run starts from the command line") for error in app.error), app.error
    assert list_runs(tmp_path) == []


def test_the_sweep_form_words_a_bad_value_with_the_settings_label_under_its_box():
    from streamlit.testing.v1 import AppTest

    def page():
        import streamlit as st

        from ui.form import sweep_form

        st.session_state["read_back"] = sweep_form()

    app = AppTest.from_function(page, default_timeout=60).run()
    sweep_inputs(app, 1)[0].set_value("learning_rate").run()
    sweep_inputs(app, 1)[1].input("0.1,,0.2").run()

    axes, errors = app.session_state["read_back"]
    expected = ("Learning rate: value 2 of 3 is empty (two commas in a row, or one at the end); remove the extra comma "
                "or put a value there.")
    assert axes == [] and errors == {"values_0": expected}
    assert [error.value for error in app.error] == [expected]
