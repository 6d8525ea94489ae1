"""Sweeps: a grid of runs over up to two settings, queued together under one name.

A sweep is no new kind of thing on disk: each of its runs is an ordinary run folder whose status names the
sweep, so the run store, the queue, TensorBoard (HParams) and the Runs page see them as they see any run.
Values are read the way each setting declares them (core/config.py) and checked against it before anything
is queued.
"""

from __future__ import annotations

import itertools
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
NOT_SWEPT = ("data_path", "source", "dataset")
SWEPT = tuple(name for name in SETTINGS_BY_NAME if name not in NOT_SWEPT)


@dataclass(frozen=True)
class Axis:
    """One setting of a sweep and the values it takes."""

    setting: str
    values: tuple


def parse_value(setting: Setting, text: str):
    """One value of a setting, from how a person types it ("0.05", "adam", "on", "128-64"); ValueError if bad."""
    text = text.strip()
    if setting.kind is list:
        try:
            value = [int(part) for part in text.replace("x", "-").split("-") if part.strip()]
        except ValueError:
            raise ValueError(f"{setting.name}: {text!r} is not a list of layer sizes such as 128-64") from None
    elif setting.choices:
        by_text = {str(choice).lower(): choice for choice in setting.choices}
        by_text.update({label.lower(): choice for choice, label in setting.choice_labels.items()})
        if text.lower() not in by_text:
            raise ValueError(f"{setting.name}: {text!r} is not {setting.describe_range()}")
        value = by_text[text.lower()]
    else:
        try:
            value = setting.kind(text)
        except ValueError:
            raise ValueError(f"{setting.name}: {text!r} is not a {'whole number' if setting.kind is int else 'number'}") \
                from None
    setting.check(value)
    return value


def parse_axis(setting_name: str, values_text: str) -> Axis:
    """An axis from a setting's name and its values separated by commas; ValueError says what is wrong."""
    if setting_name not in SWEPT:
        raise ValueError(f"a sweep varies one of {', '.join(SWEPT)}; got {setting_name!r}")
    setting = SETTINGS_BY_NAME[setting_name]
    values = [parse_value(setting, part) for part in values_text.split(",") if part.strip()]
    if not values:
        raise ValueError(f"{setting_name}: give at least one value, separated by commas")
    unique = []
    for value in values:
        if value not in unique:
            unique.append(value)
    return Axis(setting_name, tuple(unique))


def parse_flag(text: str) -> Axis:
    """The CLI's --sweep SETTING=V1,V2,... (the setting as its flag or its name: learning-rate or learning_rate)."""
    name, equals, values = text.partition("=")
    if not equals:
        raise ValueError(f"--sweep takes SETTING=VALUE,VALUE...; got {text!r}")
    return parse_axis(name.strip().lstrip("-").replace("-", "_"), values)


def grid(config, axes: list[Axis]) -> list:
    """Every combination of the axes' values applied to `config` (validated), first axis slowest."""
    if not 1 <= len(axes) <= MAX_AXES:
        raise ValueError(f"a sweep varies 1 or {MAX_AXES} settings; got {len(axes)}")
    if len({axis.setting for axis in axes}) != len(axes):
        raise ValueError("a sweep varies two different settings; the same one was given twice")
    combinations = list(itertools.product(*(axis.values for axis in axes)))
    if len(combinations) > MAX_SWEEP_RUNS:
        raise ValueError(f"this sweep would be {len(combinations)} runs; at most {MAX_SWEEP_RUNS} go into one sweep")
    return [config.replace(**{axis.setting: value for axis, value in zip(axes, values)}) for values in combinations]


def new_sweep_name() -> str:
    """A name for a new sweep: when it started, and a random part."""
    return f"sweep-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def sweep_runs(name: str, runs_dir: Path | None = None) -> list[Run]:
    """The runs of a sweep, oldest first (the order they were queued)."""
    return [run for run in reversed(list_runs(runs_dir)) if run.status is not None and run.status.sweep == name]
