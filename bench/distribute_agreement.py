"""How closely tf.distribute's runs follow one device: per-step losses and test accuracy, same seed and batches.

One device and mirrored on 2 logical CPU devices train in this process (the CPU is split before TensorFlow
starts; a single-device run takes the first device); two local workers train as two `python -m core.cli
--distribute multi-worker` processes with TF_CONFIG on loopback ports. Prints one Markdown row per case.
Run: `python bench/distribute_agreement.py` (add `--learning-rates 0.1,0.5 --seeds 42,7` for more cases).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.local_cluster import start_workers  # noqa: E402
from core.engines import distribute  # noqa: E402

distribute.split_cpu(2)

import numpy as np  # noqa: E402

from core.config import TrainConfig  # noqa: E402
from core.store import list_runs  # noqa: E402
from core.training import train  # noqa: E402


def two_workers(config: TrainConfig, runs_dir: Path):
    """The chief's run of a two-worker run of `config` on this machine (bench/local_cluster.py)."""
    processes = start_workers(["--source", config.source, "--steps", str(config.steps), "--learning-rate",
                               str(config.learning_rate), "--seed", str(config.seed), "--runs-dir", str(runs_dir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for process in processes:
        process.wait(timeout=900)
    return list_runs(runs_dir)[0]


def compare(reference, other) -> tuple[float, int | None, float]:
    """(largest relative loss gap, first step past 1e-4 or None, accuracy difference in points)."""
    a, b = np.array(reference.read_metrics()["loss"]), np.array(other.read_metrics()["loss"])
    gap = np.abs(a - b) / np.abs(a)
    past = np.flatnonzero(gap > 1e-4)
    return float(gap.max()), int(past[0]) if len(past) else None, 100 * (other.test_accuracy - reference.test_accuracy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--learning-rates", default="0.1,0.5")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--no-workers", action="store_true", help="skip the two-worker rows")
    args = parser.parse_args()
    print("| SGD learning rate | seed | compared with one device | largest relative loss gap | first step past 1e-4 "
          "| test accuracy (one device → this) |")
    print("| ---: | ---: | --- | ---: | ---: | --- |")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for rate in [float(text) for text in args.learning_rates.split(",")]:
            for seed in [int(text) for text in args.seeds.split(",")]:
                config = TrainConfig(steps=args.steps, learning_rate=rate, seed=seed, source="offline")
                single = train(config, scratch / "single")
                others = [("mirrored, 2 CPU replicas", train(config.replace(distribute="mirrored", cpu_replicas=2),
                                                              scratch / "mirrored"))]
                if not args.no_workers:
                    others.append(("two local workers", two_workers(config, scratch / f"workers-{rate}-{seed}")))
                for name, run in others:
                    gap, past, points = compare(single, run)
                    print(f"| {rate:g} | {seed} | {name} | {gap:.1e} | {past if past is not None else 'never'} | "
                          f"{single.test_accuracy:.4f} → {run.test_accuracy:.4f} ({points:+.1f} points) |", flush=True)


if __name__ == "__main__":
    main()
