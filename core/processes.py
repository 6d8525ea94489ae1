"""Whether a process is alive: how the run store tells a running run from one whose trainer died.

A status says "running" with the pid of the process that trains the run; if that process has gone (the
server was killed, the machine restarted), the run would say "running" forever. A pid means something only
on the machine it was read on: a run trained on another machine of a Ray cluster (its status names that host)
is never judged by this machine's processes; the Ray backend marks the runs of a node that left the cluster
(core/ray_backend.py). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def this_host() -> str:
    """This machine's host name, as runs record where they train."""
    return socket.gethostname()


def trainer_gone(pid: int | None, host: str | None) -> bool:
    """True when the process training a run has surely ended: it was on this machine (or the run does not say
    where, as folders from before hosts were recorded) and is no longer alive. A pid on another host cannot be
    judged here, so it is never taken for dead."""
    if host is not None and host != this_host():
        return False
    return not pid_alive(pid)


def pid_alive(pid: int | None) -> bool:
    """True while the process exists and has not exited (an exited, unreaped child is a zombie: dead)."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    try:
        # /proc/<pid>/stat: "pid (name) state ..."; the name may hold spaces, so split after its ")".
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): existence is all we can tell
    return state not in ("Z", "X")
