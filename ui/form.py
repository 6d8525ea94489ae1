"""The Train page's settings form, derived from core.config's settings: one widget per setting.

Each setting's `widget` picks the widget; its label, help, range, choices and stops come from the setting.
Widget values live in session state under `form_<name>` (the hidden layers under a count and one width per
layer). Reading the form back checks each value against its setting, so a number typed out of range gets
its message under its box instead of being ignored.
"""

from __future__ import annotations

from typing import Callable

import streamlit as st

from core.config import Setting, TrainConfig

KEY_PREFIX = "form_"
LAYER_COUNT_KEY = "form_layer_count"
KEEP = {"persist_state": "session"}  # widget values survive a visit to another page


def _key(name: str) -> str:
    return KEY_PREFIX + name


def _unit_key(index: int) -> str:
    return f"{KEY_PREFIX}units_{index}"


def _uses_labels(setting: Setting) -> bool:
    """Choice widgets show labels as options when the values are not all text (XLA: None, True, False)."""
    return not all(isinstance(choice, str) for choice in setting.choices)


def _label(setting: Setting, value) -> str:
    return setting.choice_labels.get(value, str(value))


def stops_with(setting: Setting, value) -> list:
    """The values a stops slider offers, plus `value` if a loaded config uses one that is not a stop."""
    return sorted(set(setting.stops) | ({value} if value is not None else set()))


# ------------------------------------------------------------------------------------------- values


def form_values(config) -> dict:
    """The session-state values that show `config` in the form (unused layer sliders keep the default)."""
    return _form_values({setting.name: getattr(config, setting.name) for setting in config.SETTINGS}, config.SETTINGS)


def _form_values(settings_values: dict, settings: tuple[Setting, ...]) -> dict:
    values = {}
    for setting in settings:
        value = settings_values[setting.name]
        if setting.widget == "layers":
            values[LAYER_COUNT_KEY] = len(value)
            spare = setting.default[0] if setting.default else setting.stops[0]
            for index in range(setting.max_items):
                values[_unit_key(index)] = value[index] if index < len(value) else spare
        elif setting.choices and _uses_labels(setting):
            values[_key(setting.name)] = _label(setting, value)
        elif setting.widget == "text":
            values[_key(setting.name)] = value or ""
        else:
            values[_key(setting.name)] = value
    return values


def _value_of(setting: Setting, state) -> object:
    if setting.widget == "layers":
        return [state[_unit_key(index)] for index in range(state[LAYER_COUNT_KEY])]
    raw = state[_key(setting.name)]
    if setting.choices and _uses_labels(setting):
        return next((choice for choice in setting.choices if _label(setting, choice) == raw), raw)
    if setting.widget == "text":
        return (raw or "").strip() or None
    return raw


def config_from_form(state, config_class=TrainConfig) -> tuple[object | None, dict[str, str]]:
    """The config the form describes, or None and a message per setting that is wrong (or across settings)."""
    values, errors = {}, {}
    for setting in config_class.SETTINGS:
        value = _value_of(setting, state)
        if value is None and not setting.nullable:
            errors[setting.name] = f"{setting.label} is empty: enter a value {setting.describe_range()}."
            continue
        try:
            setting.check(value)
        except ValueError as error:
            errors[setting.name] = str(error).replace(setting.name, setting.label, 1) + "."
        values[setting.name] = value
    # A setting that does not apply to the others (XLA with the session engine) takes its default.
    for setting in config_class.SETTINGS:
        if not setting.applies(values):
            values[setting.name] = setting.default
            errors.pop(setting.name, None)
    if errors:
        return None, errors
    try:
        return config_class(**values), {}
    except ValueError as error:
        return None, {"": str(error)}


# ------------------------------------------------------------------------------------------- widgets


def put_form(config) -> None:
    """Show `config` in the form's widgets."""
    st.session_state.update(form_values(config))


def put_values(values: dict, config_class=TrainConfig) -> None:
    """Show every setting's value in the form, even values that do not make a config together (a link's)."""
    st.session_state.update(_form_values(values, config_class.SETTINGS))


def current_values(config_class=TrainConfig) -> dict:
    """Every setting's value as the form holds it now (None for a cleared box), valid or not."""
    return {setting.name: _value_of(setting, st.session_state) for setting in config_class.SETTINGS}


def _layers_widget(setting: Setting, applies: bool) -> None:
    st.slider(setting.label, 1, setting.max_items, key=LAYER_COUNT_KEY, help=setting.help, disabled=not applies,
              **KEEP)
    count = st.session_state[LAYER_COUNT_KEY]
    for first in range(0, count, 2):  # a row of two at a time, so that a phone stacks them in order: 1, 2, 3, 4
        for index, column in zip(range(first, min(first + 2, count)), st.columns(2)):
            key = _unit_key(index)
            column.select_slider(f"Units, layer {index + 1}", stops_with(setting, st.session_state[key]), key=key,
                                 disabled=not applies, **KEEP)


def _upload_widget(setting: Setting, offered: dict[str, str]) -> None:
    """A select over who asks' uploads (value: its SHA-256; label: its name and counts), nothing chosen at first.
    A value from a link or a run that is not among them stays, said to be none of theirs, so core can say why."""
    key = _key(setting.name)
    current = st.session_state.get(key)
    options = list(offered) + ([current] if current and current not in offered else [])
    st.selectbox(setting.label, options, index=None, key=key, help=setting.help,
                 format_func=lambda digest: offered.get(digest, f"{digest[:12]}…: not one of your uploads"),
                 placeholder="Upload a dataset below" if not offered else "Choose one of your uploads", **KEEP)


def _setting_widget(setting: Setting, applies: bool, choices: tuple, offered: dict[str, str]) -> None:
    key, label, help_text = _key(setting.name), setting.label, setting.help
    if setting.widget == "upload":
        if applies:
            _upload_widget(setting, offered)
    elif setting.widget == "layers":
        _layers_widget(setting, applies)
    elif setting.widget == "select":
        options = [_label(setting, c) for c in choices] if _uses_labels(setting) else list(choices)
        st.selectbox(label, options, format_func=lambda value: _label(setting, value), key=key, help=help_text,
                     disabled=not applies, **KEEP)
    elif setting.widget == "stops":
        st.select_slider(label + (" (log scale)" if setting.log_scale else ""),
                         stops_with(setting, st.session_state.get(key)), format_func=lambda value: f"{value:g}",
                         key=key, help=help_text, **KEEP)
    elif setting.widget == "slider" and applies:
        st.slider(label, setting.low, setting.high, step=setting.step, key=key, help=help_text, **KEEP)
    elif setting.widget == "number":
        # No min/max on the box: Streamlit would quietly ignore a number typed out of range while the box
        # still showed it. The value is checked against the setting when the form is read, in words.
        st.number_input(label, value=None, step=setting.kind(setting.step if setting.step is not None else 1), key=key,
                        help=help_text, disabled=not applies, placeholder=setting.describe_range(), **KEEP)
    elif setting.widget == "text" and applies:
        st.text_input(label, key=key, help=help_text, **KEEP)


def settings_form(config_class=TrainConfig, captions: dict[str, Callable[[dict], str | None]] | None = None,
                  withheld: dict[str, tuple] | None = None,
                  offered: dict[str, dict] | None = None) -> tuple[object | None, dict[str, str]]:
    """One widget per setting, in declaration order, each followed by its error; returns the config read back.

    `captions` adds a line under a setting's widget (from the values so far); `withheld` names choices a
    setting does not offer here (a choice already in session state that is withheld goes back to the
    default, so it cannot be smuggled in); `offered` gives an "upload" setting its choices ({value: label}).
    """
    captions, withheld, offered = captions or {}, withheld or {}, offered or {}
    for key, value in form_values(config_class()).items():
        st.session_state.setdefault(key, value)
    defaults = form_values(config_class())
    for name, refused in withheld.items():
        setting = next(s for s in config_class.SETTINGS if s.name == name)
        if _value_of(setting, st.session_state) in refused:
            st.session_state[_key(name)] = defaults[_key(name)]
    values = {setting.name: _value_of(setting, st.session_state) for setting in config_class.SETTINGS}
    config, errors = config_from_form(st.session_state, config_class)
    for setting in config_class.SETTINGS:
        choices = tuple(c for c in setting.choices if c not in withheld.get(setting.name, ()))
        _setting_widget(setting, setting.applies(values), choices, offered.get(setting.name, {}))
        if setting.name in errors:
            st.error(errors[setting.name], icon=":material/error:")
        caption = captions.get(setting.name)
        text = caption(values) if caption else None
        if text:
            st.caption(text)
    return config, errors


# ------------------------------------------------------------------------------------------- sweeps

NO_SETTING = "—"


def _sweep_keys(index: int) -> tuple[str, str]:
    return f"sweep_setting_{index}", f"sweep_values_{index}"


def put_sweep(axes: dict[int, tuple[str, str]]) -> None:
    """Fill the sweep form: axis index -> (setting, values as typed); the other axes are cleared."""
    from core import sweeps

    for index in range(sweeps.MAX_AXES):
        setting_key, values_key = _sweep_keys(index)
        name, text = axes.get(index, (NO_SETTING, ""))
        st.session_state[setting_key], st.session_state[values_key] = name, text


def sweep_texts() -> dict[int, tuple[str, str]]:
    """The sweep form's axes as typed (axis index -> (setting, values)), for those with a setting chosen."""
    from core import sweeps

    axes = {}
    for index in range(sweeps.MAX_AXES):
        setting_key, values_key = _sweep_keys(index)
        name = st.session_state.get(setting_key, NO_SETTING)
        if name != NO_SETTING:
            axes[index] = (name, st.session_state.get(values_key) or "")
    return axes


def sweep_form(config_class=TrainConfig) -> tuple[list, dict[str, str]]:
    """Up to two settings and their values, checked as typed; returns the axes and a message per bad input."""
    from core import sweeps  # the grid rules live with the sweeps

    labels = {name: next(s.label for s in config_class.SETTINGS if s.name == name) for name in sweeps.SWEPT}
    axes, errors = [], {}
    for index in range(sweeps.MAX_AXES):
        setting_column, values_column = st.columns([2, 3])
        setting_key, values_key = _sweep_keys(index)
        name = setting_column.selectbox(f"Setting {index + 1}", [NO_SETTING, *sweeps.SWEPT], key=setting_key,
                                        format_func=lambda value: labels.get(value, value), **KEEP)
        text = values_column.text_input(f"Values {index + 1}", key=values_key, **KEEP,
                                        placeholder="e.g. 0.05, 0.1, 0.5", disabled=name == NO_SETTING,
                                        help="Separated by commas. Layer sizes as 128-64; choices by name.")
        if name == NO_SETTING:
            continue
        try:
            axes.append(sweeps.parse_axis(name, text))
        except ValueError as error:  # worded with the setting's name; the page speaks in its labels
            message = str(error).replace(name, labels[name], 1)
            errors[f"values_{index}"] = message[0].upper() + message[1:] + "."
            st.error(errors[f"values_{index}"], icon=":material/error:")
    return axes, errors
