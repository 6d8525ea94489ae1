"""A multi-worker cluster on this machine: `python -m core.cli --distribute multi-worker` once per worker, each
with its TF_CONFIG on loopback ports (the README's two-machine recipe, with both machines here).

Used by the benchmarks and by tests/test_distribute.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def loopback_addresses(count: int) -> list[str]:
    """`count` distinct addresses 127.0.0.1:PORT on which nobody listens right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(addresses: list[str], index: int) -> str:
    """TF_CONFIG for worker `index` of a cluster of workers at `addresses` (worker 0 is the chief)."""
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


def start_workers(flags: list[str], count: int = 2, env: dict | None = None, **popen) -> list[subprocess.Popen]:
    """Start `python -m core.cli --distribute multi-worker FLAGS` as `count` workers of one cluster."""
    addresses = loopback_addresses(count)
    return [subprocess.Popen([sys.executable, "-m", "core.cli", "--distribute", "multi-worker", *flags], cwd=REPO_ROOT,
                             env={**os.environ, **(env or {}), "TF_CONFIG": tf_config(addresses, index)}, **popen)
            for index in range(count)]
