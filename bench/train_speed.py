"""Training speed of the default (article) configuration: Keras `fit` against the hybrid engines.

Every row trains the same 784-128-128-10 network from the same initial weights on the same data with batch
50 and writes the loss to TensorBoard every step. All rows run side by side in this one process, so the
ratios hold even on a noisy machine; the absolute numbers do not. Run: `python bench/train_speed.py`.

The last table is tf.distribute (the `distribute` setting): the CPU is split into two logical devices before
TensorFlow starts, as the app's workers do, and the rows set one device, two mirrored replicas and two local
workers (two processes, TF_CONFIG on loopback ports) side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from core.config import TrainConfig  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.network import build_export_model, initial_weights  # noqa: E402
from core import service  # noqa: E402
from core.access import OPERATOR  # noqa: E402
from core.engines import engine_class  # noqa: E402
from core.engines.function import NETWORKS  # noqa: E402
from core.store import load_run  # noqa: E402
from core.training import BatchSchedule, train  # noqa: E402
from core.engines import distribute  # noqa: E402

distribute.split_cpu(2)  # before TensorFlow starts: the mirrored rows need two logical CPU devices

WARMUP_STEPS = 100


def keras_fit(config, dataset, log_dir, steps, steps_per_execution=1, warm=True) -> float:
    """Steps per second of model.fit with a TensorBoard callback writing the loss every batch.

    warm=True traces the step function in a first short fit outside the timing (steady state);
    warm=False times a fresh model's first fit, tracing included, to compare with train() end to end.
    """
    model = build_export_model(config, initial_weights(config))
    model.compile(keras.optimizers.SGD(config.learning_rate), "categorical_crossentropy",
                  steps_per_execution=steps_per_execution)
    labels = keras.utils.to_categorical(dataset.y_train, 10)
    per_epoch = len(labels) // config.batch_size
    callback = keras.callbacks.TensorBoard(log_dir, update_freq=1)
    if warm:
        model.fit(dataset.x_train, labels, batch_size=config.batch_size, epochs=1,
                  steps_per_epoch=WARMUP_STEPS // 2, verbose=0, callbacks=[callback])
    epochs = max(1, steps // per_epoch)
    started = time.perf_counter()
    model.fit(dataset.x_train, labels, batch_size=config.batch_size, epochs=epochs, verbose=0, callbacks=[callback])
    return epochs * per_epoch / (time.perf_counter() - started)


def python_loop(config, dataset, log_dir, steps) -> float:
    """Steps per second of a Python loop calling a one-step tf.function, loss written every step."""
    from core.engines.function_step import build_layers, make_optimizer, make_train_step

    layers, optimizer = build_layers(config), make_optimizer(config)
    optimizer.build([v for layer in layers for v in layer.trainable_variables])
    step_fn = tf.function(make_train_step(layers, optimizer, tf.constant(dataset.x_train), tf.constant(dataset.y_train)))
    writer = tf.summary.create_file_writer(str(log_dir))
    schedule = BatchSchedule(len(dataset.y_train), config.batch_size, config.seed)
    seed = tf.constant(config.seed, tf.int64)

    def run(count, first):
        with writer.as_default():
            for i, batch in enumerate(schedule.take(count)):
                loss, _ = step_fn(tf.constant(batch), tf.constant(first + i, tf.int64), seed)
                tf.summary.scalar("loss", loss, step=first + i)

    run(WARMUP_STEPS, 0)
    started = time.perf_counter()
    run(steps, WARMUP_STEPS)
    writer.flush()
    return steps / (time.perf_counter() - started)


def engine_chunks(config, dataset, log_dir, steps, chunk=100) -> float:
    """Steps per second of an engine's train_chunk after warm-up, `chunk` steps per call."""
    engine = engine_class(config.engine)(config, dataset, log_dir)
    schedule = BatchSchedule(len(dataset.y_train), config.batch_size, config.seed)
    engine.train_chunk(schedule.take(WARMUP_STEPS), 0)
    started = time.perf_counter()
    for first in range(WARMUP_STEPS, WARMUP_STEPS + steps, chunk):
        engine.train_chunk(schedule.take(chunk), first)
    rate = steps / (time.perf_counter() - started)
    engine.close()
    return rate


def end_to_end(config, dataset, runs_dir) -> float:
    """Steps per second of core.training.train as a user runs it: tracing, evaluations, files, model export.

    The process's compiled networks are forgotten first, so this is a fresh model, as the CLI trains it.
    """
    NETWORKS.clear()
    run = train(config, runs_dir, dataset=dataset)
    return run.summary.steps / run.summary.seconds


def warm_service(config, runs_dir: Path, runs: int) -> list[float]:
    """Steps per second of runs in the warm training service, each timed from the request (service.submit) to
    its final status on disk: queueing, evaluations, files and the model export included."""
    pool = service.ensure_pool(runs_dir)
    deadline = time.monotonic() + 180
    while not all("warm after" in log.read_text(errors="replace") for log in (runs_dir / ".workers").glob("*.log")):
        if time.monotonic() > deadline:
            raise RuntimeError("the service's workers did not warm up within 180 s")
        time.sleep(0.1)
    rates = []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            run = service.submit(config, runs_dir, identity=OPERATOR, limits=False)
            while load_run(run.run_id, runs_dir).state.active:
                time.sleep(0.01)
            rates.append(config.steps / (time.perf_counter() - started))
    finally:
        pool.stop()
    return rates


def two_local_workers(config, runs_dir: Path) -> float:
    """Steps per second of a two-worker run on this machine, from the chief's summary (bench/local_cluster.py)."""
    import json
    import subprocess

    from bench.local_cluster import start_workers

    processes = start_workers(["--source", config.source, "--steps", str(config.steps), "--runs-dir", str(runs_dir),
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    report = json.loads(outputs[0].strip().splitlines()[-1])
    if report["status"] != "completed":
        raise RuntimeError(f"the two-worker run ended {report['status']}: {report['message']}")
    return report["steps_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--engines", default="function,session", help="comma-separated engines to measure")
    parser.add_argument("--long-steps", type=int, default=10_000, help="steps of the longer run (0: skip it)")
    parser.add_argument("--service-runs", type=int, default=5, help="runs through the warm service (0: skip it)")
    parser.add_argument("--no-distribute", action="store_true", help="skip the tf.distribute rows")
    args = parser.parse_args()
    config = TrainConfig(steps=args.steps, source="offline")
    dataset = load_dataset("mnist", "offline")
    steady, cold, long_runs, warm, spread = [], [], [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        steady.append(("Keras `model.fit`, TensorBoard callback `update_freq=1`",
                       keras_fit(config, dataset, scratch / "fit", args.steps)))
        steady.append(("Keras `model.fit`, `steps_per_execution=50`",
                       keras_fit(config, dataset, scratch / "fit50", args.steps, steps_per_execution=50)))
        steady.append(("Python loop, one `tf.function` call per step",
                       python_loop(config, dataset, scratch / "loop", args.steps)))
        cold.append(("Keras `model.fit` on a fresh model (tracing included)",
                     keras_fit(config, dataset, scratch / "fit-cold", args.steps, warm=False)))
        for engine in args.engines.split(","):
            variants = [("plain graph", False), ("XLA", True)] if engine == "function" else [("", None)]
            for label, xla in variants:
                name = f"`{engine}` engine" + (f", {label}" if label else "")
                steady.append((f"{name}, 100 steps per call",
                               engine_chunks(config.replace(engine=engine, xla=xla), dataset,
                                             scratch / f"chunks-{engine}-{xla}", args.steps)))
            cold.append((f"`{engine}` engine, `core.training.train()` with its defaults (tracing, evaluations, "
                         "files, model export)", end_to_end(config.replace(engine=engine), dataset, scratch / f"runs-{engine}")))
        if args.long_steps:
            long_config = config.replace(steps=args.long_steps, eval_every=args.long_steps // 10)
            long_runs.append((f"Keras `model.fit` on a fresh model, {args.long_steps:,} steps",
                              keras_fit(long_config, dataset, scratch / "fit-long", args.long_steps, warm=False)))
            long_runs.append((f"`function` engine, `train()`, {args.long_steps:,} steps (XLA by default)",
                              end_to_end(long_config, dataset, scratch / "runs-long")))
        if args.service_runs:
            rates = warm_service(config.replace(source="auto"), scratch / "service", args.service_runs)
            warm = [steady[0],
                    (f"warm service, request → final status, median of {len(rates)} runs", statistics.median(rates)),
                    ("warm service, request → final status, slowest run", min(rates))]
        if not args.no_distribute:
            mirrored = config.replace(distribute="mirrored", cpu_replicas=2)
            spread.append(("`function` engine, one device, plain graph, 100 steps per call",
                           engine_chunks(config.replace(xla=False), dataset, scratch / "one-device", args.steps)))
            spread.append(("`function` engine, mirrored on 2 logical CPU devices, 100 steps per call",
                           engine_chunks(mirrored, dataset, scratch / "mirrored", args.steps)))
            spread.append(("`core.training.train()`, one device (end to end)",
                           end_to_end(config.replace(xla=False), dataset, scratch / "runs-one")))
            spread.append(("`core.training.train()`, mirrored on 2 logical CPU devices (end to end)",
                           end_to_end(mirrored, dataset, scratch / "runs-mirrored")))
            spread.append(("two local workers (`multi-worker`, 2 processes, loopback), the chief's summary",
                           two_local_workers(config, scratch / "runs-workers")))
    print(f"\n{args.steps} steps of batch {config.batch_size}, {config.describe_layers()}, loss logged every step\n")
    tables = [("steady state (after warm-up)", steady, "`fit`"), ("end to end (from a fresh model)", cold, "`fit`"),
              ("a longer run, end to end", long_runs, "`fit`"),
              ("the warm training service, end to end (against steady `fit`)", warm, "`fit`"),
              ("tf.distribute on this CPU", spread, "one device")]
    for title, rows, against in [table for table in tables if table[1]]:
        print(f"| {title} | steps/s | × {against} |")
        print("| --- | ---: | ---: |")
        for index, (label, rate) in enumerate(rows):
            # The distribute table's end-to-end rows compare with the end-to-end one-device row.
            base = rows[2][1] if against == "one device" and index >= 2 else rows[0][1]
            print(f"| {label} | {rate:,.0f} | {rate / base:.2f}× |")
        print()

if __name__ == "__main__":
    main()
