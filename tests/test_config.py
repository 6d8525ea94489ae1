"""Tests for core.config: the article's defaults, validation messages a person can act on, config.json."""

from __future__ import annotations

import json
import math

import pytest

from core.config import (
    ACTIVATIONS,
    ARCHITECTURES,
    DATASETS,
    ENGINES,
    OPTIMIZERS,
    PRESETS,
    SETTINGS,
    SETTINGS_BY_NAME,
    SOURCES,
    TrainConfig,
    config_from_preset,
)


def test_defaults_are_the_articles():
    config = TrainConfig()

    assert config.hidden_units == [128, 128]
    assert config.activation == "relu"
    assert config.dropout_rate == 0.0
    assert config.optimizer == "sgd"
    assert config.learning_rate == 0.5
    assert config.batch_size == 50
    assert config.steps == 1000
    assert config.architecture == "mlp"
    assert config.augment is False
    assert config.describe_layers() == "784-128-128-10"


def test_defaults_do_not_share_the_hidden_units_list():
    first, second = TrainConfig(), TrainConfig()
    first.hidden_units.append(64)

    assert second.hidden_units == [128, 128]


def test_choice_constants_list_what_the_article_and_the_pages_offer():
    assert set(ACTIVATIONS) == {"relu", "tanh", "sigmoid", "elu"}
    assert set(OPTIMIZERS) == {"sgd", "momentum", "adam", "rmsprop"}
    assert set(ENGINES) == {"function", "session"}
    assert set(DATASETS) == {"mnist", "fashion_mnist"}
    assert set(SOURCES) == {"auto", "keras", "offline", "path", "uploaded"}
    assert set(ARCHITECTURES) == {"mlp", "cnn"}


def test_the_layers_description_follows_the_hidden_units_or_names_the_cnn():
    assert TrainConfig(hidden_units=[512, 64, 32]).describe_layers() == "784-512-64-32-10"
    assert TrainConfig(hidden_units=(16,)).hidden_units == [16]
    cnn = TrainConfig(architecture="cnn")
    assert cnn.describe_layers() == "32C5-P2-64C5-P2-128-10"
    # The MLP's hidden layers mean nothing to the CNN.
    assert cnn.replace(hidden_units=[16]).describe_layers() == cnn.describe_layers()


def test_edges_of_every_range_are_accepted():
    TrainConfig(hidden_units=[16, 1024, 16, 1024], dropout_rate=0.8, learning_rate=1e-5, batch_size=4096,
                steps=200_000, eval_every=1, seed=0)
    TrainConfig(dropout_rate=0.0, learning_rate=10.0, batch_size=1, steps=1, seed=2**31 - 1)
    for activation in ACTIVATIONS:
        TrainConfig(activation=activation)
    for optimizer in OPTIMIZERS:
        TrainConfig(optimizer=optimizer)


def _shown(value) -> list[str]:
    """The ways a message may quote the bad value: repr, str, %g for numbers, or with thousands separators."""
    forms = [repr(value), str(value)]
    if isinstance(value, float) and math.isfinite(value):
        forms.append(f"{value:g}")
    if isinstance(value, int) and not isinstance(value, bool):
        forms.append(f"{value:,}")
    return forms


BAD_VALUES = [
    ("hidden_units", []),
    ("hidden_units", [16] * 5),
    ("hidden_units", [8]),
    ("hidden_units", [128, 2048]),
    ("hidden_units", [12.5]),
    ("activation", "softmax"),
    ("activation", "ReLU"),
    ("dropout_rate", -0.1),
    ("dropout_rate", 0.9),
    ("dropout_rate", float("nan")),
    ("optimizer", "lbfgs"),
    ("learning_rate", 0.0),
    ("learning_rate", 20.0),
    ("learning_rate", 1e-6),
    ("learning_rate", float("inf")),
    ("learning_rate", "0.5"),
    ("batch_size", 0),
    ("batch_size", 5000),
    ("batch_size", 1.5),
    ("batch_size", True),
    ("steps", 0),
    ("steps", 200_001),
    ("eval_every", 0),
    ("seed", -1),
    ("seed", 2**31),
    ("dataset", "cifar10"),
    ("source", "web"),
    ("engine", "graph"),
    ("xla", "yes"),
    ("xla", 1),
    ("architecture", "CNN"),
    ("architecture", "resnet"),
    ("augment", "on"),
    ("augment", 1),
    ("augment", None),
]


@pytest.mark.parametrize(("field_name", "value"), BAD_VALUES, ids=[f"{f}={v!r}" for f, v in BAD_VALUES])
def test_a_value_out_of_range_is_rejected_naming_the_field_and_the_value(field_name, value):
    with pytest.raises(ValueError) as raised:
        TrainConfig(**{field_name: value})

    message = str(raised.value)
    assert field_name in message
    if field_name == "hidden_units" and isinstance(value, list) and 1 <= len(value) <= 4:
        shown = [form for bad in value if not (isinstance(bad, int) and 16 <= bad <= 1024) for form in _shown(bad)]
    else:
        shown = _shown(value)
    assert any(form in message for form in shown), f"{message!r} does not quote the value {value!r}"


MESSAGES = [  # the exact sentence a person reads: the setting, what is allowed, and what they gave
    ({"steps": 0}, "steps must be from 1 to 200,000; got 0"),
    ({"steps": 200_001}, "steps must be from 1 to 200,000; got 200,001"),
    ({"activation": "x"}, "activation must be one of relu, tanh, sigmoid, elu; got 'x'"),
    ({"xla": "yes"}, "xla must be one of null, true, false; got 'yes'"),
    ({"hidden_units": []}, "hidden_units must list 1 to 4 layers; got []"),
    ({"hidden_units": [128, 8]}, "hidden_units[1] must be from 16 to 1,024; got 8"),
    ({"learning_rate": "0.5"}, "learning_rate must be a number from 1e-05 to 10; got '0.5'"),
    ({"batch_size": 1.5}, "batch_size must be a whole number from 1 to 4,096; got 1.5"),
    ({"architecture": "rnn"}, "architecture must be one of mlp, cnn; got 'rnn'"),
    ({"augment": "yes"}, "augment must be one of false, true; got 'yes'"),
]


@pytest.mark.parametrize(("values", "expected"), MESSAGES, ids=[repr(values) for values, _ in MESSAGES])
def test_a_bad_value_is_refused_in_one_plain_sentence(values, expected):
    with pytest.raises(ValueError) as raised:
        TrainConfig(**values)

    assert str(raised.value) == expected


def test_each_setting_describes_its_range_and_flag_in_words():
    assert SETTINGS_BY_NAME["steps"].describe_range() == "from 1 to 200,000"
    assert SETTINGS_BY_NAME["learning_rate"].describe_range() == "from 1e-05 to 10"
    assert SETTINGS_BY_NAME["optimizer"].describe_range() == "one of sgd, momentum, adam, rmsprop"
    assert SETTINGS_BY_NAME["xla"].describe_range() == "one of null, true, false"
    assert SETTINGS_BY_NAME["learning_rate"].cli_flag == "--learning-rate"
    assert SETTINGS_BY_NAME["data_path"].cli_flag == "--data"


def test_xla_and_data_path_apply_only_with_their_engine_and_source():
    xla, data_path = SETTINGS_BY_NAME["xla"], SETTINGS_BY_NAME["data_path"]

    assert xla.applies({"engine": "function"}) and not xla.applies({"engine": "session"})
    assert data_path.applies({"source": "path"}) and not data_path.applies({"source": "auto"})
    assert SETTINGS_BY_NAME["steps"].applies({})


def test_the_share_of_drawings_applies_only_with_drawings():
    share = SETTINGS_BY_NAME["collection_share"]
    assert share.applies({"collection": "0123456789abcdef0123"}) and not share.applies({"collection": None})


def test_hidden_units_apply_only_to_the_mlp_and_come_after_the_architecture():
    hidden_units = SETTINGS_BY_NAME["hidden_units"]

    assert hidden_units.applies({"architecture": "mlp"}) and not hidden_units.applies({"architecture": "cnn"})
    names = [setting.name for setting in SETTINGS]
    assert names.index("architecture") < names.index("hidden_units")  # the form shows the choice first
    assert SETTINGS_BY_NAME["architecture"].cli_flag == "--architecture"
    assert SETTINGS_BY_NAME["augment"].choice_labels == {False: "off", True: "on"}


@pytest.mark.parametrize("changes", [{"architecture": "cnn"}, {"augment": True}], ids=["cnn", "augment"])
def test_xla_is_refused_for_the_cnn_and_for_augmentation(changes):
    with pytest.raises(ValueError) as raised:
        TrainConfig(xla=True, **changes)
    assert "xla" in str(raised.value) and next(iter(changes)) in str(raised.value)

    # Unset or off, XLA is no obstacle: the engine does without it.
    assert TrainConfig(xla=False, **changes).xla is False
    assert TrainConfig(**changes).xla is None


def test_hidden_units_given_as_a_number_is_a_value_error_naming_the_field():
    with pytest.raises(ValueError, match="hidden_units"):
        TrainConfig(hidden_units=128)


def test_replace_validates_again():
    config = TrainConfig(steps=30)

    assert config.replace(learning_rate=0.1).learning_rate == 0.1
    assert config.replace(learning_rate=0.1).steps == 30
    with pytest.raises(ValueError, match="learning_rate"):
        config.replace(learning_rate=20.0)


def test_xla_is_a_function_engine_option():
    assert TrainConfig().xla is None  # the engine's default
    assert TrainConfig(xla=False).xla is False
    with pytest.raises(ValueError) as raised:
        TrainConfig(engine="session", xla=True)
    assert "xla" in str(raised.value) and "session" in str(raised.value)
    assert TrainConfig(engine="session", xla=False).engine == "session"


def test_source_path_needs_a_data_path():
    with pytest.raises(ValueError, match="data_path"):
        TrainConfig(source="path")
    with pytest.raises(ValueError, match="data_path"):
        TrainConfig(source="path", data_path="")

    assert TrainConfig(source="path", data_path="/data/mnist.npz").data_path == "/data/mnist.npz"


def test_from_dict_rejects_unknown_fields_by_name():
    values = {**TrainConfig().to_dict(), "lr": 0.1, "epochs": 3}

    with pytest.raises(ValueError) as raised:
        TrainConfig.from_dict(values)

    assert "'epochs'" in str(raised.value) and "'lr'" in str(raised.value)


def test_from_dict_fills_missing_fields_with_defaults_and_validates():
    assert TrainConfig.from_dict({"steps": 30}) == TrainConfig(steps=30)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig.from_dict({"batch_size": -1})


def test_save_and_load_round_trip(tmp_path):
    config = TrainConfig(hidden_units=[256, 32], activation="tanh", dropout_rate=0.25, optimizer="adam",
                         learning_rate=0.001, batch_size=128, steps=1234, eval_every=50, seed=7,
                         dataset="fashion_mnist", source="path", data_path="/data/fashion", engine="session")
    path = tmp_path / "config.json"

    config.save(path)
    loaded = TrainConfig.load(path)

    assert loaded == config
    assert loaded.describe_layers() == "784-256-32-10"
    # config.json is plain JSON a person (or nanoGPT-style script) can read: every field by name.
    on_disk = json.loads(path.read_text())
    assert on_disk["hidden_units"] == [256, 32]
    assert on_disk["learning_rate"] == 0.001
    assert set(on_disk) == set(TrainConfig().to_dict())


def test_load_rejects_a_hand_edited_config_with_a_bad_value(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TrainConfig().to_dict(), "learning_rate": 50}))

    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.load(path)


def test_a_config_saved_before_the_cnn_existed_loads_as_the_mlp_without_augmentation(tmp_path):
    path = tmp_path / "config.json"
    older = {name: value for name, value in TrainConfig(hidden_units=[64]).to_dict().items()
             if name not in ("architecture", "augment")}
    path.write_text(json.dumps(older))

    loaded = TrainConfig.load(path)

    assert (loaded.architecture, loaded.augment, loaded.hidden_units) == ("mlp", False, [64])


def test_cnn_and_augmentation_round_trip_through_config_json(tmp_path):
    config = TrainConfig(architecture="cnn", augment=True, optimizer="adam", learning_rate=0.001)
    path = tmp_path / "config.json"

    config.save(path)

    assert TrainConfig.load(path) == config
    on_disk = json.loads(path.read_text())
    assert (on_disk["architecture"], on_disk["augment"]) == ("cnn", True)


# --- presets ---------------------------------------------------------------------------------------


def test_the_article_preset_is_the_default_config():
    assert config_from_preset("article") == TrainConfig()


def test_the_cnn_preset_is_a_cnn_with_adam_and_augmentation():
    config = config_from_preset("cnn")

    assert config.architecture == "cnn" and config.augment is True
    assert (config.optimizer, config.learning_rate) == ("adam", 0.001)
    # Everything the preset does not name keeps its default.
    named = set(PRESETS["cnn"])
    for setting in SETTINGS:
        if setting.name not in named:
            assert getattr(config, setting.name) == setting.default, setting.name


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_names_only_settings_and_validates(name):
    assert set(PRESETS[name]) <= set(SETTINGS_BY_NAME)
    config = config_from_preset(name)
    for setting_name, value in PRESETS[name].items():
        expected = list(value) if isinstance(value, tuple) else value
        assert getattr(config, setting_name) == expected, setting_name


def test_a_preset_takes_overrides_and_validates_them():
    config = config_from_preset("cnn", steps=30, source="offline", engine="session")

    assert (config.architecture, config.steps, config.source, config.engine) == ("cnn", 30, "offline", "session")
    with pytest.raises(ValueError, match="steps"):
        config_from_preset("cnn", steps=0)
    with pytest.raises(ValueError, match="xla"):
        config_from_preset("cnn", xla=True)


def test_an_unknown_preset_is_refused_naming_the_presets():
    with pytest.raises(ValueError) as raised:
        config_from_preset("resnet")

    assert str(raised.value) == "preset must be one of article, cnn; got 'resnet'"


@pytest.mark.parametrize("name, given", [("upload", "../../etc/passwd"), ("collection", "../snapshots/x"),
                                         ("collection", "0123456789abcdef" * 4)])
def test_a_content_hash_setting_takes_only_its_own_pattern(name, given):
    # Both name a file of the data area by its hash: a path or another kind of hash never gets that far.
    with pytest.raises(ValueError, match="hexadecimal digits"):
        TrainConfig(**{name: given})
