"""Past one device: the `distribute` setting on TensorFlow's own distributed engine, `tf.distribute`.

The article's idea stays whole: Keras layers called on raw tensors, TensorFlow owning the loop, now inside
`strategy.run` (core/engines/function.py builds the step). What this module owns is the choice of devices:

- `mirrored`: one replica per local GPU or, without a GPU, per logical CPU device. The CPU is split into
  `cpu_replicas` logical devices, which must happen before TensorFlow starts its runtime: the CLI does it first
  thing (`prepare`), and a service worker splits the CPU into MAX_CPU_REPLICAS devices when it starts (a
  single-device run places its ops on the first one, as it would on an unsplit CPU: measured the same speed).
- `multi-worker`: `MultiWorkerMirroredStrategy` over the cluster `TF_CONFIG` describes, one process per machine,
  all started with the same command. Worker 0 (or the task of type "chief") is the chief: only it writes the
  run folder and TensorBoard's summaries.

Splitting one CPU into logical devices does not make training faster (the devices share the same cores); it
is how the strategy can be tried, and tested, on any machine.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from core.config import MAX_CPU_REPLICAS

# How long a worker of a multi-worker run waits for its peers in one collective before it gives up with an
# error (instead of hanging forever when a peer was never started). Tracing the first chunk takes seconds.
COLLECTIVE_TIMEOUT_SECONDS = 300
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


class DistributeError(ValueError):
    """A distributed run cannot start as configured; the message says why and what to do, in words."""


@dataclass(frozen=True)
class Placement:
    """Where a run trains: its strategy (None on one device), replica and worker counts, and chiefhood."""

    strategy: object | None
    distribute: str
    replicas: int
    workers: int
    worker_index: int
    is_chief: bool

    def describe(self) -> str:
        """'one device', '2 replicas (mirrored on 2 CPU devices)', '2 replicas on 2 workers'."""
        if self.strategy is None:
            return "one device"
        if self.distribute == "multi-worker":
            return f"{self.replicas} replicas on {self.workers} workers"
        return f"{self.replicas} replicas (mirrored)"


SINGLE = Placement(strategy=None, distribute="none", replicas=1, workers=1, worker_index=0, is_chief=True)
_strategies: dict[tuple, object] = {}


def gpus_present() -> int:
    """GPUs the NVIDIA driver lists, read without importing TensorFlow (for the Train page): 0 on most machines."""
    try:
        return sum(1 for _ in NVIDIA_GPUS.iterdir())
    except OSError:
        return 0


def cluster_from_env() -> tuple[int, int, bool]:
    """(workers, this worker's index, is chief) from TF_CONFIG; DistributeError in words when it is missing or
    malformed."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise DistributeError("distribute 'multi-worker' needs TF_CONFIG: set it on every machine to the cluster's "
                              "addresses and this machine's task, then start the same command on each "
                              "(see the README, 'Training on several machines')")
    try:
        values = json.loads(text)
        cluster, task = values["cluster"], values["task"]
        kind, index = task["type"], int(task["index"])
        workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DistributeError(f"TF_CONFIG is not a cluster description TensorFlow can use ({error!r}); it is JSON "
                              'such as {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                              '"task": {"type": "worker", "index": 0}}') from None
    if kind not in ("worker", "chief") or workers < 1:
        raise DistributeError(f"TF_CONFIG's task must be a worker or the chief; got type {kind!r}")
    has_chief = bool(cluster.get("chief"))
    is_chief = kind == "chief" or (kind == "worker" and index == 0 and not has_chief)
    position = index + (1 if has_chief and kind == "worker" else 0)
    return workers, position, is_chief


def cluster_addresses() -> list[str]:
    """The addresses of the cluster's tasks in TF_CONFIG (empty when there is none)."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
        return [address for kind in ("chief", "worker") for address in cluster.get(kind, [])]
    except (ValueError, AttributeError, TypeError):
        return []


def split_cpu(count: int) -> int:
    """Split the CPU into `count` logical devices if TensorFlow has not started yet; returns how many logical
    CPU devices there are now (TensorFlow keeps the first split it starts with)."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        if count > 1 and len(tf.config.get_logical_device_configuration(cpus[0]) or ()) < count:
            tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        pass  # the runtime has started: the devices are what they are
    return len(tf.config.list_logical_devices("CPU"))


def mirrored_devices(config) -> list[str]:
    """Every local GPU, or else the first `cpu_replicas` logical CPU devices (split now if still possible)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [device.name for device in gpus]
    available = split_cpu(config.cpu_replicas)
    if available < config.cpu_replicas:
        raise DistributeError(
            f"cpu_replicas={config.cpu_replicas} needs {config.cpu_replicas} logical CPU devices, but this process's "
            f"TensorFlow started with {available}; the CPU can only be split before TensorFlow starts (the command "
            f"line and the app's workers do it first thing, up to {MAX_CPU_REPLICAS})")
    return [device.name for device in tf.config.list_logical_devices("CPU")[:config.cpu_replicas]]


def prepare(config) -> Placement:
    """Where `config` trains in this process, building (once) the strategy it needs.

    Call it before anything else runs on TensorFlow when the config is distributed: the CPU split and
    MultiWorkerMirroredStrategy both have to be set up before the runtime starts.
    """
    if config.distribute == "none":
        return SINGLE
    if config.distribute == "multi-worker":
        workers, index, is_chief = cluster_from_env()  # before TensorFlow: a missing TF_CONFIG is one plain line
    import tensorflow as tf

    if config.distribute == "mirrored":
        devices = tuple(mirrored_devices(config))
        strategy = _strategies.get(devices)
        if strategy is None:
            strategy = _strategies[devices] = tf.distribute.MirroredStrategy(list(devices))
        return Placement(strategy, "mirrored", strategy.num_replicas_in_sync, 1, 0, True)
    strategy = _strategies.get(("multi-worker",))
    if strategy is None:
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS)
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        except (RuntimeError, ValueError) as error:
            raise DistributeError(f"TensorFlow could not join the cluster TF_CONFIG describes: {error}") from None
        _strategies[("multi-worker",)] = strategy
    return Placement(strategy, "multi-worker", strategy.num_replicas_in_sync, workers, index, is_chief)


def is_lost_peer(error: BaseException) -> bool:
    """True for the errors TensorFlow raises when another worker of a multi-worker run went away."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"UnavailableError", "DeadlineExceededError", "CancelledError"}) or (
        "Collective ops is aborted" in str(error))
