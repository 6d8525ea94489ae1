"""Command line: train one run and report it. `python -m core.train --help` lists every flag."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from core.config import ACTIVATIONS, DATASETS, ENGINES, OPTIMIZERS, SOURCES, TrainConfig
from core.data import DatasetError, check_data_path
from core.runs import default_runs_dir

BAR_WIDTH = 30


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one line and exit code 2, not the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _units(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", ",").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layer sizes such as 128,128; got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """Flags for every config field, defaulting to the article's settings."""
    defaults = TrainConfig()
    parser = OneLineParser(prog="python -m core.train", description="Train the hybrid Keras-on-TensorFlow MLP.")
    parser.add_argument("--hidden-units", type=_units, default=defaults.hidden_units,
                        help="units per hidden layer, comma-separated, 1-4 layers of 16-1024 (default 128,128)")
    parser.add_argument("--activation", choices=ACTIVATIONS, default=defaults.activation)
    parser.add_argument("--dropout-rate", type=float, default=defaults.dropout_rate, help="0-0.8 (default 0)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="1e-5-10 (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="1-4096 (default 50)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="1-200000 (default 1000)")
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every, help="steps between evaluations")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--dataset", choices=DATASETS, default=defaults.dataset)
    parser.add_argument("--source", choices=SOURCES, default=None,
                        help="auto (Keras download, else offline), keras, offline, or path (implied by --data)")
    parser.add_argument("--data", default=None, help="an mnist.npz file or a folder with the four IDX files")
    parser.add_argument("--engine", choices=ENGINES, default=defaults.engine)
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None,
                        help="function engine: compile chunks of steps with XLA (default: for runs of 5,000 steps or more)")
    parser.add_argument("--runs-dir", type=Path, default=None, help="where run folders go (default ./runs or $HYBRID_LAB_RUNS)")
    parser.add_argument("--json", action="store_true", help="print one JSON line with the result at the end")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the flags describe (ValueError names a bad value)."""
    source = args.source or ("path" if args.data else "auto")
    return TrainConfig(
        hidden_units=args.hidden_units, activation=args.activation, dropout_rate=args.dropout_rate,
        optimizer=args.optimizer, learning_rate=args.learning_rate, batch_size=args.batch_size,
        steps=args.steps, eval_every=args.eval_every, seed=args.seed, dataset=args.dataset,
        source=source, data_path=args.data, engine=args.engine, xla=args.xla,
    )


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
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    try:
        check_data_path(config.source, config.data_path)
    except DatasetError as error:
        parser.error(f"--data {error}")
    runs_dir = args.runs_dir or default_runs_dir()

    # The first Ctrl-C asks the run to stop after its current chunk (kept as "stopped"); a second one quits.
    interrupted = threading.Event()

    def on_interrupt(signum, frame):
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        print("\nstopping after the current chunk of steps (Ctrl-C again to quit now)", file=sys.stderr)

    signal.signal(signal.SIGINT, on_interrupt)
    print(f"training {config.architecture()} ({config.engine} engine) into {runs_dir}", file=sys.stderr)
    from core.training import train  # deferred: imports TensorFlow

    run = train(config, runs_dir, on_progress=lambda p: print(progress_line(p), end="", file=sys.stderr,
                                                              flush=True),
                should_stop=interrupted.is_set)
    print(file=sys.stderr)
    summary = run.summary or {}
    state, message = run.status.get("status"), run.status.get("message", "")
    print(f"{state}: {message}", file=sys.stderr)
    if summary.get("data_source"):
        print(f"data: {summary['data_source']}", file=sys.stderr)
    print(f"run folder: {run.path}", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "run_id": run.run_id, "run_dir": str(run.path), "status": state,
            "test_accuracy": summary.get("test_accuracy"), "steps": summary.get("steps"),
            "seconds": summary.get("seconds"), "steps_per_second": summary.get("steps_per_second"),
            "data_source": summary.get("data_source"), "message": message,
        }))
    return 0 if state in ("completed", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
