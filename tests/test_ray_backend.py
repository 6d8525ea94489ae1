"""The training service on a Ray cluster (HYBRID_LAB_BACKEND=ray, core/ray_backend.py), and the default app
without Ray.

A real two-node cluster on this machine (`ray.cluster_utils.Cluster`, one CPU per node, everything on loopback)
serves the app's queue with its actors; a node is removed while its worker trains. Ray is slow to start (about
15 s for the cluster, as long again for each actor to import TensorFlow), so the module shares one cluster and
keeps to two tests on it. They skip when Ray is not installed (requirements-ray.txt; `make test` installs it).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import queue, service
from core.access import OPERATOR
from core.config import TrainConfig
from core.records import FailureKind, RunState, StopReason
from core.store import load_run
from tests.factories import wait_until_finished
from ui.outcomes import outcome
from ui.texts import describe_node

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
RAY_ENVIRONMENT = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
READY_SECONDS = 300.0  # an actor's TensorFlow import and data load, on a shared 2-core machine
# Small and quick; XLA off so that a run's losses do not depend on whether its worker had compiled the shape.
QUICK = TrainConfig(hidden_units=[16], steps=60, eval_every=30, source="offline", xla=False)
# Long enough to be caught training on the node that is removed (a few seconds per thousand steps here).
LONG = QUICK.replace(steps=20_000, eval_every=5_000)


@pytest.fixture(scope="module")
def cluster():
    """Two nodes of one CPU each on 127.0.0.1, with this process joined to it as the app would be."""
    # Set before Ray is imported, which reads them once. Without the first, Ray resolves 127.0.0.1 to the
    # machine's network address for the driver: tests stay on loopback. The second keeps Ray from reporting its
    # usage over the internet.
    previous = {name: os.environ.get(name) for name in RAY_ENVIRONMENT}
    os.environ.update(RAY_ENVIRONMENT)
    assert "ray" not in sys.modules, "Ray was imported before its environment was set"
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": LOOPBACK,
                                                          "include_dashboard": False})
    nodes.add_node(num_cpus=1, node_ip_address=LOOPBACK)
    ray.init(address=nodes.address, _node_ip_address=LOOPBACK, logging_level="WARNING")
    try:
        yield nodes
    finally:
        service.stop_pools()
        ray.shutdown()
        nodes.shutdown()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def ray_service(cluster, monkeypatch):
    """The app's service with the ray backend; its pool is stopped after the test (its actors free the CPUs)."""
    monkeypatch.setenv("HYBRID_LAB_BACKEND", "ray")
    monkeypatch.setenv("HYBRID_LAB_RAY_ADDRESS", cluster.address)
    yield cluster
    service.stop_pools()


def node_ids(cluster) -> set[str]:
    return {node.node_id for node in cluster.list_all_nodes()}


def start_ray_pool(runs_dir: Path, actors: int):
    """The service's Ray pool, once every actor is warm: an actor still compiling would leave the quick runs to
    the others."""
    pool = service.ensure_pool(runs_dir)
    assert pool.wait_ready(READY_SECONDS, warm=True) == actors, f"actors where: {pool.where()}"
    return pool


def losses(run) -> list[float]:
    return run.read_metrics()["loss"]


def trained_once(run) -> bool:
    """A run trained twice would have its steps logged twice in metrics.csv."""
    steps = run.read_metrics()["step"]
    return steps == list(range(len(steps)))


def test_six_queued_runs_train_on_both_nodes_with_the_losses_of_the_local_backend(ray_service, tmp_path, monkeypatch):
    runs_dir = tmp_path / "ray"
    start_ray_pool(runs_dir, actors=2)
    configs = [QUICK.replace(seed=seed) for seed in range(6)]
    ids = [service.submit(config, runs_dir, identity=OPERATOR, limits=False).run_id for config in configs]

    runs = [wait_until_finished(run_id, runs_dir, timeout=600) for run_id in ids]

    assert [run.state for run in runs] == [RunState.COMPLETED] * 6, [run.message for run in runs]
    assert {run.status.node_id for run in runs} == node_ids(ray_service)  # both nodes trained at least one
    for run in runs:
        assert run.status.host == socket.gethostname() and trained_once(run)
        assert describe_node(run.status) == f"{socket.gethostname()} · Ray node {run.status.node_id[:8]}"
    # The same settings on the local backend (a worker process of this machine) give the same losses.
    service.stop_pools()
    monkeypatch.setenv("HYBRID_LAB_BACKEND", "local")
    monkeypatch.setenv("HYBRID_LAB_WORKERS", "1")
    local = service.submit(configs[0], tmp_path / "local", identity=OPERATOR, limits=False)
    local = wait_until_finished(local.run_id, tmp_path / "local", timeout=600)
    assert local.state is RunState.COMPLETED and local.status.node_id is None, local.message
    assert losses(local) == losses(runs[0]) and len(losses(local)) == QUICK.steps


def test_a_node_that_leaves_interrupts_its_run_naming_it_and_the_queue_goes_on(ray_service, tmp_path):
    runs_dir = tmp_path / "runs"
    head = ray_service.head_node.node_id
    ray_service.add_node(num_cpus=1, node_ip_address=LOOPBACK)  # a third node, so two stay after one leaves
    start_ray_pool(runs_dir, actors=3)
    long_ids = [service.submit(LONG.replace(seed=seed), runs_dir, identity=OPERATOR, limits=False).run_id
                for seed in (1, 2)]
    short_ids = [service.submit(QUICK.replace(seed=seed), runs_dir, identity=OPERATOR, limits=False).run_id
                 for seed in range(4)]

    # Both long runs training; at most one of them is on the head node, which stays.
    victim = wait_for(lambda: next((run for run in (load_run(run_id, runs_dir) for run_id in long_ids)
                                    if run.state is RunState.RUNNING and run.status.node_id not in (None, head)
                                    and run.status.step > 0), None), "a long run training on a node but the head")
    leaving = next(node for node in ray_service.list_all_nodes() if node.node_id == victim.status.node_id)
    ray_service.remove_node(leaving)

    interrupted = wait_for(lambda: (lambda run: run if run.status.failure is FailureKind.NODE_LOST else None)(
        load_run(victim.run_id, runs_dir)), "the run on the removed node marked interrupted")
    others = [wait_until_finished(run_id, runs_dir, timeout=600) for run_id in long_ids + short_ids
              if run_id != victim.run_id]

    assert interrupted.state is RunState.INTERRUPTED and interrupted.status.node_id == leaving.node_id
    assert leaving.node_id[:8] in outcome(interrupted).headline  # the page names the node
    assert leaving.node_id in interrupted.message  # and so does the status, for the command line
    assert [run.state for run in others] == [RunState.COMPLETED] * 5, [run.message for run in others]
    assert all(run.status.node_id != leaving.node_id for run in others if run.run_id in short_ids)
    # No run trained twice: the interrupted one is not queued again, and every log has each step once.
    assert victim.run_id not in queue.queued_ids(runs_dir)
    assert load_run(victim.run_id, runs_dir).state is RunState.INTERRUPTED
    assert all(trained_once(run) for run in [interrupted, *others])
    # Stop works on a run whatever node trains it: the STOP file in its folder, on the storage every node shares.
    stopped_id = service.submit(LONG, runs_dir, identity=OPERATOR, limits=False).run_id
    training = wait_for(lambda: (lambda run: run if run.state is RunState.RUNNING and run.status.step > 0 else None)(
        load_run(stopped_id, runs_dir)), "the run to stop, training")
    service.stop(training, OPERATOR)
    stopped = wait_until_finished(stopped_id, runs_dir, timeout=600)
    assert stopped.state is RunState.STOPPED and stopped.status.stop_reason is StopReason.ASKED, stopped.message
    assert stopped.status.node_id in node_ids(ray_service) and stopped.step < LONG.steps


def wait_for(condition, what: str, timeout: float = 600.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"after {timeout:.0f} s, still waiting for {what}")


# Run in a fresh interpreter: this module's own Ray would be in sys.modules here.
NO_RAY_SCRIPT = """
import json, sys
import app
from streamlit.testing.v1 import AppTest
after_import = sorted(name for name in sys.modules if name == "ray" or name.startswith("ray."))
page = AppTest.from_file("Home.py", default_timeout=120)
page.switch_page("pages/2_Runs.py")
page.run()
after_render = sorted(name for name in sys.modules if name == "ray" or name.startswith("ray."))
print(json.dumps({"import": after_import, "render": after_render, "errors": [str(e) for e in page.exception]}))
"""


def test_the_default_app_neither_imports_ray_nor_renders_a_page_with_it(tmp_path):
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("HYBRID_LAB_BACKEND", "HYBRID_LAB_RAY_ADDRESS")}
    environment.update(HYBRID_LAB_RUNS=str(tmp_path), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", NO_RAY_SCRIPT], cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"import": [], "render": [], "errors": []}
