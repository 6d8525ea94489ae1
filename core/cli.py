"""Command line: train one run and report it. `python -m core.cli --help` lists every flag.

The flags are derived from core.config's settings: one flag per setting, with its choices, default and help,
so a new setting gets its flag without an edit here.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from core import fine_tune, sweeps
from core.access import OPERATOR
from core.engines import distribute
from core.config import PRESETS, Setting, TrainConfig, config_from_preset
from core.data import DatasetError, check_data_path, load_dataset
from core.cli_cluster import PROG, place
from core.export_script import run_script
from core.records import RunNotFound, RunState, RunStoreError
from core.store import create_run, default_runs_dir, load_run

BAR_WIDTH = 30
MAX_CLUSTER_WAIT_SECONDS = 86_400


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one line and exit code 2, not the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _integers(text: str) -> list[int]:
    parts = [part for part in text.replace(" ", ",").split(",") if part]
    if not parts or not all(sweeps.WHOLE_NUMBER.fullmatch(part) for part in parts):
        raise argparse.ArgumentTypeError(f"expected whole numbers written with the digits 0 to 9, such as 128,128; "
                                         f"got {text!r}")
    return [int(part) for part in parts]


def _number(kind: type):
    """A flag's type for an int or float setting: digits 0 to 9 only (Python's own int() and float() also read
    full-width and other Unicode digits, which a person would not mean); the range is checked with the config."""
    pattern, example = (sweeps.WHOLE_NUMBER, "200") if kind is int else (sweeps.NUMBER, "0.05 or 1e-3")

    def parse(text: str):
        if not pattern.fullmatch(text.strip()):
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun} written with the digits 0 to 9, such as {example}; "
                                             f"got {text!r}")
        return kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _cluster_wait(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is None or not 0 < seconds <= MAX_CLUSTER_WAIT_SECONDS:
        raise argparse.ArgumentTypeError(f"expected seconds above 0 and at most {MAX_CLUSTER_WAIT_SECONDS:,} "
                                         f"(a day), such as 300; got {text!r}")
    return seconds


def _help(setting: Setting, config_class) -> str:
    default = getattr(config_class(), setting.name)
    shown = ",".join(map(str, default)) if isinstance(default, list) else default
    labels = setting.choice_labels
    words = f"{setting.help} Allowed: {setting.describe_range()}." if setting.has_limits else setting.help
    if labels and setting.kind is bool:
        return f"{words} Default: {labels.get(default, default)}."
    return f"{words} Default: {'unset' if shown is None else shown}."


def add_setting_flag(parser: argparse.ArgumentParser, setting: Setting, config_class) -> None:
    """One flag for one setting; defaults stay None so that only the flags given override the config's."""
    flag, help_text = setting.cli_flag, _help(setting, config_class).replace("%", "%%")
    if setting.kind is bool:
        parser.add_argument(flag, dest=setting.name, action=argparse.BooleanOptionalAction, default=None,
                            help=help_text)
    elif setting.kind is list:
        parser.add_argument(flag, dest=setting.name, type=_integers, default=None, help=help_text)
    elif setting.choices:
        parser.add_argument(flag, dest=setting.name, choices=setting.choices, default=None, help=help_text)
    else:
        parser.add_argument(flag, dest=setting.name, type=_number(setting.kind) if setting.kind in (int, float)
                            else setting.kind, default=None, help=help_text)


def build_parser(config_class=TrainConfig) -> argparse.ArgumentParser:
    """Flags for every setting of `config_class`, defaulting to the article's settings."""
    parser = OneLineParser(prog=PROG, description="Train the hybrid Keras-on-TensorFlow network.")
    for setting in config_class.SETTINGS:
        add_setting_flag(parser, setting, config_class)
    parser.add_argument("--preset", choices=tuple(PRESETS), default=None,
                        help="start from a preset instead of the article's settings (cnn: the small CNN with "
                             "augmentation); the other flags change it")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="where run folders go (default ./runs or $HYBRID_LAB_RUNS)")
    parser.add_argument("--json", action="store_true", help="print one JSON line with the result at the end")
    parser.add_argument("--sweep", action="append", metavar="SETTING=V1,V2,...", default=None,
                        help="train a grid of runs over this setting's values (give --sweep twice for two settings); "
                             "the other flags set everything else, e.g. --sweep learning_rate=0.05,0.1,0.5 "
                             "--sweep batch_size=50,200")
    parser.add_argument("--cluster-wait", type=_cluster_wait, default=distribute.CLUSTER_WAIT_SECONDS,
                        metavar="SECONDS",
                        help="distribute multi-worker: how long to wait for the other workers in TF_CONFIG to start "
                             f"before giving up (default {distribute.CLUSTER_WAIT_SECONDS:g})")
    parser.add_argument("--list", action="store_true",
                        help="list the runs (newest first) with their state, queue position and test accuracy, "
                             "and exit: the same runs the app shows, queued ones included")
    parser.add_argument("--export-script", metavar="RUN_ID", default=None,
                        help="print the run as one standalone Python script in the article's style (needs only "
                             "tensorflow, keras and numpy; tf_keras for the session engine) and exit")
    parser.add_argument("--output", type=Path, metavar="FILE", default=None,
                        help="with --export-script: write the script to FILE instead of printing it")
    return parser


def list_lines(runs_dir: Path) -> list[str]:
    """One line per run for --list: id, state (with its place in the queue), steps, test accuracy."""
    from core import queue
    from core.store import list_runs

    lines = []
    for run in list_runs(runs_dir):
        state = str(run.state)
        if run.state is RunState.QUEUED:
            place = queue.position(run.run_id, runs_dir)
            state = f"queued #{place}" if place else state
        accuracy = f"{run.test_accuracy:.4f}" if run.test_accuracy is not None else "-"
        detail = run.damaged or (f"step {run.step:,} of {run.total_steps:,}" if run.state.active else run.message)
        lines.append(f"{run.run_id}  {state:<20} test accuracy {accuracy:<7} {detail}")
    return lines


def config_from_args(args: argparse.Namespace, config_class=TrainConfig):
    """The config the flags describe (ValueError names a bad value); --data alone implies source 'path'."""
    given = {setting.name: getattr(args, setting.name) for setting in config_class.SETTINGS
             if getattr(args, setting.name, None) is not None}
    if given.get("data_path") and "source" not in given:
        given["source"] = "path"
    if getattr(args, "preset", None):
        return config_from_preset(args.preset, **given)
    return config_class(**given)


def progress_line(progress) -> str:
    """A text progress bar: steps, steps/s, time left and the latest loss."""
    filled = int(BAR_WIDTH * progress.fraction)
    left = progress.seconds_left
    return (f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {progress.step}/{progress.total_steps} steps "
            f"{progress.steps_per_second:,.0f} steps/s {left:,.1f} s left  loss {progress.loss:.4f}   ")


def main(argv: list[str] | None = None) -> int:
    """Parse flags, train, print the outcome; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    runs_dir = args.runs_dir or default_runs_dir()
    if args.list:
        print("\n".join(list_lines(runs_dir)) or f"no runs in {runs_dir}")
        return 0
    if args.export_script is not None:
        return export_script(parser, args, runs_dir)
    if args.output is not None:
        parser.error("--output goes with --export-script RUN_ID: it names the file the script is written to")
    config, configs = checked_configs(parser, args, runs_dir)
    try:
        cluster = place(configs, args.cluster_wait)
    except distribute.ClusterJoinFailed as error:
        # TensorFlow's runtime, left in error by the failed join, logs a page more when this process exits
        # normally; nothing has been written, so end now, with the sentence as the last line.
        print(f"{PROG}: error: {error}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(2)
    except ValueError as error:  # DistributeError: no TF_CONFIG, a malformed one, a cluster that never formed
        parser.error(str(error))
    # The data is read and checked before any run folder exists: a bad file is one line and exit code 2,
    # and leaves nothing behind.
    try:
        dataset = load_dataset(config.dataset, config.source, config.data_path, config.upload, runs_dir)
    except DatasetError as error:
        parser.error(str(error))
    if cluster and not cluster.is_chief:
        return train_as_worker(config, dataset, cluster, args.json)
    sweep = sweeps.new_sweep_name() if args.sweep else None
    if sweep:
        print(f"sweep {sweep}: {len(configs)} runs", file=sys.stderr)
    outcomes = []
    for each in configs:
        try:
            run = create_run(each, runs_dir, owner=OPERATOR, sweep=sweep)  # the command line is the operator's
        except RunStoreError as error:
            parser.error(str(error))
        outcomes.append(train_and_report(run, each, dataset, runs_dir, args.json))
    return 0 if all(state in (RunState.COMPLETED, RunState.STOPPED) for state in outcomes) else 1


def checked_configs(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    runs_dir: Path) -> tuple[TrainConfig, list[TrainConfig]]:
    """The flags' config and the runs to train (one, or a sweep's grid), each checked as the service checks
    a run; a mistake is one line and exit code 2 (parser.error)."""
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    try:
        check_data_path(config.source, config.data_path)
    except DatasetError as error:
        parser.error(f"--data {error}")
    try:
        axes = [sweeps.parse_flag(text) for text in args.sweep or []]
        configs = sweeps.grid(config, axes) if axes else [config]
        for each in configs:  # the run to start from and the drawings, as the service checks them
            fine_tune.check(each, runs_dir, OPERATOR)
    except ValueError as error:
        parser.error(str(error))
    return config, configs


def export_script(parser: argparse.ArgumentParser, args: argparse.Namespace, runs_dir: Path) -> int:
    """--export-script: print the run's standalone script, or write it to --output; a bad run is one line, exit 2."""
    others = [setting.cli_flag for setting in TrainConfig.SETTINGS if getattr(args, setting.name) is not None]
    others += [flag for flag, given in (("--preset", args.preset), ("--sweep", args.sweep), ("--json", args.json))
               if given]
    if others:
        parser.error(f"--export-script writes the run's own settings; leave out {', '.join(others)}")
    try:
        script = run_script(load_run(args.export_script, runs_dir))
    except RunNotFound as error:
        parser.error(f"{error}; {PROG} --list lists the runs in {runs_dir}")
    except ValueError as error:  # ExportError: a damaged run folder
        parser.error(str(error))
    if args.output is None:
        sys.stdout.write(script)
        return 0
    try:
        args.output.write_text(script)
    except OSError as error:
        parser.error(f"cannot write the script to {args.output}: {error.strerror or error}")
    print(f"wrote {args.output}: python {args.output} --data mnist.npz", file=sys.stderr)
    return 0


def train_as_worker(config, dataset, cluster, as_json: bool) -> int:
    """A multi-worker run's other workers: train the same steps with the chief, in a scratch folder that is
    removed at the end, since the chief alone writes the run folder."""
    print(f"worker {cluster.index} of {cluster.workers}: training with the chief, which writes the "
          "run folder", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="hybrid-lab-worker-") as scratch:
        run = create_run(config, Path(scratch))
        state = train_and_report(run, config, dataset, Path(scratch), as_json=False, chief=False)
    if as_json:
        print(json.dumps({"worker": cluster.index, "workers": cluster.workers, "status": str(state),
                          "run_dir": None}), flush=True)
    return 0 if state in (RunState.COMPLETED, RunState.STOPPED) else 1


def train_and_report(run, config, dataset, runs_dir: Path, as_json: bool, chief: bool = True) -> RunState:
    """Train one run in this process with a progress bar, then say how it ended (and print its JSON line)."""
    # The first Ctrl-C asks the run to stop after its current chunk (kept as "stopped"); a second one quits.
    interrupted = threading.Event()

    def on_interrupt(signum, frame):
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        print("\nstopping after the current chunk of steps (Ctrl-C again to quit now)", file=sys.stderr)

    signal.signal(signal.SIGINT, on_interrupt)
    where = f"into {runs_dir}" if chief else "alongside the chief"
    print(f"training {config.describe_layers()} ({config.engine} engine) {where}", file=sys.stderr)
    from core.training import train  # deferred: imports TensorFlow

    run = train(config, run=run, dataset=dataset, should_stop=interrupted.is_set,
                on_progress=lambda p: print(progress_line(p), end="", file=sys.stderr, flush=True))
    print(file=sys.stderr)
    summary = run.summary
    print(f"{run.state}: {run.message}", file=sys.stderr)
    if run.data_description:
        print(f"data: {run.data_description}", file=sys.stderr)
    print(f"run folder: {run.path}" if chief else "run folder: the chief's", file=sys.stderr)
    if as_json:
        print(json.dumps({
            "run_id": run.run_id, "run_dir": str(run.path), "status": str(run.state),
            "test_accuracy": run.test_accuracy, "steps": run.step,
            "seconds": summary.seconds if summary else None,
            "steps_per_second": summary.steps_per_second if summary else None,
            "data_source": run.data_description, "message": run.message,
            "sweep": run.status.sweep,
            "distribute": summary.distribute if summary else config.distribute,
            "replicas": summary.replicas if summary else None,
            "workers": summary.workers if summary else None,
        }), flush=True)
    return run.state


if __name__ == "__main__":
    sys.exit(main())
