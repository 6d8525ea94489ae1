"""The background worker: `python -m core.worker RUN_DIR` trains the run whose folder was already created.

`core.training.start_training` starts it. Ctrl-C (SIGINT) or SIGTERM stops the run after its current chunk
of steps, like the STOP file, so a run is kept as "stopped" rather than lost when the app is shut down.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from core.runs import read_run
from core.training import train


def main(argv: list[str]) -> int:
    """Train the run in argv[0]; the exit code says whether it completed or stopped (0) or not (1)."""
    if len(argv) != 1:
        print("usage: python -m core.worker RUN_DIR", file=sys.stderr)
        return 2
    run = read_run(Path(argv[0]))
    if run.damaged or run.config is None:
        print(f"cannot train {argv[0]}: {run.damaged}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    run.write_status("running", "starting", pid=os.getpid())
    run = train(run.config, run=run, should_stop=stop.is_set)
    return 0 if run.state in ("completed", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
