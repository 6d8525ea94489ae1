"""The command line's part in tf.distribute, before TensorFlow starts: split the CPU for mirrored runs, or join
the cluster of a multi-worker run (core/engines/distribute.py) and say so while TensorFlow waits for the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from core.engines import distribute

PROG = "python -m core.cli"  # how the command line names itself in its messages
WAIT_REPORT_SECONDS = 10.0


def place(configs: list, cluster_wait: float = distribute.CLUSTER_WAIT_SECONDS):
    """Set up tf.distribute for these runs before TensorFlow starts (core/engines/distribute.py): split the CPU
    for mirrored runs, or join the cluster of a multi-worker run. Returns the Cluster this process joined, or
    None when it trains alone (and so writes its runs)."""
    kinds = {each.distribute for each in configs}
    if kinds == {"none"}:
        return None
    if "multi-worker" in kinds and len(configs) > 1:
        raise ValueError("a multi-worker run is one run started on every machine; sweep with distribute "
                         "'mirrored' or 'none' instead")
    if "mirrored" in kinds:
        distribute.split_cpu(max(each.cpu_replicas for each in configs if each.distribute == "mirrored"))
        return None
    cluster = distribute.cluster_from_env()  # a missing or malformed TF_CONFIG, or a taken port: before waiting
    import tensorflow  # noqa: F401  (loaded first, so that the wait reported is the wait for the other workers)

    with waiting_for_the_cluster(cluster, cluster_wait):
        distribute.join_cluster(cluster, cluster_wait)
    return cluster


# What a multi-worker run's start says while it waits. TensorFlow joins the cluster in one C++ call that holds
# the GIL until every worker has answered or its deadline (the --cluster-wait) has passed, so no thread of this
# process can speak meanwhile: a small process does. Its kill is a last resort, for a TensorFlow that would
# not keep its own deadline: well past it, a process that cannot run Python can only be killed.
CLUSTER_REPORTER = """
import os, signal, sys, time
parent, limit, every, peers = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
last_resort = 2 * limit + 60
started = time.monotonic()
while True:
    time.sleep(every)
    if os.getppid() != parent:
        sys.exit(0)
    waited = time.monotonic() - started
    if waited >= last_resort:
        print(f"{sys.argv[5]}: error: TensorFlow was still waiting for the other workers of TF_CONFIG ({peers}) "
              f"after {waited:.0f} s, well past --cluster-wait {limit:g}; start the same command on every machine "
              "of the cluster, each with its own task index, and check that their ports are open",
              file=sys.stderr, flush=True)
        os.kill(parent, signal.SIGKILL)
        sys.exit(0)
    print(f"waiting for the other workers of the cluster ({peers}): {waited:.0f} s", file=sys.stderr, flush=True)
"""


@contextlib.contextmanager
def waiting_for_the_cluster(cluster, limit: float):
    """While TensorFlow joins the cluster (it waits up to `limit` for every worker of TF_CONFIG to start), say
    so every 10 s (twice within a shorter wait); Ctrl-C quits at once meanwhile (nothing has been written yet)."""
    reporter = subprocess.Popen([sys.executable, "-c", CLUSTER_REPORTER, str(os.getpid()), str(limit),
                                 str(min(WAIT_REPORT_SECONDS, limit / 2)), ", ".join(cluster.addresses), PROG])
    # Python's own Ctrl-C handler cannot run until TensorFlow's call returns: let the system's end the process.
    interrupt = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, interrupt)
        reporter.kill()
        reporter.wait()
