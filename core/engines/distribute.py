"""Past one device: the `distribute` setting on TensorFlow's own distributed engine, `tf.distribute`.

The article's idea stays whole: Keras layers called on raw tensors, TensorFlow owning the loop, now inside
`strategy.run` (core/engines/function_step.py builds the step). What this module owns is the choice of devices:

- `mirrored`: one replica per local GPU or, without a GPU, per logical CPU device. The CPU is split into
  `cpu_replicas` logical devices, which must happen before TensorFlow starts its runtime: the CLI does it first
  thing (`split_cpu`), and a service worker splits the CPU into MAX_CPU_REPLICAS devices when it starts (a
  single-device run places its ops on the first one, as it would on an unsplit CPU: measured the same speed).
- `multi-worker`: `MultiWorkerMirroredStrategy` over the workers `TF_CONFIG` lists, one process per machine,
  all started with the same command. Worker 0 is the chief: only it writes the run folder and TensorBoard's
  summaries. TF_CONFIG is read and checked here (`cluster_from_env`) before TensorFlow starts, so a mistake in
  it is one sentence, and joining waits at most a given time for the other workers (`join_cluster`).

Splitting one CPU into logical devices does not make training faster (the devices share the same cores); it
is how the strategy can be tried, and tested, on any machine.

Process state, kept because TensorFlow makes it so: the CPU split lives in TensorFlow's runtime (set once,
before it starts), and a process joins at most one cluster, once (TensorFlow's collective ops are configured
at program startup), so the placement that joined it is kept in `_joined` for every run of this process.
Nothing else is cached here: a mirrored strategy is cheap to make, and the network built on it keeps it.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from core.config import MAX_CPU_REPLICAS

# How long a worker of a multi-worker run waits for its peers in one collective before it gives up with an
# error (instead of hanging forever when a peer was never started). Tracing the first chunk takes seconds.
COLLECTIVE_TIMEOUT_SECONDS = 300
CLUSTER_WAIT_SECONDS = 300.0  # how long joining a cluster waits for every worker of TF_CONFIG to start
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


class DistributeError(ValueError):
    """A distributed run cannot start as configured; the message says why and what to do, in words."""


class ClusterJoinFailed(DistributeError):
    """TensorFlow started joining the cluster and could not (a worker never answered within the wait, or it
    refused the cluster); nothing has been written, and this process's runtime cannot join another."""


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


@dataclass(frozen=True)
class Cluster:
    """The workers TF_CONFIG lists ("host:port", worker 0 the chief) and which of them this process is."""

    addresses: tuple[str, ...]
    index: int

    @property
    def workers(self) -> int:
        """How many workers the cluster has."""
        return len(self.addresses)

    @property
    def is_chief(self) -> bool:
        """Whether this process is worker 0, the one that writes the run folder."""
        return self.index == 0

    @property
    def address(self) -> str:
        """This worker's own "host:port"."""
        return self.addresses[self.index]


SINGLE = Placement(strategy=None, distribute="none", replicas=1, workers=1, worker_index=0, is_chief=True)
_joined: Placement | None = None  # the cluster this process joined (TensorFlow allows one, once): see above


def gpus_present() -> int:
    """GPUs the NVIDIA driver lists, read without importing TensorFlow (for the Train page): 0 on most machines."""
    try:
        return sum(1 for _ in NVIDIA_GPUS.iterdir())
    except OSError:
        return 0


def cluster_from_env(environ=os.environ) -> Cluster:
    """The cluster TF_CONFIG describes, checked before TensorFlow starts: its shape (`read_cluster`) and that
    this worker's port is free here. DistributeError says what is wrong, in words."""
    text = environ.get("TF_CONFIG")
    if not text:
        raise DistributeError("distribute 'multi-worker' needs TF_CONFIG: set it on every machine to the cluster's "
                              "addresses and this machine's task, then start the same command on each "
                              "(see the README, 'Training past one device')")
    cluster = read_cluster(text)
    check_port_free(cluster)
    return cluster


def read_cluster(text: str) -> Cluster:
    """TF_CONFIG's text as a Cluster: JSON whose cluster.worker is a non-empty list of distinct "host:port"
    strings (ports 1 to 65535) and whose task is {"type": "worker", "index": i} with i in that list."""
    try:
        values = json.loads(text)
    except ValueError as error:
        raise DistributeError(f"TF_CONFIG is not JSON ({error}); write it as {TF_CONFIG_EXAMPLE}") from None
    if not isinstance(values, dict) or not isinstance(values.get("cluster"), dict) \
            or not isinstance(values.get("task"), dict):
        raise DistributeError(f"TF_CONFIG needs a \"cluster\" and a \"task\", each a JSON object; got {text[:200]!r}; "
                              f"write it as {TF_CONFIG_EXAMPLE}")
    addresses = read_workers(values["cluster"])
    return Cluster(addresses, read_task_index(values["task"], len(addresses)))


def read_workers(cluster: dict) -> tuple[str, ...]:
    """cluster.worker as a tuple of checked "host:port" addresses (DistributeError in words otherwise)."""
    others = sorted(set(cluster) - {"worker"})
    if others:
        raise DistributeError(f"TF_CONFIG's cluster lists {', '.join(map(repr, others))}, but a multi-worker run "
                              "here has only workers; list every machine under \"worker\" (worker 0 is the chief)")
    workers = cluster.get("worker")
    if isinstance(workers, str):
        raise DistributeError(f"TF_CONFIG's cluster.worker is the string {workers[:200]!r}, not a list; write the "
                              'addresses as a JSON list such as ["host1:12345", "host2:12345"]')
    if not isinstance(workers, list):
        raise DistributeError(f"TF_CONFIG's cluster.worker must be a list of \"host:port\" addresses; got "
                              f"{shown(workers)}")
    if not workers:
        raise DistributeError('TF_CONFIG\'s cluster.worker is an empty list; list every machine of the run as '
                              '"host:port", such as ["host1:12345", "host2:12345"]')
    for address in workers:
        check_address(address)
    repeated = sorted({address for address in workers if workers.count(address) > 1})
    if repeated:
        raise DistributeError(f"TF_CONFIG's cluster.worker lists {', '.join(repeated)} more than once; give every "
                              "worker its own host:port")
    return tuple(workers)


def check_address(address) -> None:
    """A worker's address must be "host:port" with a port from 1 to 65535 (DistributeError otherwise)."""
    host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not host or not host.strip() or host != host.strip() or not (port.isascii() and port.isdigit()):
        raise DistributeError(f"TF_CONFIG's cluster.worker holds {shown(address)}, which is not a "
                              '"host:port" address such as "host1:12345"')
    if not 1 <= int(port) <= 65535:
        raise DistributeError(f"TF_CONFIG's worker address {address!r} has port {int(port)}; give it a port "
                              "from 1 to 65535")


def read_task_index(task: dict, workers: int) -> int:
    """The task's index, for a task of type "worker" among `workers` (DistributeError in words otherwise)."""
    if task.get("type") != "worker":
        raise DistributeError(f"TF_CONFIG's task type is {shown(task.get('type'))}, but every process of a "
                              'multi-worker run here is a worker: set "task": {"type": "worker", "index": N}')
    index = task.get("index")
    # TensorFlow reads the index with int(): a string of digits is an index too.
    if isinstance(index, str) and index.strip().lstrip("-").isascii() and index.strip().lstrip("-").isdigit():
        index = int(index)
    if not isinstance(index, int) or isinstance(index, bool):
        raise DistributeError(f"TF_CONFIG's task index is {shown(index)}, not a whole number; set it to this "
                              f"machine's place in cluster.worker, from 0 to {workers - 1}")
    if not 0 <= index < workers:
        raise DistributeError(f"TF_CONFIG's task index is {index}, but cluster.worker lists {workers} "
                              f"worker{'s' if workers > 1 else ''}; set it to this machine's place in that list, "
                              f"from 0 to {workers - 1}")
    return index


def shown(value) -> str:
    """A value of TF_CONFIG as it was written there, cut short, for a message."""
    return json.dumps(value, ensure_ascii=False)[:200]


def check_port_free(cluster: Cluster) -> None:
    """This worker's port must be free on this machine: TensorFlow's server listens on it, on every interface."""
    port = int(cluster.address.rpartition(":")[2])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like TensorFlow's server, bind despite connections of an earlier run still closing (TIME_WAIT).
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as error:
            raise DistributeError(
                f"this worker's address in TF_CONFIG, {cluster.address} (index {cluster.index}), has port {port}, "
                f"which this machine cannot listen on ({error.strerror}); stop the program using it or give this "
                "worker a free port in TF_CONFIG on every machine") from None


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
    """Where `config` trains in this process: one device, a new mirrored strategy, or the cluster this process
    joined (joined now, reading TF_CONFIG, if it has not yet).

    Call it before anything else runs on TensorFlow when the config is distributed: the CPU split and
    MultiWorkerMirroredStrategy both have to be set up before the runtime starts.
    """
    if config.distribute == "none":
        return SINGLE
    if config.distribute == "multi-worker":
        return _joined or join_cluster(cluster_from_env())
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(mirrored_devices(config))
    return Placement(strategy, "mirrored", strategy.num_replicas_in_sync, 1, 0, True)


def join_cluster(cluster: Cluster, wait_seconds: float = CLUSTER_WAIT_SECONDS) -> Placement:
    """Join `cluster` as its worker `cluster.index`, waiting up to about `wait_seconds` for every worker to start;
    ClusterJoinFailed when they did not or TensorFlow refused the cluster. Once per process.

    TensorFlow's own wait for the workers has no end unless told one: its coordination service is configured
    here with `wait_seconds` as the deadline for every worker to register (the leader, worker 0, gives up
    after it; the others after their last attempt to reach worker 0), so the process ends by itself, in words.
    """
    global _joined
    if _joined is not None:
        raise DistributeError("this process has already joined a cluster; TensorFlow joins one per process, so "
                              "start a new process for another multi-worker run")
    import tensorflow as tf
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    runtime = context.context()
    runtime.configure_coordination_service(
        service_type="standalone", service_leader="/job:worker/replica:0/task:0",
        cluster_register_timeout_in_ms=max(1, round(wait_seconds * 1000)),
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name="worker", num_tasks=cluster.workers)])
    # Without this, worker 0 waits for the others' registration with no deadline at all.
    runtime.coordination_service.cluster_register_with_barrier = True
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"worker": list(cluster.addresses)}), task_type="worker", task_id=cluster.index,
        rpc_layer="grpc")
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
    except tf.errors.DeadlineExceededError:
        raise ClusterJoinFailed(
            f"the other workers of TF_CONFIG ({', '.join(cluster.addresses)}) did not all answer within "
            f"{wait_seconds:g} s; start the same command on every machine of the cluster, each with its own task "
            "index, and check that their ports are open") from None
    except (tf.errors.OpError, RuntimeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ClusterJoinFailed(f"TensorFlow could not join the cluster TF_CONFIG describes as worker "
                                f"{cluster.index} at {cluster.address}: {reason}") from None
    _joined = Placement(strategy, "multi-worker", strategy.num_replicas_in_sync, cluster.workers, cluster.index,
                        cluster.is_chief)
    return _joined


def is_lost_peer(error: BaseException) -> bool:
    """True for the errors TensorFlow raises when another worker of a multi-worker run went away."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"UnavailableError", "DeadlineExceededError", "CancelledError"}) or (
        "Collective ops is aborted" in str(error))
