"""The Train page's form: a TrainConfig spread over widgets and read back, with the values sliders offer.

No streamlit here: the page owns the widgets, this module owns what their values mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config import TrainConfig

# The learning-rate slider is logarithmic: 1-2-5 steps from 1e-5 to 10, the article's 0.5 among them.
LEARNING_RATES = tuple(round(mantissa * 10.0**exponent, 10)
                       for exponent in range(-5, 1) for mantissa in (1, 2, 5)) + (10.0,)
BATCH_SIZES = (1, 8, 16, 32, 50, 64, 100, 128, 256, 512, 1024, 2048, 4096)
HIDDEN_UNITS = (16, 32, 64, 128, 256, 512, 1024)
MAX_HIDDEN_LAYERS = 4
# The XLA select: "auto" leaves the choice to the engine (XLA from 5,000 steps on).
XLA_CHOICES = {None: "auto", True: "on", False: "off"}


def _with(choices: tuple, value) -> list:
    """The choices of a slider, plus `value` if a loaded config uses one that is not on it."""
    return sorted(set(choices) | {value})


def learning_rate_choices(value: float) -> list[float]:
    """The log-scale learning rates, including `value`."""
    return _with(LEARNING_RATES, value)


def batch_size_choices(value: int) -> list[int]:
    """The batch sizes offered, including `value`."""
    return _with(BATCH_SIZES, value)


def hidden_unit_choices(value: int) -> list[int]:
    """The layer widths offered, including `value`."""
    return _with(HIDDEN_UNITS, value)


@dataclass
class FormValues:
    """The train form's widget values: a TrainConfig with the hidden layers spread over one slider each."""

    layer_count: int
    layer_units: list[int] = field(default_factory=list)  # always MAX_HIDDEN_LAYERS long
    settings: dict = field(default_factory=dict)  # every other TrainConfig field by name


def form_values(config: TrainConfig) -> FormValues:
    """Widget values that show `config` (unused layer sliders keep the article's width)."""
    units = list(config.hidden_units) + [128] * (MAX_HIDDEN_LAYERS - len(config.hidden_units))
    settings = {name: value for name, value in config.to_dict().items() if name != "hidden_units"}
    settings["data_path"] = settings["data_path"] or ""
    settings["xla"] = XLA_CHOICES[config.xla]
    return FormValues(len(config.hidden_units), units, settings)


def config_from_form(values: FormValues) -> TrainConfig:
    """The TrainConfig the form describes; ValueError (naming the field) if a value is out of range."""
    settings = dict(values.settings)
    settings["data_path"] = (settings.get("data_path") or "").strip() or None
    if settings.get("source") != "path":
        settings["data_path"] = None
    # XLA is the function engine's option; the session engine would refuse it, so it is unset there.
    xla = {label: value for value, label in XLA_CHOICES.items()}[settings.get("xla", "auto")]
    settings["xla"] = None if settings.get("engine") == "session" else xla
    return TrainConfig(hidden_units=list(values.layer_units[: values.layer_count]), **settings)
