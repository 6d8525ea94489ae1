"""What an idle warm worker costs when its queue folder is full of names that are not queue entries.

Fills a fresh runs directory's `.queue/` with 10,000 garbage names (the kind a hostile or careless hand
leaves: no time stamp, a stamp too long, dot-files), starts a pool of one real worker, waits until it is warm,
then reads the worker's CPU time from /proc over a quiet window: the share of one core it takes while no
run waits. Also reports how many garbage names are still in the queue folder at the end. Run:
`python bench/idle_worker.py [--names 10000] [--seconds 20]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import service  # noqa: E402

QUEUE_DIR = ".queue"
WARM_TIMEOUT = 300.0


def garbage_names(count: int) -> list[str]:
    """Names a queue folder should never hold, of several kinds, `count` in all."""
    kinds = [lambda i: f"garbage-{i}", lambda i: f"{i:020d}", lambda i: f"{'9' * 200}{i}-x",
             lambda i: f".dot-{i}", lambda i: f"{i:020d}-../../etc-{i}"]
    return [kinds[i % len(kinds)](i).replace("/", "_") for i in range(count)]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_warm(runs_dir: Path, pool) -> int:
    deadline = time.monotonic() + WARM_TIMEOUT
    while time.monotonic() < deadline:
        logs = list((runs_dir / service.WORKERS_DIR).glob("*.log"))
        if pool.pids and any("warm after" in log.read_text(errors="replace") for log in logs):
            return pool.pids[0]
        time.sleep(0.5)
    raise SystemExit("the worker did not get warm in time")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    os.environ["HYBRID_LAB_WORKERS"] = "1"
    with tempfile.TemporaryDirectory() as runs_dir:
        runs_dir = Path(runs_dir)
        folder = runs_dir / QUEUE_DIR
        folder.mkdir()
        for name in garbage_names(args.names):
            (folder / name).touch()
        pool = service.ensure_pool(runs_dir)
        try:
            pid = wait_until_warm(runs_dir, pool)
            time.sleep(2.0)  # let the worker settle after its warm-up
            before, started = cpu_seconds(pid), time.monotonic()
            time.sleep(args.seconds)
            used, elapsed = cpu_seconds(pid) - before, time.monotonic() - started
            restarted = pool.pids != [pid]
        finally:
            pool.stop()
        left = sum(1 for name in os.listdir(folder) if name != ".rejected")
        rejected = sum(1 for name in os.listdir(folder / ".rejected") if name != "rejected.log") \
            if (folder / ".rejected").is_dir() else 0
    print(f"idle worker with {args.names:,} garbage names in .queue: {100 * used / elapsed:.1f}% of a core "
          f"over {elapsed:.0f} s; worker replaced meanwhile: {restarted}; names left in .queue: {left:,}; "
          f"moved to .queue/.rejected: {rejected:,}")


if __name__ == "__main__":
    main()
