"""A run's model.keras on the real MNIST test set (10,000 digits it never saw), read from IDX files.

Run: `python bench/real_mnist_accuracy.py RUN_DIR [--idx ../shared/data/mnist-t10k]`. Prints the accuracy on
those digits beside the run's own test accuracy (on the split it was trained with). Other benchmarks score
their runs with `real_mnist_accuracy(run)` (bench/cnn_accuracy.py).
"""

from __future__ import annotations

import argparse
import sys
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from core.datafiles import read_idx  # noqa: E402
from core.evaluation import predict  # noqa: E402
from core.network import load_model  # noqa: E402
from core.run_folder import Run  # noqa: E402
from core.store import read_run  # noqa: E402

DEFAULT_IDX = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"


@lru_cache(maxsize=2)
def real_test_set(idx_dir: Path = DEFAULT_IDX) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 real MNIST test digits as float32 (N, 28, 28) in [0, 1], and their labels."""
    images = read_idx(Path(idx_dir) / "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    labels = read_idx(Path(idx_dir) / "t10k-labels-idx1-ubyte.gz")
    return images, labels


def real_mnist_accuracy(run: Run, idx_dir: Path = DEFAULT_IDX) -> float:
    """The share of the real MNIST test digits that the run's model.keras (loaded as the app loads it) gets right."""
    images, labels = real_test_set(Path(idx_dir))
    probabilities = predict(load_model(run.model_path), images)
    return float((probabilities.argmax(axis=1) == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--idx", type=Path, default=DEFAULT_IDX, help="folder with t10k-*-ubyte(.gz)")
    args = parser.parse_args()
    run = read_run(args.run_dir)
    accuracy = real_mnist_accuracy(run, args.idx)
    count = len(real_test_set(args.idx)[1])
    print(f"run {run.run_id} ({run.config.engine} engine): test accuracy on its own split "
          f"{run.test_accuracy:.4f} ({run.data_description}); "
          f"on the real MNIST test set ({count:,} digits): {accuracy:.4f}")


if __name__ == "__main__":
    main()
