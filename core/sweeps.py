"""Sweeps: a grid of runs over up to two settings, queued together under one name.

A sweep is no new kind of thing on disk: each of its runs is an ordinary run folder whose status names the
sweep, so the run store, the queue, TensorBoard (HParams) and the Runs page see them as they see any run.
Values are read the way each setting declares them (core/config.py) and checked against it before anything
is queued; the CLI's --sweep and the Train page's sweep form both read them here. What is not a value is
refused by name, never dropped or guessed: an empty item, a number in other digits than 0-9, more values than
a sweep has runs. So is a grid that would waste runs: a setting swept where it does not apply (CPU replicas
without mirrored), or two runs that would train the same.
"""

from __future__ import annotations

import itertools
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from core.config import SETTINGS_BY_NAME, Setting
from core.run_folder import Run
from core.store import list_runs

MAX_AXES = 2
MAX_SWEEP_RUNS = 16
# Settings a sweep cannot vary: where the data comes from is one choice for the whole sweep.
NOT_SWEPT = ("data_path", "source", "dataset", "upload")
SWEPT = tuple(name for name in SETTINGS_BY_NAME if name not in NOT_SWEPT)


@dataclass(frozen=True)
class Axis:
    """One setting of a sweep and the values it takes."""

    setting: str
    values: tuple


# How a person writes a number: ASCII digits only. Python's int() and float() also take other scripts' digits
# ("０.５" is 0.5 to them), underscores ("1_0") and words ("nan", "infinity"), which nobody means in a sweep.
WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
# 128-64, 256x32, 128 - 64; and 128,64 in a link (core/links.py), as the CLI writes them. A sweep never
# passes a comma here: it splits its values at commas first.
LAYER_SIZES = re.compile(r"[0-9]+(\s*[-xX,]\s*[0-9]+)*")
LAYER_SEPARATOR = re.compile(r"\s*[-xX,]\s*")


def parse_value(setting: Setting, text: str):
    """One value of a setting, from how a person types it ("0.05", "adam", "on", "128-64"); ValueError if bad."""
    text = text.strip()
    if setting.kind is list:
        if not LAYER_SIZES.fullmatch(text):
            raise ValueError(f"{setting.name}: {text!r} is not a list of layer sizes written with the digits 0 to 9, "
                             "such as 128-64")
        value = [int(part) for part in LAYER_SEPARATOR.split(text)]
    elif setting.choices:
        # "null" as describe_range() says it (and config.json writes it), "none" as Python does, or the label.
        by_text = {("null" if choice is None else str(choice).lower()): choice for choice in setting.choices}
        by_text.update({"none": None} if None in setting.choices else {})
        by_text.update({label.lower(): choice for choice, label in setting.choice_labels.items()})
        if text.lower() not in by_text:
            raise ValueError(f"{setting.name}: {text!r} is not {setting.describe_range()}")
        value = by_text[text.lower()]
    elif setting.kind is str:  # a run to start from, a snapshot of drawings: checked by the setting's pattern
        value = None if setting.nullable and text.lower() in ("null", "none") else text
    elif setting.kind is int:
        if not WHOLE_NUMBER.fullmatch(text):
            raise ValueError(f"{setting.name}: {text!r} is not a whole number written with the digits 0 to 9, such "
                             f"as {setting.default}")
        value = int(text)
    else:
        if not NUMBER.fullmatch(text):
            raise ValueError(f"{setting.name}: {text!r} is not a number written with the digits 0 to 9, such as "
                             "0.05 or 1e-3")
        value = float(text)
    setting.check(value)
    return value


def parse_axis(setting_name: str, values_text: str) -> Axis:
    """An axis from a setting's name and its values separated by commas; ValueError says what is wrong.

    Every item must be a value: an empty one (two commas in a row, one at the end) is refused by its place,
    not dropped. More items than a sweep has runs are refused by their count before any is read.
    """
    if setting_name not in SWEPT:
        raise ValueError(f"a sweep varies one of {', '.join(SWEPT)}; got {setting_name!r}")
    setting = SETTINGS_BY_NAME[setting_name]
    items = values_text.split(",")
    if not "".join(items).strip():
        raise ValueError(f"{setting_name}: give at least one value, separated by commas")
    if len(items) > MAX_SWEEP_RUNS:
        raise ValueError(f"{setting_name}: {len(items):,} values are more than one sweep takes: at most "
                         f"{MAX_SWEEP_RUNS} runs go into one sweep; give fewer values")
    for place, item in enumerate(items, start=1):
        if not item.strip():
            raise ValueError(f"{setting_name}: value {place} of {len(items)} is empty (two commas in a row, or one "
                             "at the end); remove the extra comma or put a value there")
    values = []
    for item in items:
        value = parse_value(setting, item)
        if value not in values:  # "0.1, 1e-1" is one run
            values.append(value)
    return Axis(setting_name, tuple(values))


def parse_flag(text: str) -> Axis:
    """The CLI's --sweep SETTING=V1,V2,... (the setting as its flag or its name: learning-rate or learning_rate)."""
    name, equals, values = text.partition("=")
    if not equals:
        raise ValueError(f"--sweep takes SETTING=VALUE,VALUE...; got {text!r}")
    return parse_axis(name.strip().lstrip("-").replace("-", "_"), values)


def shown(setting: Setting, value) -> str:
    """A value as a person types it in a sweep: 128-64 for layers, a choice's label when it is not text."""
    if isinstance(value, list):
        return "-".join(map(str, value))
    if setting.choices and not isinstance(value, str):
        return setting.choice_labels.get(value, str(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_label(config, axes: list[Axis]) -> str:
    """Which run of a sweep this is, in words: 'the run with learning_rate 0.1, batch_size 50'."""
    values = (shown(SETTINGS_BY_NAME[axis.setting], getattr(config, axis.setting)) for axis in axes)
    return "the run with " + ", ".join(f"{axis.setting} {value}" for axis, value in zip(axes, values))


def grid(config, axes: list[Axis]) -> list:
    """Every combination of the axes' values applied to `config` (validated), first axis slowest.

    Refused, by what is wrong: more than MAX_AXES settings, one setting twice, more than MAX_SWEEP_RUNS runs,
    a combination the settings forbid, a swept setting that applies to none of the runs (CPU replicas without
    mirrored), and two runs that would train the same (they differ only in a setting that does not apply).
    """
    if not 1 <= len(axes) <= MAX_AXES:
        raise ValueError(f"a sweep varies 1 or {MAX_AXES} settings; got {len(axes)}")
    if len({axis.setting for axis in axes}) != len(axes):
        raise ValueError("a sweep varies two different settings; the same one was given twice")
    combinations = list(itertools.product(*(axis.values for axis in axes)))
    if len(combinations) > MAX_SWEEP_RUNS:
        raise ValueError(f"this sweep would be {len(combinations)} runs; at most {MAX_SWEEP_RUNS} go into one sweep")
    configs = [config.replace(**{axis.setting: value for axis, value in zip(axes, values)}) for values in combinations]
    for axis in axes:
        _check_applies(SETTINGS_BY_NAME[axis.setting], configs)
    _check_distinct(configs, axes)
    return configs


def _depends_on(setting: Setting) -> tuple[Setting, tuple | None]:
    """The setting this one applies with, and the values of it that it needs (None: any value)."""
    other, allowed = setting.only_with
    return SETTINGS_BY_NAME[other], allowed


def _either(values) -> str:
    return " or ".join(dict.fromkeys(repr(value) for value in values))


def _check_applies(setting: Setting, configs: list) -> None:
    """Refuse a swept setting that means nothing in any run of the grid (CPU replicas without mirrored)."""
    if any(setting.applies(each.to_dict()) for each in configs):
        return
    other, allowed = _depends_on(setting)
    if allowed is None:  # the share of your drawings, with no drawings
        raise ValueError(f"{setting.name} applies only with a {other.name}, and this sweep's runs have none: "
                         f"choose a {other.name} first, or sweep another setting")
    held = _either(getattr(each, other.name) for each in configs)
    raise ValueError(f"{setting.name} applies only with {other.name} {_either(allowed)}, and this sweep's runs have "
                     f"{other.name} {held}: set {other.name} to {allowed[0]!r} first, or sweep another setting")


def _needs(other: Setting, allowed: tuple | None, first: bool = False) -> str:
    """What a setting needs of the one it depends on, in words: "distribute 'mirrored'", "a collection"; `first`:
    only its first value (for a suggestion)."""
    if allowed is None:
        return f"a {other.name}"
    return f"{other.name} {allowed[0]!r}" if first else f"{other.name} {_either(allowed)}"


NOT_APPLIED = "(does not apply)"


def _check_distinct(configs: list, axes: list[Axis]) -> None:
    """Refuse two runs that would train the same: equal in every setting that applies to them."""
    seen = {}
    for each in configs:
        values = each.to_dict()
        key = repr([values[setting.name] if setting.applies(values) else NOT_APPLIED for setting in each.SETTINGS])
        first = seen.setdefault(key, each)
        if first is each:
            continue
        # The axes' values are distinct, so the two runs differ in a swept setting, which does not apply to them.
        setting = next(SETTINGS_BY_NAME[axis.setting] for axis in axes
                       if getattr(first, axis.setting) != getattr(each, axis.setting))
        other, allowed = _depends_on(setting)
        raise ValueError(
            f"this sweep would train the same run twice: with {other.name} {getattr(each, other.name)!r}, "
            f"{setting.name} {shown(setting, getattr(first, setting.name))} and "
            f"{shown(setting, getattr(each, setting.name))} make no difference ({setting.name} applies only with "
            f"{_needs(other, allowed)}); sweep {setting.name} alone with {_needs(other, allowed, first=True)}, or "
            f"give {setting.name} one value")


def new_sweep_name() -> str:
    """A name for a new sweep: when it started, and a random part."""
    return f"sweep-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def sweep_runs(name: str, runs_dir: Path | None = None, runs: list[Run] | None = None) -> list[Run]:
    """The runs of a sweep, oldest first (the order they were queued), among `runs` (newest first) if given."""
    listed = list_runs(runs_dir) if runs is None else runs
    return [run for run in reversed(listed) if run.status is not None and run.status.sweep == name]
