"""The training service's settings, each declared once and read from an environment variable: which backend
runs the warm workers, how many, and the limits on what one identity may ask for. Nothing here imports
TensorFlow or Ray.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class ServiceSetting:
    """One setting of the service, read from an environment variable."""

    name: str
    variable: str
    kind: type
    default: object
    help: str


SERVICE_SETTINGS = (
    ServiceSetting("backend", "HYBRID_LAB_BACKEND", str, "local",
                   "where the warm workers run: local (processes on this machine) or ray (actors on the Ray "
                   "cluster at HYBRID_LAB_RAY_ADDRESS, one per CPU it declares)"),
    ServiceSetting("ray_address", "HYBRID_LAB_RAY_ADDRESS", str, "auto",
                   "the Ray cluster to join with HYBRID_LAB_BACKEND=ray: auto (the one `ray start` started on "
                   "this machine) or the head's HOST:PORT"),
    ServiceSetting("workers", "HYBRID_LAB_WORKERS", int, max(1, (os.cpu_count() or 2) - 1),
                   "worker processes that train at once with the local backend (default: one core fewer than "
                   "the machine has)"),
    ServiceSetting("queue_limit", "HYBRID_LAB_QUEUE_LIMIT", int, 8,
                   "runs one person (the operator, or one signed-in user) may have waiting or training at once"),
    ServiceSetting("max_work", "HYBRID_LAB_MAX_WORK", float, 2e12,
                   "largest run a person may start, in steps x batch size x multiply-adds per image (the article's "
                   "run: 5.9e9)"),
    ServiceSetting("guest_queue_limit", "HYBRID_LAB_GUEST_QUEUE_LIMIT", int, 2,
                   "runs one guest (one browser tab of a server without sign-in) may have waiting or training"),
    ServiceSetting("guest_max_work", "HYBRID_LAB_GUEST_MAX_WORK", float, 6e11,
                   "largest run a guest may start, in the units of HYBRID_LAB_MAX_WORK"),
    ServiceSetting("guests_total", "HYBRID_LAB_GUESTS_TOTAL", int, 6,
                   "runs all guests together may have waiting or training (a guest can open many tabs)"),
    ServiceSetting("files", "HYBRID_LAB_FILES", str, "auto",
                   "who may train on files of the server: auto (operators only), on (everyone who may train), "
                   "off (nobody)"),
    ServiceSetting("max_upload", "HYBRID_LAB_MAX_UPLOAD", float, 100.0,
                   "the largest dataset file one may upload, in MB; an archive may unpack to at most 4 times that"),
    ServiceSetting("uploads_per_owner", "HYBRID_LAB_UPLOADS_PER_OWNER", float, 300.0,
                   "MB of stored uploads one person may keep (all guests together count as one person)"),
    # Like Celery's worker_max_memory_per_child: TensorFlow keeps some memory for good for every network shape
    # it compiles (about 14 MB each here, bench/worker_memory.py), so a worker that has served many shapes
    # makes way for a fresh one. A warm worker takes about 920 MB; 2,048 MB is room for some 80 new shapes.
    ServiceSetting("worker_memory", "HYBRID_LAB_WORKER_MEMORY", int, 2048,
                   "resident memory in MB past which a worker, once its run has finished, exits and the pool "
                   "starts a fresh one (a warm worker takes about 920 MB)"),
)


def _setting(name: str) -> ServiceSetting:
    return next(s for s in SERVICE_SETTINGS if s.name == name)


def setting_default(name: str):
    """A service setting's default, whatever the environment says."""
    return _setting(name).default


def service_setting(name: str):
    """A service setting's value: its environment variable if set (and valid), else its default."""
    setting = _setting(name)
    text = os.environ.get(setting.variable)
    if text is None or text.strip() == "":
        return setting.default
    try:
        value = setting.kind(text)
    except ValueError:
        raise ValueError(f"{setting.variable} must be a {setting.kind.__name__} ({setting.help}); got {text!r}") \
            from None
    if setting.kind in (int, float) and value <= 0:
        raise ValueError(f"{setting.variable} must be above 0 ({setting.help}); got {text!r}")
    if name == "files" and value not in ("on", "off", "auto"):
        raise ValueError(f"{setting.variable} must be on, off or auto ({setting.help}); got {text!r}")
    if name == "backend" and value not in BACKENDS:
        raise ValueError(f"{setting.variable} must be local or ray ({setting.help}); got {text!r}")
    if name == "ray_address" and (value == "local" or "://" in value):
        # "local" would start a Ray of the app's own, with its dashboard; ray:// is Ray's client server.
        raise ValueError(f"{setting.variable} must be auto or the head's HOST:PORT ({setting.help}); got {text!r}: "
                         "the app joins a cluster that `ray start` started and never starts one of its own")
    return value
