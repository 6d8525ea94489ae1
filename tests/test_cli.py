"""Tests for the command line, `python -m core.cli`, run as a user would run it: in a subprocess."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.access import OPERATOR
from core.cli import PROG, build_parser, config_from_args
from core.config import SETTINGS, TrainConfig
from core.records import RunState
from core.store import create_run, load_run
from tests.factories import TINY, make_run

REPO_ROOT = Path(__file__).resolve().parents[1]
JSON_KEYS = {"run_id", "run_dir", "status", "test_accuracy", "steps", "seconds", "steps_per_second", "data_source"}


def run_cli(*flags: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.cli", *flags], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def flags_for(config: TrainConfig) -> list[str]:
    """The flags a person types for `config`: one per setting that differs from the default."""
    flags = []
    for setting in SETTINGS:
        value = getattr(config, setting.name)
        if value == setting.default:
            continue
        if isinstance(value, list):
            flags += [setting.cli_flag, ",".join(map(str, value))]
        elif isinstance(value, bool):
            flags.append(setting.cli_flag if value else "--no-" + setting.cli_flag.removeprefix("--"))
        else:
            flags += [setting.cli_flag, str(value)]
    return flags


def test_flags_for_tiny_are_what_a_person_would_type():
    assert flags_for(TINY) == ["--hidden-units", "16", "--steps", "35", "--eval-every", "10", "--source", "offline"]
    assert config_from_args(build_parser().parse_args(flags_for(TINY))) == TINY


def test_a_tiny_run_prints_one_json_line(tmp_path):
    runs_dir = tmp_path / "runs"

    result = run_cli(*flags_for(TINY), "--learning-rate", "0.3", "--seed", "5", "--json", "--runs-dir", str(runs_dir))

    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1  # progress and messages go to stderr; stdout is for the machine-readable result
    report = json.loads(lines[-1])
    assert JSON_KEYS <= set(report)
    assert report["status"] == "completed"
    assert report["steps"] == TINY.steps
    assert 0.0 <= report["test_accuracy"] <= 1.0
    assert report["seconds"] > 0 and report["steps_per_second"] > 0
    assert report["data_source"].startswith("offline sample: 5,000 real MNIST digits")
    assert Path(report["run_dir"]) == runs_dir / report["run_id"]
    # The folder the CLI names holds the run, with the flags' config and the same figures.
    run = load_run(report["run_id"], runs_dir)
    assert run.state == "completed"
    assert run.config == TINY.replace(learning_rate=0.3, seed=5)
    assert run.summary.test_accuracy == report["test_accuracy"]
    assert run.summary.steps == TINY.steps
    assert run.has_model
    assert (run.status.owner, run.status.owner_name) == (OPERATOR.key, "operator")  # the command line's runs
    assert "completed: test accuracy" in result.stderr
    assert f"run folder: {run.path}" in result.stderr


BAD_FLAGS = [  # flags, the name the message must give, the value it must quote back
    (["--learning-rate", "20"], "learning_rate", "20"),
    (["--hidden-units", "5"], "hidden_units", "5"),
    (["--hidden-units", "abc"], "hidden-units", "abc"),
    (["--activation", "foo"], "activation", "foo"),
    (["--batch-size", "0"], "batch_size", "0"),
    (["--steps", "0"], "steps", "0"),
    (["--steps", "300000"], "steps must be from 1 to 200,000", "300,000"),
    (["--xla", "--engine", "sesion"], "--engine", "sesion"),
    (["--data", "/nonexistent"], "--data", "/nonexistent"),
    (["--dropout-rate", "0.95"], "dropout_rate", "0.95"),
    (["--engine", "session", "--xla"], "xla", "session"),
    # Python's int() and float() read full-width and other Unicode digits; a person typing them meant something else.
    (["--learning-rate", "０.５"], "--learning-rate", "０.５"),
    (["--steps", "１"], "--steps", "１"),
    (["--hidden-units", "１２８"], "--hidden-units", "１２８"),
]


@pytest.mark.parametrize(("flags", "named", "quoted"), BAD_FLAGS, ids=[" ".join(flags) for flags, _, _ in BAD_FLAGS])
def test_a_bad_value_exits_2_with_one_line_naming_it(tmp_path, flags, named, quoted):
    runs_dir = tmp_path / "runs"

    result = run_cli(*flags, "--json", "--runs-dir", str(runs_dir), timeout=30)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"  # no usage text, no TensorFlow log
    assert lines[0].startswith("python -m core.cli: error:")
    assert named in lines[0] and quoted in lines[0]
    assert result.stdout == ""
    assert not runs_dir.exists()  # nothing was created for a run that never started


def test_data_that_cannot_be_read_exits_2_in_one_line_before_any_run_folder_exists(tmp_path):
    empty = tmp_path / "empty-idx-folder"
    empty.mkdir()

    result = run_cli("--data", str(empty), "--steps", "5", "--json", "--runs-dir", str(tmp_path / "runs"))

    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("python -m core.cli: error:") and "train-images-idx3-ubyte" in line
    assert result.stdout == ""
    assert not (tmp_path / "runs").exists()  # the data is checked before the run folder is made


def test_list_shows_every_run_with_its_state_and_queue_place(tmp_path):
    runs_dir = tmp_path / "runs"
    done = make_run(runs_dir, TINY, test_accuracy=0.5)
    waiting = create_run(TINY, runs_dir, state=RunState.QUEUED)

    result = run_cli("--list", "--runs-dir", str(runs_dir), timeout=30)

    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(waiting.run_id) and "queued #1" in lines[0]
    assert lines[1].startswith(done.run_id) and "completed" in lines[1] and "0.5000" in lines[1]


def test_flags_default_to_the_articles_config():
    config = config_from_args(build_parser().parse_args([]))

    assert config == TrainConfig()
    assert config.describe_layers() == "784-128-128-10"


def test_data_flag_implies_the_path_source():
    config = config_from_args(build_parser().parse_args(["--data", "/data/mnist.npz", "--hidden-units", "64, 32"]))

    assert config.source == "path" and config.data_path == "/data/mnist.npz"
    assert config.hidden_units == [64, 32]


def test_every_config_field_has_a_flag():
    flags = set(build_parser()._option_string_actions)
    renamed = {"data_path": "--data"}

    missing = [field.name for field in dataclasses.fields(TrainConfig)
               if renamed.get(field.name, "--" + field.name.replace("_", "-")) not in flags]

    assert missing == []


def test_help_lists_every_settings_flag():
    result = run_cli("--help", timeout=30)

    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: {PROG}")
    for setting in SETTINGS:
        assert setting.cli_flag in result.stdout, f"{setting.cli_flag} is not in --help"
    assert "--no-xla" in result.stdout


def test_a_sweep_trains_every_combination_and_prints_a_json_line_for_each(tmp_path):
    runs_dir = tmp_path / "runs"

    result = run_cli(*flags_for(TINY), "--steps", "20", "--sweep", "learning_rate=0.1,0.5", "--sweep",
                     "batch-size=20,50", "--json", "--runs-dir", str(runs_dir))

    assert result.returncode == 0, result.stderr[-2000:]
    reports = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(reports) == 4 and len({report["sweep"] for report in reports}) == 1
    runs = [load_run(report["run_id"], runs_dir) for report in reports]
    assert [(run.config.learning_rate, run.config.batch_size) for run in runs] == [(0.1, 20), (0.1, 50), (0.5, 20),
                                                                                     (0.5, 50)]
    assert all(run.state == "completed" and run.status.sweep == reports[0]["sweep"] for run in runs)
    assert {run.status.owner for run in runs} == {OPERATOR.key}


def test_a_bad_sweep_value_exits_2_naming_it_before_anything_trains(tmp_path):
    result = run_cli("--sweep", "learning_rate=0.1,fast", "--runs-dir", str(tmp_path / "runs"), timeout=30)

    assert result.returncode == 2
    assert "'fast' is not a number" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_preset_is_the_starting_point_and_flags_change_it():
    config = config_from_args(build_parser().parse_args(["--preset", "cnn", "--steps", "20"]))

    assert config.architecture == "cnn" and config.optimizer == "adam" and config.augment is True
    assert config.steps == 20
    assert config_from_args(build_parser().parse_args(["--preset", "article"])) == TrainConfig()


@pytest.mark.parametrize("seconds", ["0", "-5", "nan", "inf", "1e9", "soon"])
def test_a_cluster_wait_that_is_not_a_time_to_wait_is_one_line(tmp_path, seconds):
    # TensorFlow is told this deadline in whole milliseconds: 0 would mean its own default, inf cannot be told.
    result = run_cli(f"--cluster-wait={seconds}", "--source", "offline", "--steps", "5", "--runs-dir",
                     str(tmp_path / "runs"), timeout=60)

    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line == (f"{PROG}: error: argument --cluster-wait: expected seconds above 0 and at most 86,400 (a day), "
                    f"such as 300; got {seconds!r}")
    assert not (tmp_path / "runs").exists()
