"""Settings are declared once, in core.config.SETTINGS: the config class, the CLI's flags and the Train page's
widgets all derive from them, so a setting added in one place shows up everywhere without another edit."""

from __future__ import annotations

import dataclasses
import typing
from functools import lru_cache
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from core.cli import build_parser, config_from_args
from core.config import SETTINGS, SETTINGS_BY_NAME, Setting, TrainConfig
from tests.factories import DIVERGING, TINY
from ui.form import config_from_form, form_values

# The AppTest element list each kind of widget lands in.
WIDGET_ELEMENTS = {"layers": "slider", "stops": "select_slider", "select": "selectbox", "slider": "slider",
                   "number": "number_input", "text": "text_input", "upload": "selectbox"}
LABEL_SMOOTHING = Setting("label_smoothing", float, 0.0, "Label smoothing", "help text", "slider",
                          low=0.0, high=0.5, step=0.05)


@dataclasses.dataclass
class WithLabelSmoothing(TrainConfig):
    """The app's config with one more setting, added the way the README says: its Setting and its field."""

    SETTINGS = TrainConfig.SETTINGS + (LABEL_SMOOTHING,)
    label_smoothing: float = 0.0

# Flags that are about the command, not about a run's settings (a preset or a sweep names several runs' settings).
COMMAND_FLAGS = {"-h", "--help", "--runs-dir", "--json", "--list", "--sweep", "--preset", "--cluster-wait",
                 "--export-script", "--output"}
FORM_TIMEOUT = 60  # seconds for one run of the form script; the first imports Streamlit's widgets


def settings_page(config_class=None) -> None:
    """The Train page's settings form for `config_class` (TrainConfig if None; an AppTest script: imports inside)."""
    import streamlit as st

    from core.config import TrainConfig
    from ui.form import settings_form

    config, errors = settings_form(config_class or TrainConfig)
    st.session_state["read_back"] = (config, errors)


def loaded_config_page(config) -> None:
    """The settings form after a saved config was loaded into it, as the Runs page's "train again" does."""
    import streamlit as st

    from ui.form import put_form, settings_form

    if "loaded" not in st.session_state:
        put_form(config)
        st.session_state["loaded"] = True
    st.session_state["read_back"] = settings_form()


def run_form(state: dict | None = None, config_class=None) -> AppTest:
    """Run the settings form once (with `state` in session state first) and return the AppTest."""
    app = AppTest.from_function(settings_page, default_timeout=FORM_TIMEOUT, kwargs={"config_class": config_class})
    for key, value in (state or {}).items():
        app.session_state[key] = value
    app.run()
    assert not app.exception, app.exception
    return app


@lru_cache(maxsize=None)
def widget_labels(state: tuple = ()) -> dict[str, list[str]]:
    """The labels of every widget the form shows, by AppTest element kind (state: (key, value) pairs)."""
    app = run_form(dict(state))
    return {kind: [widget.label for widget in getattr(app, kind)] for kind in set(WIDGET_ELEMENTS.values())}


def expected_label(setting: Setting) -> str:
    return setting.label + (" (log scale)" if setting.widget == "stops" and setting.log_scale else "")


def state_where_it_applies(setting: Setting) -> tuple:
    """Session state that makes `setting` apply (data_path: source "path"); empty when it always applies."""
    if setting.only_with is None:
        return ()
    other, allowed = setting.only_with
    if allowed is None:  # any value of the other setting
        return (("form_" + other, example_value(SETTINGS_BY_NAME[other])),)
    return (("form_" + other, allowed[0]),)


def example_value(setting: Setting):
    """A value other than the default that a config accepts on its own, chosen from the setting's own data."""
    if setting.kind is list:
        candidates = [[int(setting.low)], [int(setting.high)] * setting.max_items]
    elif setting.choices:
        candidates = list(setting.choices)
    elif setting.kind in (int, float):
        candidates = [setting.kind(setting.high), setting.kind(setting.low)]
    else:
        # a path, an upload's SHA-256, a snapshot of kept drawings
        candidates = ["/data/mnist.npz", "0123456789abcdef" * 4, "0123456789abcdef0123"]
    for candidate in candidates:
        if candidate == setting.default and type(candidate) is type(setting.default):
            continue
        try:
            TrainConfig(**{setting.name: candidate})
        except ValueError:
            continue
        return candidate
    raise AssertionError(f"no example value for {setting.name}")


def as_flags(setting: Setting, value) -> list[str]:
    if isinstance(value, bool):
        return [setting.cli_flag if value else "--no-" + setting.cli_flag.removeprefix("--")]
    if isinstance(value, list):
        return [setting.cli_flag, ",".join(map(str, value))]
    return [setting.cli_flag, str(value)]


# ------------------------------------------------------------------------------------------ the config class


def expected_type(setting: Setting):
    """The field type a setting calls for: its kind, a list of ints for the layers, `| None` when nullable."""
    kind = list[int] if setting.kind is list else setting.kind
    return kind | None if setting.nullable else kind


def field_default(field: dataclasses.Field):
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def mismatches(config_class) -> list[str]:
    """Where a config class's fields and its SETTINGS disagree: names and order, types, defaults."""
    fields = dataclasses.fields(config_class)
    names, declared = [field.name for field in fields], [setting.name for setting in config_class.SETTINGS]
    if names != declared:
        return [f"fields {names} but settings {declared}"]
    types = typing.get_type_hints(config_class)
    found = []
    for field, setting in zip(fields, config_class.SETTINGS):
        if types[field.name] != expected_type(setting):
            found.append(f"{field.name}: field type {types[field.name]}, setting {expected_type(setting)}")
        default = field_default(field)
        if default != setting.default or type(default) is not type(setting.default):
            found.append(f"{field.name}: field default {default!r}, setting {setting.default!r}")
    return found


def test_the_config_class_has_one_field_per_setting_in_order_with_its_type_and_default():
    assert mismatches(TrainConfig) == []
    assert mismatches(WithLabelSmoothing) == []
    assert list(TrainConfig().to_dict()) == [setting.name for setting in SETTINGS]


@dataclasses.dataclass
class SettingWithoutField(TrainConfig):
    SETTINGS = TrainConfig.SETTINGS + (LABEL_SMOOTHING,)


@dataclasses.dataclass
class FieldWithoutSetting(TrainConfig):
    label_smoothing: float = 0.0


@dataclasses.dataclass
class WrongDefault(TrainConfig):
    SETTINGS = TrainConfig.SETTINGS + (LABEL_SMOOTHING,)
    label_smoothing: float = 0.1


@dataclasses.dataclass
class WrongType(TrainConfig):
    SETTINGS = TrainConfig.SETTINGS + (LABEL_SMOOTHING,)
    label_smoothing: int = 0


@pytest.mark.parametrize(("config_class", "named"), [
    (SettingWithoutField, "label_smoothing"), (FieldWithoutSetting, "label_smoothing"),
    (WrongDefault, "field default 0.1, setting 0.0"), (WrongType, "field type <class 'int'>"),
], ids=["setting-without-field", "field-without-setting", "wrong-default", "wrong-type"])
def test_a_setting_added_in_one_place_only_is_caught(config_class, named):
    found = mismatches(config_class)

    assert found and named in " ".join(found)


# ------------------------------------------------------------------------------------------ the CLI


@pytest.mark.parametrize("setting", SETTINGS, ids=[setting.name for setting in SETTINGS])
def test_every_setting_has_exactly_one_flag(setting):
    actions = build_parser()._option_string_actions

    owning = {id(action) for action in actions.values() if action.dest == setting.name}
    spellings = sorted(flag for flag, action in actions.items() if action.dest == setting.name)

    assert len(owning) == 1, f"{setting.name} has {len(owning)} flags: {spellings}"
    assert actions[setting.cli_flag].dest == setting.name
    # A yes/no setting is one flag with a --no- form (--xla / --no-xla); any other is spelled one way.
    negated = ["--no-" + setting.cli_flag.removeprefix("--")] if setting.kind is bool else []
    assert spellings == sorted([setting.cli_flag, *negated])


def test_every_flag_belongs_to_a_setting_or_to_the_command():
    actions = build_parser()._option_string_actions

    setting_flags = {setting.cli_flag for setting in SETTINGS}
    negated = {"--no-" + setting.cli_flag.removeprefix("--") for setting in SETTINGS if setting.kind is bool}

    assert setting_flags | negated <= set(actions)
    assert set(actions) - (setting_flags | negated) <= COMMAND_FLAGS, "a flag that sets neither a setting nor the command"


def test_no_flags_give_the_default_config():
    assert config_from_args(build_parser().parse_args([])) == TrainConfig()


@pytest.mark.parametrize("setting", SETTINGS, ids=[setting.name for setting in SETTINGS])
def test_each_flag_sets_its_own_setting(setting):
    value = example_value(setting)

    config = config_from_args(build_parser().parse_args(as_flags(setting, value)))

    assert getattr(config, setting.name) == value
    assert type(getattr(config, setting.name)) is type(value)
    # Only that setting changed (and --data brings source "path" with it).
    changed = {name for name, shown in config.to_dict().items() if shown != TrainConfig().to_dict()[name]}
    assert changed == {setting.name} | ({"source"} if setting.name == "data_path" else set())


# ------------------------------------------------------------------------------------------ the Train page


@pytest.mark.parametrize("setting", SETTINGS, ids=[setting.name for setting in SETTINGS])
def test_every_setting_has_a_widget_on_the_train_page(setting):
    kind = WIDGET_ELEMENTS[setting.widget]

    labels = widget_labels(state_where_it_applies(setting))

    assert expected_label(setting) in labels[kind], f"no {kind} labelled {expected_label(setting)!r}: {labels}"


def test_the_data_path_box_appears_only_for_the_path_source():
    assert "Data path" not in widget_labels()["text_input"]
    assert "Data path" in widget_labels((("form_source", "path"),))["text_input"]


def test_the_share_of_drawings_appears_only_with_drawings():
    # Without a snapshot of drawings it would change nothing the run does.
    assert "Share of your drawings" not in widget_labels()["slider"]
    assert "Share of your drawings" in widget_labels((("form_collection", "0123456789abcdef0123"),))["slider"]


def test_the_hidden_layers_count_shows_one_width_per_layer():
    labels = widget_labels((("form_layer_count", 3),))["select_slider"]

    # In rows of two, in order, so that a phone, which stacks the columns, shows them 1, 2, 3 (not 1, 3, 2).
    assert [label for label in labels if label.startswith("Units")] == ["Units, layer 1", "Units, layer 2",
                                                                         "Units, layer 3"]


# ------------------------------------------------------------------------------------------ a new setting


def test_a_setting_added_in_a_fixture_gets_a_flag_and_a_check():
    config_class = WithLabelSmoothing
    parser = build_parser(config_class)

    assert "--label-smoothing" in parser._option_string_actions
    config = config_from_args(parser.parse_args(["--label-smoothing", "0.2"]), config_class)
    assert config.label_smoothing == 0.2
    assert config_from_args(parser.parse_args([]), config_class).label_smoothing == 0.0
    with pytest.raises(ValueError, match="label_smoothing") as raised:
        config_from_args(parser.parse_args(["--label-smoothing", "0.7"]), config_class)
    assert "0.7" in str(raised.value)
    # The app's own config class is untouched.
    assert "--label-smoothing" not in build_parser()._option_string_actions


def test_a_setting_added_in_a_fixture_gets_a_widget():
    app = run_form(config_class=WithLabelSmoothing)

    sliders = [slider for slider in app.slider if slider.label == "Label smoothing"]
    assert len(sliders) == 1
    assert sliders[0].value == 0.0
    sliders[0].set_value(0.2).run()
    config, errors = app.session_state["read_back"]
    assert errors == {}
    assert config.label_smoothing == 0.2


# ------------------------------------------------------------------------------------------ reading the form


def test_a_number_out_of_range_is_named_with_its_range():
    config, errors = config_from_form({**form_values(TrainConfig()), "form_steps": 999_999})

    assert config is None
    assert list(errors) == ["steps"]
    assert errors["steps"] == "Steps must be from 1 to 200,000; got 999,999."


def test_a_cleared_number_says_it_is_empty():
    config, errors = config_from_form({**form_values(TrainConfig()), "form_steps": None})

    assert config is None
    assert errors == {"steps": "Steps is empty: enter a value from 1 to 200,000."}


def test_the_form_shows_a_bad_number_in_an_error_under_its_box():
    app = run_form()
    assert [error.value for error in app.error] == []

    app.number_input(key="form_steps").set_value(999_999).run()
    assert [error.value for error in app.error] == ["Steps must be from 1 to 200,000; got 999,999."]
    elements = [app.main.children[index] for index in sorted(app.main.children)]
    position = next(index for index, element in enumerate(elements)
                    if element.type == "number_input" and element.label == "Steps")
    assert elements[position + 1].type == "error"
    assert app.session_state["read_back"][0] is None

    app.number_input(key="form_steps").set_value(None).run()
    assert [error.value for error in app.error] == ["Steps is empty: enter a value from 1 to 200,000."]

    app.number_input(key="form_steps").set_value(30).run()
    assert [error.value for error in app.error] == []
    assert app.session_state["read_back"] == (TrainConfig(steps=30), {})


def test_source_path_without_a_data_path_is_refused_across_settings():
    config, errors = config_from_form({**form_values(TrainConfig()), "form_source": "path", "form_data_path": " "})

    assert config is None
    assert "data_path" in errors[""]


ROUND_TRIP = [
    TrainConfig(),
    TINY,
    DIVERGING,
    TrainConfig(xla=True),
    TrainConfig(xla=False),
    TrainConfig(engine="session"),
    TrainConfig(engine="session", xla=None, optimizer="momentum", dataset="fashion_mnist"),
    TrainConfig(architecture="cnn", augment=True, optimizer="adam", learning_rate=0.001, steps=1500),
    TrainConfig(augment=True, engine="session"),
    TrainConfig(hidden_units=[1024, 16, 32, 512], activation="elu", dropout_rate=0.35, optimizer="rmsprop",
                learning_rate=3e-4, batch_size=77, steps=123, eval_every=7, seed=0, dataset="fashion_mnist",
                source="path", data_path="/data/fashion"),
]


@pytest.mark.parametrize("config", ROUND_TRIP, ids=[repr(config) for config in ROUND_TRIP])
def test_form_values_read_back_as_the_same_config(config):
    assert config_from_form(form_values(config)) == (config, {})


@pytest.mark.parametrize("xla", ["auto", "on", "off"])
def test_xla_goes_back_to_its_default_with_the_session_engine(xla):
    values = {**form_values(TrainConfig(engine="session")), "form_xla": xla}

    config, errors = config_from_form(values)

    assert errors == {}
    assert config.engine == "session" and config.xla is None


def test_a_setting_that_does_not_apply_is_not_checked():
    # The XLA box is disabled with the session engine: whatever it holds must not block training.
    values = {**form_values(TrainConfig(engine="session")), "form_xla": "sometimes"}

    assert config_from_form(values) == (TrainConfig(engine="session"), {})
    assert "xla" in config_from_form({**values, "form_engine": "function"})[1]


def test_a_cnn_ignores_the_hidden_layer_widgets():
    # The layer sliders mean nothing to the CNN: whatever they hold, the config keeps the default widths.
    values = {**form_values(TrainConfig(architecture="cnn")), "form_layer_count": 1, "form_units_0": 16}

    config, errors = config_from_form(values)

    assert errors == {}
    assert config.architecture == "cnn" and config.hidden_units == TrainConfig().hidden_units
    assert config_from_form({**values, "form_architecture": "mlp"})[0].hidden_units == [16]


def test_augment_is_read_from_its_labels():
    values = form_values(TrainConfig(augment=True))

    assert values["form_augment"] == "on"
    assert config_from_form({**values, "form_augment": "off"})[0].augment is False


def test_xla_is_read_from_its_labels():
    values = form_values(TrainConfig(xla=True))

    assert values["form_xla"] == "on"
    assert config_from_form({**values, "form_xla": "off"})[0].xla is False


def test_a_loaded_config_with_values_between_the_stops_reads_back_unchanged():
    loaded = ROUND_TRIP[-1]  # learning rate 3e-4 and batch size 77 are not stops of their sliders
    app = AppTest.from_function(loaded_config_page, default_timeout=FORM_TIMEOUT, kwargs={"config": loaded}).run()

    assert not app.exception, app.exception
    assert app.session_state["read_back"] == (loaded, {})
    assert app.select_slider(key="form_learning_rate").value == 3e-4
    assert app.text_input(key="form_data_path").value == "/data/fashion"


# ------------------------------------------------------------------------------------------ the engines


def optimizer_tables() -> dict[str, dict]:
    """Each engine's optimizers by name (imported here: TensorFlow loads only for these tests)."""
    from core.engines.function_step import KERAS_OPTIMIZERS
    from core.engines.session import V1_OPTIMIZERS

    return {"function": KERAS_OPTIMIZERS, "session": V1_OPTIMIZERS}


def test_every_optimizer_choice_has_an_entry_in_both_engines():
    choices = set(SETTINGS_BY_NAME["optimizer"].choices)

    for engine, table in optimizer_tables().items():
        assert set(table) == choices, f"the {engine} engine's optimizers {sorted(table)} are not the choices {choices}"


@pytest.mark.parametrize("optimizer", SETTINGS_BY_NAME["optimizer"].choices)
def test_each_engine_builds_the_optimizer_a_config_names_at_its_learning_rate(optimizer):
    from core.engines.function_step import make_optimizer
    from core.engines.session import make_v1_optimizer

    config = TrainConfig(optimizer=optimizer, learning_rate=0.0125)
    keras_optimizer, v1_optimizer = make_optimizer(config), make_v1_optimizer(config)

    assert float(keras_optimizer.learning_rate) == pytest.approx(0.0125)
    # TF1's optimizers keep their rate as _learning_rate, or _lr (Adam); there is no public getter.
    assert getattr(v1_optimizer, "_learning_rate", getattr(v1_optimizer, "_lr", None)) == 0.0125
    expected = {"sgd": ("SGD", "GradientDescentOptimizer"), "momentum": ("SGD", "MomentumOptimizer"),
                "adam": ("Adam", "AdamOptimizer"), "rmsprop": ("RMSprop", "RMSPropOptimizer")}[optimizer]
    assert (type(keras_optimizer).__name__, type(v1_optimizer).__name__) == expected
    if optimizer == "momentum":
        assert keras_optimizer.momentum == 0.9 and v1_optimizer._momentum == 0.9


@pytest.mark.parametrize("engine", ["function", "session"])
def test_an_optimizer_an_engine_does_not_have_is_refused_by_name_not_replaced(engine):
    from core.engines.function_step import make_optimizer
    from core.engines.session import make_v1_optimizer

    # What a config would hold if a choice were added to OPTIMIZERS without an entry in the engines' tables.
    unknown = SimpleNamespace(optimizer="lion", learning_rate=0.01)
    make = make_optimizer if engine == "function" else make_v1_optimizer

    with pytest.raises(ValueError) as raised:
        make(unknown)

    assert f"the {engine} engine has no optimizer 'lion'" in str(raised.value)
