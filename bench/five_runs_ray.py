"""Five presses, five results: the local pool and a two-node Ray cluster on this machine, side by side.

For each backend, in a fresh process and a fresh runs directory: start the service (for Ray, first a two-node
`ray.cluster_utils.Cluster` on 127.0.0.1, one CPU per node, the app's service joined to it), wait until its
workers are ready, then queue five of the article's runs at once through `service.submit` (what Train does)
and time until all five have finished. The memory is the peak, sampled every 0.2 s, of the resident memory of
everything the measuring process started, itself included: the local pool's workers, or Ray's processes and its
actors (the sum over the process tree). Run: `python bench/five_runs_ray.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.five_runs import tree_rss_bytes  # noqa: E402

PRESSES = 5
LOOPBACK = "127.0.0.1"
BACKENDS = {"local, default pool (1 worker)": ("local", 1), "local, 2 workers": ("local", 2),
            "Ray, two nodes of 1 CPU (2 actors)": ("ray", 2)}


def start_cluster():
    """Two one-CPU nodes on loopback, and this process joined to them as the app would be."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": LOOPBACK,
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
    ray.init(address=cluster.address, _node_ip_address=LOOPBACK, logging_level="WARNING")
    os.environ["HYBRID_LAB_RAY_ADDRESS"] = cluster.address
    return cluster


def wait_local_ready(runs_dir: Path, workers: int, timeout: float = 600) -> None:
    from core import service

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = list((runs_dir / service.WORKERS_DIR).glob("*.log"))
        if sum("ready after" in log.read_text(errors="replace") for log in logs) >= workers:
            return
        time.sleep(0.2)
    raise TimeoutError("the local workers did not get ready")


def measure(backend: str, workers: int) -> dict:
    """One backend, in this process: start-up, five runs queued at once, and the peak memory of it all."""
    os.environ.update(HYBRID_LAB_BACKEND=backend, HYBRID_LAB_WORKERS=str(workers))
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.wait(0.2):
            peak[0] = max(peak[0], tree_rss_bytes(os.getpid()))

    threading.Thread(target=sample, daemon=True).start()
    started = time.perf_counter()
    cluster = start_cluster() if backend == "ray" else None
    from core import service
    from core.access import OPERATOR
    from core.config import TrainConfig
    from core.records import RunState
    from core.store import load_run

    with tempfile.TemporaryDirectory(prefix="five-runs-") as runs_dir:
        runs_dir = Path(runs_dir)
        pool = service.ensure_pool(runs_dir)
        if backend == "ray":
            pool.wait_ready(600)
        else:
            wait_local_ready(runs_dir, workers)
        ready = time.perf_counter() - started
        pressed = time.perf_counter()
        ids = [service.submit(TrainConfig(source="offline", seed=seed), runs_dir, identity=OPERATOR).run_id
               for seed in range(PRESSES)]
        while any(load_run(run_id, runs_dir).state.active for run_id in ids):
            time.sleep(0.1)
        results = time.perf_counter() - pressed
        runs = [load_run(run_id, runs_dir) for run_id in ids]
        service.stop_pools()
    if cluster is not None:
        import ray

        ray.shutdown()
        cluster.shutdown()
    stop.set()
    return {"ready": ready, "results": results, "peak_mb": peak[0] / 2**20,
            "completed": sum(run.state is RunState.COMPLETED for run in runs),
            "machines": len({(run.status.host, run.status.node_id) for run in runs})}


def main() -> None:
    if len(sys.argv) == 3:  # one backend, in a child process of its own
        print(json.dumps(measure(sys.argv[1], int(sys.argv[2]))))
        return
    environment = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    figures = {}
    for label, (backend, workers) in BACKENDS.items():
        done = subprocess.run([sys.executable, __file__, backend, str(workers)], env=environment,
                              capture_output=True, text=True, check=True)
        figures[label] = json.loads(done.stdout.strip().splitlines()[-1])
    labels = list(figures)
    print("| measurement | " + " | ".join(labels) + " |")
    print("| --- |" + " ---: |" * len(labels))
    rows = [("start-up until the workers are ready", lambda f: f"{f['ready']:.1f} s"),
            (f"{PRESSES} presses to {PRESSES} results (the article's run, warm workers)",
             lambda f: f"{f['results']:.1f} s"),
            ("runs completed", lambda f: f"{f['completed']} of {PRESSES}"),
            ("nodes (or hosts) that trained", lambda f: str(f["machines"])),
            ("peak memory of everything started", lambda f: f"{f['peak_mb']:,.0f} MB")]
    for name, shown in rows:
        print(f"| {name} | " + " | ".join(shown(figures[label]) for label in labels) + " |")


if __name__ == "__main__":
    main()
