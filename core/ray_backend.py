"""The Ray backend of the training service (HYBRID_LAB_BACKEND=ray): the warm workers are Ray actors spread over
a cluster's machines, running the same worker code as the local pool (core/worker.py: serve_queue).

Each actor imports TensorFlow once and keeps its compiled networks, like a local worker; it takes runs from the
same queue in the runs directory, which every node mounts at the same path: the queue's atomic rename gives
each run to one actor, whichever node it is on. Ray places the actors: one per CPU the cluster declares
(`ray start --num-cpus N`), each asking for one CPU, and, up to the GPUs the cluster declares, one GPU, which
Ray makes the only one its process sees, so a worker on a GPU node trains on its GPU. Ray restarts an actor
that dies (max_restarts), and one that passes its memory budget ends itself to be restarted fresh.

A node that leaves the cluster (its machine lost, `ray stop` on it) takes its actors and their runs with it: the
pool's watcher marks each run that was training there `interrupted`, naming the node (FailureKind.NODE_LOST);
the run is not queued again, so no run trains twice, and the other nodes go on with the queue.

The app joins a cluster that `ray start` started (HYBRID_LAB_RAY_ADDRESS: auto, or the head's HOST:PORT) and
never starts one, nor Ray's dashboard, client server or job ports. This module is imported only with the ray
backend (core/service.py: _new_pool): the default app never imports Ray.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from pathlib import Path

import ray

from core.pool import REPO_ROOT
from core.processes import this_host
from core.records import FailureKind, RunState, StopReason
from core.store import list_runs

MONITOR_SECONDS = 1.0  # how often the pool looks for nodes that left, and for CPUs that joined
STOP_SECONDS = 30.0  # how long stop() waits for the actors to stop their runs after the current chunk
ANSWER_SECONDS = 5.0  # how long a live actor may take to answer a call that does no work
SETTINGS_PREFIX = "HYBRID_LAB_"  # the service's settings, passed to every actor with the repository's path


class ClusterUnreachable(ValueError):
    """No Ray cluster answers at HYBRID_LAB_RAY_ADDRESS; the message says where the app looked and what to do."""


@ray.remote(max_restarts=-1, max_task_retries=0)
class RayWorker:
    """One warm worker on a node of the cluster: the local worker's serving loop on a thread of the actor, so
    that `finish` can be called while it trains."""

    def __init__(self, runs_dir: str):
        from core.worker import StopSignal

        self.signal, self.ready, self.warm = StopSignal(), threading.Event(), threading.Event()
        self.node_id = ray.get_runtime_context().get_node_id()
        self.thread = threading.Thread(target=self._serve, args=(Path(runs_dir),), name="serve-queue", daemon=True)
        self.thread.start()

    def _serve(self, runs_dir: Path) -> None:
        from core.worker import serve_queue

        if serve_queue(runs_dir, self.signal, node_id=self.node_id, ready=self.ready, warm=self.warm):
            os._exit(1)  # over its memory budget: Ray restarts this actor as a fresh process

    def where(self) -> tuple[str, str, int]:
        """(node id, host name, pid) of this actor."""
        return self.node_id, this_host(), os.getpid()

    def wait_ready(self, timeout: float, warm: bool = False) -> bool:
        """True once TensorFlow is imported and the data loaded (within `timeout` seconds); with `warm`, once
        nothing is left to warm up either (the article's network traced, exported and compiled)."""
        return (self.warm if warm else self.ready).wait(timeout)

    def finish(self, timeout: float) -> None:
        """Stop the run under way after its current chunk (kept as stopped: the app server stopped) and return
        once the serving loop has ended."""
        self.signal.set(StopReason.SERVER_STOPPED)
        self.thread.join(timeout)


def connect(address: str) -> bool:
    """Join the cluster at `address` unless this process already has; True when this call joined it."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except ConnectionError as error:
        raise ClusterUnreachable(
            f"no Ray cluster answers at HYBRID_LAB_RAY_ADDRESS={address} ({error}); start one with `ray start "
            "--head` (see the README's 'Many machines: Ray'), or unset HYBRID_LAB_BACKEND to train on this "
            "machine; what was queued waits in the queue") from None
    return True


def actor_environment(gpu: bool) -> dict[str, str]:
    """What an actor's process gets in its environment: the repository on its Python path (the same path on
    every node) and the service's settings as the app has them. An actor without a GPU of its own sees none
    (Ray sets CUDA_VISIBLE_DEVICES only for actors that ask for GPUs), so it never takes memory on the GPU that
    another actor trains on."""
    variables = {name: value for name, value in os.environ.items() if name.startswith(SETTINGS_PREFIX)}
    variables["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    if not gpu:
        variables["CUDA_VISIBLE_DEVICES"] = ""
    return variables


def interrupt_runs_on(runs_dir: Path, lost: dict[str, str]) -> list[str]:
    """Mark every run still training on a node that left the cluster as interrupted, naming the node;
    `lost` maps node ids to their host names. Returns the ids of the runs marked."""
    marked = []
    for run in list_runs(runs_dir):
        status = run.status
        if run.damaged or status is None or status.node_id not in lost:
            continue
        # Still running as far as its folder says (read_run shows a dead pid on this host as process-ended).
        if status.state is RunState.RUNNING or status.failure is FailureKind.PROCESS_ENDED:
            node = f"{status.host or lost[status.node_id]}, Ray node {status.node_id}"
            run.write_status(RunState.INTERRUPTED, f"the machine training it ({node}) left the Ray cluster at "
                                                   f"step {status.step} of {status.total_steps}",
                             failure=FailureKind.NODE_LOST)
            marked.append(run.run_id)
    return marked


class RayPool:
    """The warm workers of one runs directory as Ray actors; kept like the local pool (core/pool.py)."""

    def __init__(self, runs_dir: Path, address: str):
        self.runs_dir, self.address = Path(runs_dir).resolve(), address
        self.actors: list = []
        self.joined = False  # whether this pool joined the cluster (and so leaves it when it stops)
        self.lost: set[str] = set()  # node ids already seen gone
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.monitor = threading.Thread(target=self._watch, name="ray-pool", daemon=True)

    def start(self) -> None:
        """Join the cluster, start an actor per CPU it declares, and the thread that watches its nodes."""
        with self.lock:
            if self.stopped.is_set():
                return
            self.joined = connect(self.address) or self.joined
            self._fill()
            if not self.monitor.is_alive():
                self.monitor.start()

    def _fill(self) -> None:
        """One actor per CPU the cluster declares (caller holds the lock): more when nodes join. Actors of a node
        that left stay, waiting for room: Ray restarts them when a node has a free CPU."""
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        runs_dir = self.runs_dir
        runs_dir.mkdir(parents=True, exist_ok=True)
        while len(self.actors) < cpus:
            with_gpu = len(self.actors) < gpus
            self.actors.append(RayWorker.options(
                num_cpus=1, num_gpus=1 if with_gpu else 0, scheduling_strategy="SPREAD",
                runtime_env={"env_vars": actor_environment(with_gpu)}).remote(str(runs_dir)))

    def _watch(self) -> None:
        while not self.stopped.wait(MONITOR_SECONDS):
            try:
                self.look_at_nodes()
                with self.lock:
                    if not self.stopped.is_set():
                        self._fill()
            except Exception:  # the cluster may be restarting: look again at the next tick
                traceback.print_exc()

    def look_at_nodes(self) -> list[str]:
        """Mark the runs of nodes that have left since the last look; returns their ids."""
        gone = {node["NodeID"]: node.get("NodeManagerHostname") or "?" for node in ray.nodes() if not node["Alive"]}
        new = {node_id: host for node_id, host in gone.items() if node_id not in self.lost}
        if not new:
            return []
        marked = interrupt_runs_on(self.runs_dir, new)
        self.lost.update(new)
        return marked

    def where(self, timeout: float = ANSWER_SECONDS) -> list[tuple[str, str, int]]:
        """(node id, host, pid) of each actor that answers within `timeout` seconds (an actor restarting, or
        waiting for a node with room, does not)."""
        return _answers([actor.where.remote() for actor in self.actors], timeout)

    def wait_ready(self, timeout: float, warm: bool = False) -> int:
        """Wait until every actor is ready to train, or with `warm` warmed up (or `timeout` seconds); returns how
        many are."""
        return sum(_answers([actor.wait_ready.remote(timeout, warm) for actor in self.actors],
                            timeout + ANSWER_SECONDS))

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Ask every live actor to stop its run (kept as stopped), then end them all; leave the cluster if this
        pool joined it."""
        self.stopped.set()
        with self.lock:
            if ray.is_initialized() and self.actors:
                # A live actor answers at once (its runs train on a thread of their own); one restarting or waiting
                # for a node with room does not, and is only killed.
                probes = _each_answer([actor.where.remote() for actor in self.actors], ANSWER_SECONDS)
                live = [actor for actor, answer in zip(self.actors, probes) if answer is not None]
                _answers([actor.finish.remote(timeout) for actor in live], timeout)
                for actor in self.actors:
                    ray.kill(actor, no_restart=True)
            self.actors = []
            if self.joined and ray.is_initialized():
                ray.shutdown()


def _answers(references: list, timeout: float) -> list:
    """The results of the calls that returned within `timeout` seconds, in order; an actor that is restarting,
    gone or waiting for a node gives none."""
    return [answer for answer in _each_answer(references, timeout) if answer is not None]


def _each_answer(references: list, timeout: float) -> list:
    """Each call's result, or None when it did not return within `timeout` seconds or its actor could not answer."""
    if not references:
        return []
    done, _ = ray.wait(references, num_returns=len(references), timeout=timeout)
    answers = []
    for reference in references:
        try:
            answers.append(ray.get(reference) if reference in done else None)
        except ray.exceptions.RayError:
            answers.append(None)
    return answers
