"""Settings as a link: the query of an address that opens the Train page with these settings and this sweep.

A link names only the settings that differ from the defaults, by their names, in the words a person types
(`?learning_rate=0.1&hidden_units=256,128&augment=on`), and a sweep's axes one parameter each
(`sweep_1=learning_rate:0.05,0.1,0.5&sweep_2=batch_size:50,200`). Written and read back here, so the Train page,
the Runs page's links, the CLI and the tests share one format. Each value is read the way the sweeps read
what a person types (core/sweeps.py's parse_value: the digits 0 to 9 only) and checked by its setting's
declaration; a parameter that cannot be used is returned with why (a typed reason), never dropped in silence,
and the others still apply.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from core import sweeps
from core.config import PRESETS, Setting, TrainConfig

PRESET = "preset"  # ?preset=cnn: start from a preset (as the CLI's --preset), the link's settings on top
SWEEP_AXES = tuple(f"sweep_{index}" for index in range(1, sweeps.MAX_AXES + 1))  # sweep_1, sweep_2
AXIS_SEPARATOR = ":"  # sweep_1=learning_rate:0.05,0.1,0.5


class Unused(StrEnum):
    """Why a parameter of a link was not used."""

    UNKNOWN = "unknown"  # not a setting, a preset or a sweep axis
    BAD_VALUE = "bad value"  # a value its setting does not allow (the detail says why)
    NOT_APPLIED = "not applied"  # a setting that means nothing with the link's other settings (XLA with session)
    NOT_OFFERED = "not offered"  # a choice the page does not offer (multi-worker, a server's files)


@dataclass(frozen=True)
class UnusedParam:
    """One parameter of a link that was left out, and why."""

    param: str  # as the link spells it
    text: str  # its value, as the link spells it
    why: Unused
    setting: str | None = None  # the setting it names, when it names one
    detail: str = ""  # BAD_VALUE: what is wrong, from the setting's own check
    suggestion: str | None = None  # UNKNOWN: the setting it most looks like (learningrate -> learning_rate)


@dataclass(frozen=True)
class Link:
    """What a link asks for: every setting's value (the defaults, or its preset, with its settings on top), the
    settings it gave, its sweep's axes as typed, and the parameters it could not use."""

    values: dict
    given: tuple[str, ...]
    sweep: dict[int, tuple[str, str]]  # axis index (0, 1) -> (setting, values as typed)
    unused: tuple[UnusedParam, ...]


def value_text(setting: Setting, value) -> str:
    """A value as a link writes it: 0.1, 256,128 for layers, on/off/auto for the choices that are not text."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    if setting.choices and not isinstance(value, str):
        return setting.choice_labels.get(value, str(value)).lower()
    if isinstance(value, float):
        short = f"{value:g}"  # 0.001, 1e-05; repr where :g would round (a learning rate typed on the CLI)
        return short if float(short) == value else repr(value)
    return str(value)


def parse_link_value(setting: Setting, text: str):
    """A setting's value from a link's text; ValueError says what is wrong, as the sweeps' parse_value does."""
    if setting.widget in ("text", "upload"):  # a path, or an upload's SHA-256: none when empty
        value = text.strip() or None
        setting.check(value)
        return value
    return sweeps.parse_value(setting, text)  # layers as the CLI writes them (256,128) or as a sweep (256-128)


def settings_query(values: Mapping, config_class=TrainConfig, explicit: bool = False) -> dict[str, str]:
    """The settings of `values` (a config or a dict) that differ from the defaults and apply, as a link's query.

    An empty query leaves a Train page that is open as it is, so `explicit` names the article's preset when
    nothing differs: a link that must set the form to the defaults (a run of the article's settings).
    """
    values = values.to_dict() if hasattr(values, "to_dict") else dict(values)
    defaults = config_class().to_dict()
    query = {setting.name: value_text(setting, values[setting.name]) for setting in config_class.SETTINGS
             if values.get(setting.name) is not None and values[setting.name] != defaults[setting.name]
             and setting.applies(values)}
    if explicit and not query:
        return {PRESET: "article"}
    return query


def sweep_query(axes: Mapping[int, tuple[str, str]]) -> dict[str, str]:
    """A sweep's axes as typed in the form (index -> (setting, values)) as a link's query: sweep_1=lr:0.1,0.5."""
    return {SWEEP_AXES[index]: f"{name}{AXIS_SEPARATOR}{text.strip()}" for index, (name, text) in sorted(axes.items())
            if text.strip()}


def read_link(query: Mapping[str, str], config_class=TrainConfig,
              withheld: Mapping[str, tuple] | None = None) -> Link:
    """Read a link's query: each setting checked by its declaration, each problem named; the rest applies.

    `withheld` names choices the page does not offer (a setting name -> its refused values). A setting given
    where it does not apply (XLA with the session engine) is left out too, so that the form shows what the link
    will train.
    """
    by_name = {setting.name: setting for setting in config_class.SETTINGS}
    defaults = config_class().to_dict()
    values, given, sweep, unused = dict(defaults), {}, {}, []
    for param, text in query.items():
        name = param.strip().lower().replace("-", "_")
        if name == PRESET:
            _read_preset(param, text, values, unused)
        elif name in SWEEP_AXES:
            _read_axis(param, text, SWEEP_AXES.index(name), sweep, unused)
        elif name in by_name:
            try:
                given[name] = (param, text, parse_link_value(by_name[name], text))
            except ValueError as error:
                unused.append(UnusedParam(param, text, Unused.BAD_VALUE, name, str(error)))
        else:
            close = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.8)  # typos, not any word
            unused.append(UnusedParam(param, text, Unused.UNKNOWN, suggestion=close[0] if close else None))
    for name, (param, text, value) in list(given.items()):
        if value in (withheld or {}).get(name, ()):
            del given[name]
            unused.append(UnusedParam(param, text, Unused.NOT_OFFERED, name))
        else:
            values[name] = value
    # In declaration order, so that a setting left out takes the ones that depend on it along (engine session
    # leaves distribute out, and with it CPU replicas).
    for setting in config_class.SETTINGS:
        if setting.name in given and not setting.applies(values):
            param, text, _ = given.pop(setting.name)
            values[setting.name] = defaults[setting.name]
            unused.append(UnusedParam(param, text, Unused.NOT_APPLIED, setting.name))
    return Link(values, tuple(given), sweep, tuple(unused))


def _read_preset(param: str, text: str, values: dict, unused: list) -> None:
    """?preset=cnn: the preset's settings replace the defaults (the link's own settings go on top)."""
    name = text.strip().lower()
    if name not in PRESETS:
        unused.append(UnusedParam(param, text, Unused.BAD_VALUE, detail=(
            f"preset must be one of {', '.join(PRESETS)}; got {text!r}")))
        return
    values.update({key: list(value) if isinstance(value, tuple) else value for key, value in PRESETS[name].items()})


def _read_axis(param: str, text: str, index: int, sweep: dict, unused: list) -> None:
    """One sweep_N parameter: its setting, checked here, and its values as typed, which the sweep form reads
    with parse_axis, so that a bad value is refused in the same words as if typed."""
    name, separator, values = text.partition(AXIS_SEPARATOR)
    name = name.strip().replace("-", "_")
    if not separator:
        example = f"learning_rate{AXIS_SEPARATOR}0.05,0.1,0.5"
        unused.append(UnusedParam(param, text, Unused.BAD_VALUE, detail=(
            f"{param} takes a setting and its values, such as {example}; got {text!r}")))
        return
    if name not in sweeps.SWEPT:
        try:
            sweeps.parse_axis(name, values)  # refuses the setting in the words the CLI's --sweep uses
        except ValueError as error:
            unused.append(UnusedParam(param, text, Unused.BAD_VALUE, detail=str(error)))
            return
    sweep[index] = (name, values)
