"""A warm worker's memory over 40 network shapes in a row, and the replacements its memory budget causes.

Starts a pool of one real worker on a fresh runs directory and queues 40 short runs, each of a network shape
the worker has not seen (one hidden layer of 32, 40, 48 ... units), one after another. After each run it
prints the resident memory of the worker that trained it (from the worker's log line, or from /proc when the
worker does not log it) and whether a fresh worker took over, i.e. the worker passed its budget
(HYBRID_LAB_WORKER_MEMORY) and was replaced. Run: `python bench/worker_memory.py [--shapes 40]
[--budget MB]`; without --budget the service's default budget applies.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import service  # noqa: E402
from core.access import OPERATOR  # noqa: E402
from core.config import TrainConfig  # noqa: E402
from core.records import RunState  # noqa: E402
from core.store import load_run  # noqa: E402

RUN_TIMEOUT = 600.0
LOGGED_MEMORY = re.compile(r"worker (\d+): finished (\S+); resident memory ([\d,]+) MB")


def resident_mb(pid: int) -> float | None:
    """A live process's resident memory in MB, from /proc; None once it has gone."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def logged_mb(runs_dir: Path, run_id: str) -> float | None:
    """The resident memory the worker logged when it finished this run, if it logs it."""
    for log in (runs_dir / service.WORKERS_DIR).glob("*.log"):
        for match in LOGGED_MEMORY.finditer(log.read_text(errors="replace")):
            if match.group(2) == run_id:
                return float(match.group(3).replace(",", ""))
    return None


def wait_for_end(run_id: str, runs_dir: Path):
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        run = load_run(run_id, runs_dir)
        if not run.state.active:
            return run
        time.sleep(0.1)
    raise SystemExit(f"run {run_id} did not finish in {RUN_TIMEOUT:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", type=int, default=40)
    parser.add_argument("--budget", type=int, default=None, help="HYBRID_LAB_WORKER_MEMORY, in MB")
    args = parser.parse_args()
    os.environ["HYBRID_LAB_WORKERS"] = "1"
    if args.budget is not None:
        os.environ["HYBRID_LAB_WORKER_MEMORY"] = str(args.budget)
    budget = next((s for s in service.SERVICE_SETTINGS if s.name == "worker_memory"), None)
    print(f"budget: {service.service_setting('worker_memory'):,} MB" if budget else "budget: none (no such setting)")
    with tempfile.TemporaryDirectory() as runs_dir:
        runs_dir = Path(runs_dir)
        pool = service.ensure_pool(runs_dir)
        workers, replacements, peak = [], 0, 0.0
        try:
            for index in range(args.shapes):
                units = 32 + 8 * index
                config = TrainConfig(hidden_units=[units], steps=200, eval_every=100, source="offline")
                run = wait_for_end(service.submit(config, runs_dir, identity=OPERATOR, limits=False).run_id, runs_dir)
                time.sleep(0.3)  # the worker logs its memory, or exits, just after the run's last status
                pid = run.status.pid
                memory = logged_mb(runs_dir, run.run_id) or resident_mb(pid)
                if workers and pid != workers[-1]:
                    replacements += 1
                workers.append(pid)
                peak = max(peak, memory or 0.0)
                print(f"run {index + 1:2d} (784-{units}-10): {run.state}, worker {pid}, resident "
                      f"{memory:,.0f} MB" if memory else f"run {index + 1:2d}: {run.state}, worker {pid}", flush=True)
                if run.state is not RunState.COMPLETED:
                    print(f"   {run.message}")
        finally:
            pool.stop()
    print(f"workers used: {len(set(workers))}, replacements: {replacements}, highest resident memory after a "
          f"run: {peak:,.0f} MB")


if __name__ == "__main__":
    main()
