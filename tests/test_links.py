"""Links that reproduce: settings and a sweep written into a link and read back (core/links.py), and the Train
page reading its address when it opens and keeping it up to date as the form changes (ui/links.py), through
Streamlit's AppTest. In a real browser: tests/test_browser_links.py."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import pytest
from streamlit.testing.v1 import AppTest

from core import links, sweeps
from core.config import TrainConfig, config_from_preset
from core.links import Unused
from tests.factories import TINY, make_run
from ui.form import config_from_form

REPO_ROOT = Path(__file__).resolve().parents[1]
HOME = str(REPO_ROOT / "Home.py")
TIMEOUT = 60

# Every setting away from its default, in one config each that the settings allow together.
FAR_FROM_DEFAULTS = [
    TrainConfig(hidden_units=[256, 64, 32], activation="tanh", dropout_rate=0.2, augment=True, optimizer="rmsprop",
                learning_rate=0.003, batch_size=128, steps=500, eval_every=50, seed=7, dataset="fashion_mnist",
                source="offline", xla=False, distribute="mirrored", cpu_replicas=4),
    config_from_preset("cnn", steps=300, seed=0, source="keras"),
    TrainConfig(engine="session", learning_rate=0.00012345678912, batch_size=77, source="path",
                data_path="/data/my mnist.npz", hidden_units=[16]),
]


def parsed(query: dict[str, str]) -> dict[str, str]:
    """A query as a browser sends it back: encoded, then decoded."""
    return dict(parse_qsl(urlencode(query)))


# --- core: writing and reading a link ------------------------------------------------------------------------


@pytest.mark.parametrize("config", FAR_FROM_DEFAULTS, ids=["mlp", "cnn", "session"])
def test_every_setting_comes_back_from_its_link(config):
    query = links.settings_query(config)
    link = links.read_link(parsed(query))

    assert TrainConfig(**link.values) == config
    assert link.unused == ()
    assert set(link.given) == set(query)


def test_a_setting_added_in_a_fixture_goes_into_a_link_and_comes_back():
    from tests.test_settings_as_data import WithLabelSmoothing

    config = WithLabelSmoothing(label_smoothing=0.1, steps=300)
    query = links.settings_query(config, WithLabelSmoothing)

    assert query == {"steps": "300", "label_smoothing": "0.1"}
    assert WithLabelSmoothing(**links.read_link(query, WithLabelSmoothing).values) == config


def test_a_link_names_only_the_settings_that_differ_and_apply_in_the_words_one_types():
    config = TrainConfig(hidden_units=[256, 128], learning_rate=0.1, augment=True, xla=False, engine="function")

    assert links.settings_query(config) == {"hidden_units": "256,128", "augment": "on", "learning_rate": "0.1",
                                            "xla": "off"}
    assert links.settings_query(TrainConfig()) == {}
    # CPU replicas mean nothing without mirrored, hidden layers nothing for a CNN: not in the link.
    assert "cpu_replicas" not in links.settings_query(TrainConfig(cpu_replicas=4))
    assert "hidden_units" not in links.settings_query(config_from_preset("cnn").replace(hidden_units=[64]))


def test_the_cnn_preset_makes_a_link_that_opens_it():
    query = links.settings_query(config_from_preset("cnn"))

    assert query == {"architecture": "cnn", "dropout_rate": "0.3", "augment": "on", "optimizer": "adam",
                     "learning_rate": "0.001"}
    assert TrainConfig(**links.read_link(query).values) == config_from_preset("cnn")
    assert TrainConfig(**links.read_link({"preset": "cnn", "steps": "300"}).values) == config_from_preset(
        "cnn", steps=300)


def test_an_explicit_link_to_the_defaults_names_the_article_preset():
    # An empty query leaves an open Train page as it is; a run of the article's settings must still reset it.
    assert links.settings_query(TrainConfig(), explicit=True) == {"preset": "article"}
    assert links.settings_query(TrainConfig(steps=10), explicit=True) == {"steps": "10"}
    link = links.read_link({"preset": "article"})
    assert TrainConfig(**link.values) == TrainConfig() and link.unused == ()


@pytest.mark.parametrize(("param", "text", "named"), [
    ("steps", "abc", "steps: 'abc' is not a whole number written with the digits 0 to 9"),
    ("steps", "999999", "steps must be from 1 to 200,000; got 999,999"),
    ("learning_rate", "\uff10.\uff15", "learning_rate: '\uff10.\uff15' is not a number written with the digits 0 to 9"),
    ("learning_rate", "nan", "learning_rate: 'nan' is not a number"),
    ("hidden_units", "256,8", "hidden_units[1] must be from 16 to 1,024; got 8"),
    ("hidden_units", "256,,128", "'256,,128' is not a list of layer sizes"),
    ("hidden_units", "16,16,16,16,16", "hidden_units must list 1 to 4 layers"),
    ("optimizer", "lbfgs", "optimizer: 'lbfgs' is not one of sgd, momentum, adam, rmsprop"),
    ("augment", "maybe", "augment: 'maybe' is not one of false, true"),
    ("seed", "1_000", "seed: '1_000' is not a whole number"),
])
def test_a_bad_value_is_named_with_what_is_wrong_and_the_others_still_apply(param, text, named):
    other, other_text, other_value = ("steps", "300", 300) if param == "optimizer" else ("optimizer", "adam", "adam")
    link = links.read_link({other: other_text, param: text})

    (unused,) = link.unused
    assert (unused.param, unused.text, unused.why, unused.setting) == (param, text, Unused.BAD_VALUE, param)
    assert named in unused.detail
    assert link.values[param] == TrainConfig().to_dict()[param]  # the default stays
    assert link.values[other] == other_value and link.given == (other,)


def test_values_are_read_as_a_person_types_them():
    link = links.read_link({"learning-rate": " 5e-2 ", "Hidden_Units": "256-128", "xla": "null", "augment": "On",
                            "optimizer": "Adam", "source": "offline sample"})

    assert link.unused == ()
    assert (link.values["learning_rate"], link.values["hidden_units"], link.values["xla"], link.values["augment"],
            link.values["optimizer"], link.values["source"]) == (0.05, [256, 128], None, True, "adam", "offline")


def test_a_name_that_is_not_a_setting_is_named_with_the_setting_it_looks_like():
    link = links.read_link({"learningrate": "0.1", "colour": "red", "steps": "300"})

    assert [(item.param, item.why, item.suggestion) for item in link.unused] == [
        ("learningrate", Unused.UNKNOWN, "learning_rate"), ("colour", Unused.UNKNOWN, None)]
    assert link.values["steps"] == 300 and link.values["learning_rate"] == 0.5


def test_a_setting_that_does_not_apply_is_left_out_with_those_that_depend_on_it():
    link = links.read_link({"engine": "session", "xla": "on", "distribute": "mirrored", "cpu_replicas": "4"})

    assert [(item.param, item.why) for item in link.unused] == [
        ("xla", Unused.NOT_APPLIED), ("distribute", Unused.NOT_APPLIED), ("cpu_replicas", Unused.NOT_APPLIED)]
    assert link.given == ("engine",)
    assert TrainConfig(**link.values) == TrainConfig(engine="session")


def test_a_choice_the_page_does_not_offer_is_named_and_what_needed_it_is_left_out():
    link = links.read_link({"source": "path", "data_path": "/etc", "distribute": "multi-worker", "steps": "10"},
                           withheld={"source": ("path",), "distribute": ("multi-worker",)})

    assert {(item.param, item.why) for item in link.unused} == {
        ("source", Unused.NOT_OFFERED), ("data_path", Unused.NOT_APPLIED), ("distribute", Unused.NOT_OFFERED)}
    assert TrainConfig(**link.values) == TrainConfig(steps=10)


def test_a_bad_preset_is_named_and_the_settings_still_apply():
    link = links.read_link({"preset": "resnet", "steps": "10"})

    (unused,) = link.unused
    assert unused.why is Unused.BAD_VALUE and unused.detail == "preset must be one of article, cnn; got 'resnet'"
    assert TrainConfig(**link.values) == TrainConfig(steps=10)


def test_a_sweep_goes_into_the_link_as_typed_and_comes_back_for_the_sweep_form():
    query = links.sweep_query({0: ("learning_rate", "0.05, 0.1, 0.5 "), 1: ("batch_size", "50,200")})

    assert query == {"sweep_1": "learning_rate:0.05, 0.1, 0.5", "sweep_2": "batch_size:50,200"}
    assert links.read_link(parsed(query)).sweep == {0: ("learning_rate", "0.05, 0.1, 0.5"), 1: ("batch_size", "50,200")}
    assert links.sweep_query({1: ("seed", "  ")}) == {}  # a setting without values is nothing to reproduce


def test_a_sweep_axis_that_cannot_go_into_the_form_is_refused_as_the_cli_refuses_it():
    link = links.read_link({"sweep_1": "colour:red,blue", "sweep_2": "learning_rate 0.1", "sweep_3": "seed:1,2"})

    with pytest.raises(ValueError) as typed:
        sweeps.parse_flag("colour=red,blue")
    assert [(item.param, item.why) for item in link.unused] == [
        ("sweep_1", Unused.BAD_VALUE), ("sweep_2", Unused.BAD_VALUE), ("sweep_3", Unused.UNKNOWN)]
    assert link.unused[0].detail == str(typed.value)
    assert "sweep_2 takes a setting and its values, such as learning_rate:0.05,0.1,0.5" in link.unused[1].detail
    assert link.sweep == {}


def test_a_sweep_axis_with_bad_values_goes_into_the_form_which_refuses_them_as_typed():
    # The form reads the values with parse_axis, so the refusal under its box is the one a person typing gets.
    assert links.read_link({"sweep_1": "learning_rate:0.1,,0.2"}).sweep == {0: ("learning_rate", "0.1,,0.2")}
    assert links.read_link({"sweep_1": "learning-rate:0.1"}).sweep == {0: ("learning_rate", "0.1")}


# --- the Train page, through AppTest ---------------------------------------------------------------------------


def open_train(runs_dir: Path, monkeypatch, query: dict[str, str] | None = None) -> AppTest:
    """A fresh session opening the Train page at an address with this query."""
    monkeypatch.setenv("HYBRID_LAB_RUNS", str(runs_dir))
    app = AppTest.from_file(HOME, default_timeout=TIMEOUT)
    app.switch_page("pages/1_Train.py")
    app.query_params.update(parsed(query or {}))
    return app.run()


def form_config(app: AppTest) -> TrainConfig:
    config, errors = config_from_form(app.session_state)
    assert errors == {}, errors
    return config


def notice(app: AppTest) -> str:
    """The page's notice of what a link could not use ('' when there is none), as it reads once rendered."""
    shown = "\n".join(warning.value for warning in app.warning if "this link" in warning.value.lower())
    # What the link gave is escaped, so as not to be read as Markdown (and bare addresses hold a word joiner).
    return re.sub(r"\\(.)", r"\1", shown).replace("\u2060", "")


def address(app: AppTest) -> dict[str, str]:
    return dict(app.query_params)


@pytest.mark.parametrize("config", FAR_FROM_DEFAULTS, ids=["mlp", "cnn", "session"])
def test_every_setting_of_a_link_lands_in_the_form(config, tmp_path, monkeypatch):
    query = links.settings_query(config)
    app = open_train(tmp_path, monkeypatch, query)

    assert not app.exception
    assert form_config(app) == config
    assert notice(app) == "" and not app.error
    # What a person sees: the widgets hold the values (the layers one slider each).
    if config.architecture == "mlp":
        assert app.slider(key="form_layer_count").value == len(config.hidden_units)
        assert [app.select_slider(key=f"form_units_{index}").value
                for index in range(len(config.hidden_units))] == config.hidden_units
    assert app.select_slider(key="form_learning_rate").value == config.learning_rate
    assert app.number_input(key="form_steps").value == config.steps
    assert app.selectbox(key="form_optimizer").value == config.optimizer
    assert address(app) == query  # the page keeps the link in its address


def test_one_bad_value_is_named_on_the_page_and_the_others_apply(tmp_path, monkeypatch):
    app = open_train(tmp_path, monkeypatch, {"learning_rate": "0.1", "hidden_units": "256,128", "steps": "abc",
                                             "optimizer": "adam"})

    assert not app.exception
    assert form_config(app) == TrainConfig(learning_rate=0.1, hidden_units=[256, 128], optimizer="adam")
    assert "Steps: 'abc' is not a whole number written with the digits 0 to 9, such as 1000, so it stays at 1,000." \
           in notice(app)
    assert notice(app).count("\n- ") == 1  # that one, and only that one
    assert address(app) == {"hidden_units": "256,128", "optimizer": "adam", "learning_rate": "0.1"}
    assert not next(button for button in app.button if button.label == "Train").disabled


def test_a_setting_that_does_not_apply_with_the_others_is_named_and_left_out(tmp_path, monkeypatch):
    app = open_train(tmp_path, monkeypatch, {"engine": "session", "xla": "on", "steps": "300"})

    assert form_config(app) == TrainConfig(engine="session", steps=300)
    assert ("XLA applies only with Engine \u201cfunction (TF2 tf.function)\u201d, and here Engine is \u201csession "
            "(TF1, the article's)\u201d, so \u201cxla=on\u201d was left out.") in notice(app)
    assert address(app) == {"steps": "300", "engine": "session"}


def test_the_share_of_drawings_without_drawings_is_named_and_left_out(tmp_path, monkeypatch):
    app = open_train(tmp_path, monkeypatch, {"collection_share": "0.5", "steps": "300"})

    assert form_config(app) == TrainConfig(steps=300)
    assert ("Share of your drawings applies only with Your drawings chosen, and here there are none, so "
            "\u201ccollection_share=0.5\u201d was left out.") in notice(app)
    assert address(app) == {"steps": "300"}


def test_names_that_are_not_settings_are_named_and_leave_the_address(tmp_path, monkeypatch):
    app = open_train(tmp_path, monkeypatch, {"learningrate": "0.1", "utm_source": "mail", "batch_size": "100"})

    assert form_config(app) == TrainConfig(batch_size=100)
    assert ("learningrate is not a setting (did you mean learning_rate?), so \u201clearningrate=0.1\u201d was "
            "ignored.") in notice(app)
    assert "utm_source is not a setting, so \u201cutm_source=mail\u201d was ignored." in notice(app)
    assert address(app) == {"batch_size": "100"}


def test_the_notice_goes_once_a_setting_changes(tmp_path, monkeypatch):
    app = open_train(tmp_path, monkeypatch, {"steps": "abc"})
    assert notice(app)

    app.run()
    assert notice(app)  # a rerun alone keeps it

    app.selectbox(key="form_activation").set_value("tanh").run()
    assert notice(app) == ""


def test_a_changed_widget_changes_the_address_and_nothing_else(tmp_path, monkeypatch):
    app = open_train(tmp_path, monkeypatch)
    assert address(app) == {}

    app.selectbox(key="form_optimizer").set_value("adam").run()
    app.select_slider(key="form_learning_rate").set_value(0.001).run()
    assert address(app) == {"optimizer": "adam", "learning_rate": "0.001"}
    assert form_config(app) == TrainConfig(optimizer="adam", learning_rate=0.001)

    app.selectbox(key="form_optimizer").set_value("sgd").run()  # back to the default: out of the address
    assert address(app) == {"learning_rate": "0.001"}

    next(button for button in app.button if button.label == "The CNN preset").click().run()
    assert address(app) == links.settings_query(config_from_preset("cnn"))


def test_the_address_after_the_cnn_preset_opens_the_cnn_preset_in_a_fresh_session(tmp_path, monkeypatch):
    app = open_train(tmp_path, monkeypatch)
    next(button for button in app.button if button.label == "The CNN preset").click().run()

    reopened = open_train(tmp_path, monkeypatch, address(app))

    assert form_config(reopened) == config_from_preset("cnn")
    assert notice(reopened) == ""


def test_a_rerun_never_reads_the_address_again(tmp_path, monkeypatch):
    """A widget changed while the previous run's new address is on its way to the browser comes back with the
    older address; reading it would undo the change."""
    app = open_train(tmp_path, monkeypatch)
    app.selectbox(key="form_optimizer").set_value("adam").run()
    older = address(app)
    app.select_slider(key="form_learning_rate").set_value(0.001).run()

    app.query_params.clear()
    app.query_params.update(older)  # the address the browser still had
    app.selectbox(key="form_activation").set_value("tanh").run()

    assert form_config(app) == TrainConfig(optimizer="adam", learning_rate=0.001, activation="tanh")
    assert address(app) == {"activation": "tanh", "optimizer": "adam", "learning_rate": "0.001"}


def test_a_link_from_another_page_replaces_the_form_and_a_plain_visit_keeps_it(tmp_path, monkeypatch):
    app = open_train(tmp_path, monkeypatch)
    app.selectbox(key="form_optimizer").set_value("adam").run()

    app.switch_page("pages/2_Runs.py")
    app.query_params.clear()
    app.run()
    app.switch_page("pages/1_Train.py")  # through the sidebar: no query
    app.run()
    assert form_config(app) == TrainConfig(optimizer="adam")
    assert address(app) == {"optimizer": "adam"}

    app.switch_page("pages/2_Runs.py")
    app.query_params.clear()
    app.run()
    app.switch_page("pages/1_Train.py")  # through a link: the link's settings, over the defaults
    app.query_params.update({"learning_rate": "0.1"})
    app.run()
    assert form_config(app) == TrainConfig(learning_rate=0.1)


def test_settings_in_the_address_win_over_the_followed_runs(tmp_path, monkeypatch):
    run = make_run(tmp_path, TINY.replace(optimizer="adam", learning_rate=0.01))

    followed = open_train(tmp_path, monkeypatch, {"run": run.run_id})
    assert form_config(followed) == run.config  # ?run= alone: the run's settings, as before links
    assert address(followed) == {"run": run.run_id, **links.settings_query(run.config)}

    linked = open_train(tmp_path, monkeypatch, {"run": run.run_id, "learning_rate": "0.1"})
    assert form_config(linked) == TrainConfig(learning_rate=0.1)
    assert linked.query_params["run"] == run.run_id  # still following it
    assert f"Run `{run.run_id}`" in [header.value for header in linked.subheader]


def test_a_sweep_link_opens_the_sweep_form_filled_in(tmp_path, monkeypatch):
    app = open_train(tmp_path, monkeypatch, {"steps": "200", "sweep_1": "learning_rate:0.05,0.1",
                                             "sweep_2": "batch_size:50,200"})

    assert not app.exception
    assert app.button(key="sweep_queue").label == "Queue sweep (4 runs)"
    assert app.selectbox(key="sweep_setting_0").value == "learning_rate"
    assert app.text_input(key="sweep_values_1").value == "50,200"
    (expander,) = [block for block in app.expander if block.label.startswith("Sweep:")]
    assert expander.proto.expanded
    assert address(app) == {"steps": "200", "sweep_1": "learning_rate:0.05,0.1", "sweep_2": "batch_size:50,200"}


def test_a_sweep_link_with_a_bad_value_is_refused_in_the_words_of_the_form(tmp_path, monkeypatch):
    app = open_train(tmp_path, monkeypatch, {"sweep_1": "learning_rate:0.1,,0.2"})

    # The same sentence as under the box when a person types 0.1,,0.2 (tests/test_sweeps.py).
    assert [error.value for error in app.error] == [
        "Learning rate: value 2 of 3 is empty (two commas in a row, or one at the end); remove the extra comma or put "
        "a value there."]
    assert app.button(key="sweep_queue").disabled


def test_a_sweep_typed_in_the_form_goes_into_the_address(tmp_path, monkeypatch):
    app = open_train(tmp_path, monkeypatch)
    app.selectbox(key="sweep_setting_0").set_value("seed").run()
    app.text_input(key="sweep_values_0").input("1, 2, 3").run()

    assert address(app) == {"sweep_1": "seed:1, 2, 3"}


# --- the Runs page's links ----------------------------------------------------------------------------------


def runs_page_links(runs_dir: Path, run_id: str, monkeypatch) -> dict:
    monkeypatch.setenv("HYBRID_LAB_RUNS", str(runs_dir))
    app = AppTest.from_file(HOME, default_timeout=TIMEOUT)
    app.switch_page("pages/2_Runs.py")
    app.query_params["run"] = run_id
    app.run()
    assert not app.exception
    return {link.proto.label: link.proto for link in app.get("page_link")}


def test_the_runs_page_opens_a_runs_settings_in_train(tmp_path, monkeypatch):
    config = config_from_preset("cnn", steps=300, source="offline")
    run = make_run(tmp_path, config)
    article = make_run(tmp_path, TrainConfig())

    link = runs_page_links(tmp_path, run.run_id, monkeypatch)["Open these settings in Train"]
    assert link.page == "Train"
    assert TrainConfig(**links.read_link(dict(parse_qsl(link.query_string))).values) == config

    link = runs_page_links(tmp_path, article.run_id, monkeypatch)["Open these settings in Train"]
    assert dict(parse_qsl(link.query_string)) == {"preset": "article"}
