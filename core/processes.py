"""Whether a process is alive: how the run store tells a running run from one whose trainer died.

A status says "running" with the pid of the process that trains the run; if that process has gone (the
server was killed, the machine restarted), the run would say "running" forever. Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path


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
