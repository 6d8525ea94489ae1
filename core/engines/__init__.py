"""The engines side by side: what every engine does (`Engine`), and how a config's `engine` picks one.

`function` (engines/function.py) is today's TensorFlow: Keras 3 layers in a tf.function step that a
GradientTape trains. `session` (engines/session.py) is the article's own TF1 graph, fed by placeholders and
run by a Session. Both build the network from core.network, start from its shared initial weights and
take the batches core.training gives them, which is what makes their runs comparable step for step.
Both import TensorFlow, so they are imported only when a run needs one.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

import numpy as np

from core.config import ENGINES
from core.network import layer_sizes, weight_names

MAX_CHUNK_STEPS = 100
ASSUMED_FLOPS_PER_SECOND = 60e9


class Engine(Protocol):
    """What the training loop asks of an engine; everything else (batches, evaluation, stop) is the loop's."""

    name: str
    chunk_steps: int  # how many steps one call of train_chunk should take at most

    def __init__(self, config, dataset, log_dir: Path) -> None:
        """Build (or reuse) the network for `config` at its initial weights; write its graph to `log_dir`."""

    def train_chunk(self, chunk_indices: np.ndarray, first_step: int) -> tuple[np.ndarray, np.ndarray]:
        """Run one step per row of batch indices, logging each; returns their losses and batch accuracies."""

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) for float32 images (N, 28, 28)."""

    def weights(self) -> list[np.ndarray]:
        """Kernels and biases of the Dense layers, in core.network's order."""

    def write_summaries(self, step: int, protos: list) -> None:
        """Write ready-made TensorBoard summary protos (core/tensorboard_summaries.py) at `step`."""

    def close(self) -> None:
        """Flush the event files and release what the engine holds."""


def engine_class(name: str) -> type[Engine]:
    """The engine class for a config's `engine` setting (imported on demand: engines import TensorFlow)."""
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {name!r}")
    module = importlib.import_module(f"core.engines.{name}")
    return module.ENGINE


def named_weights(engine: Engine, config) -> dict[str, np.ndarray]:
    """An engine's weights by their network name (hidden_1/kernel ...), for histograms."""
    return dict(zip(weight_names(config), engine.weights()))


def chunk_steps_for(config) -> int:
    """How many steps one graph call runs: about 0.2 s of work, at most 100.

    The estimate counts the multiply-adds of forward and backward passes (6 FLOPs per weight per image)
    against a conservative 60 GFLOP/s for these CPUs, so that progress reports stay frequent even for the
    largest networks, where a single step may take longer than that.
    """
    weights = sum(fan_in * fan_out for fan_in, fan_out in layer_sizes(config))
    flops_per_step = 6 * config.batch_size * weights
    return int(min(MAX_CHUNK_STEPS, max(1, 0.2 * ASSUMED_FLOPS_PER_SECOND // flops_per_step)))
