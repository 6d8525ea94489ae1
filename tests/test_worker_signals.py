"""A warm worker told to stop (SIGTERM, as a stopping server sends) ends, whatever its main thread was doing.

The worker's main thread spends its idle time in `Event.wait` with a timeout, re-taking the event's lock each
time it wakes; a signal handler that set the event itself could run right then and wait for that lock forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.records import StopReason

REPO_ROOT = Path(__file__).resolve().parents[1]
EXIT_WAIT_SECONDS = 60  # a bound on waiting for the process to end, never a measure of speed
# The worker's loop, reduced to its waiting: the StopSignal a worker watches with, and waits that return at once
# (each holds the event's lock a moment: the moment a signal must not be handled by taking it again).
IDLE_WORKER = """
import os, sys
from core.worker import StopSignal
stop = StopSignal()
stop.watch(os.getppid())
print("waiting", flush=True)
while not stop.event.wait(0):
    pass
print(stop.reason, flush=True)
"""


def test_sigterm_ends_an_idle_worker_in_the_middle_of_its_waits():
    for _ in range(5):  # the handler's moment is chance: five workers, each signalled many times
        worker = subprocess.Popen([sys.executable, "-c", IDLE_WORKER], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                  text=True)
        try:
            assert worker.stdout.readline().strip() == "waiting"
            for _ in range(50):
                os.kill(worker.pid, signal.SIGTERM)
                time.sleep(0.001)
            output, _ = worker.communicate(timeout=EXIT_WAIT_SECONDS)
        finally:
            worker.kill()
            worker.wait()
        assert output.strip() == str(StopReason.SERVER_STOPPED)
