"""The training service: runs wait in a queue in the runs directory, and a pool of warm worker processes
trains them, so that pressing Train does not pay for importing TensorFlow, loading data or tracing a graph.

A worker (`python -m core.worker --serve RUNS_DIR`) imports TensorFlow once, loads the data once, keeps the
traced and compiled step functions of each network shape it has trained (core/engines/function.py), and
runs at a lower CPU priority than the server so pages stay quick while it trains. The pool size and the
limits on what one identity may ask for (smaller ones for guests) are service settings, read from the
environment (SERVICE_SETTINGS). Who asks is an Identity (core/access.py): submit and stop check it. A worker
checks a run's size ceiling again when it takes it (`refusal`), and leaves after a run that takes it past its
memory budget; the pool then starts a fresh one.

What happens when the server stops, however it stops (Ctrl-C, `kill`, a crash): each worker notices, stops
its run after the current chunk of steps (kept as "stopped", with all it logged) and exits. Queued runs stay
queued in the runs directory and start when the app serves again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core import fine_tune, queue, sweeps, uploads
from core.access import Identity, PermissionRefused, check_files, check_stop, check_train, is_guest_key, owner_of
from core.collection import CollectionError
from core.config import ENGINES, TrainConfig
from core.fine_tune import FineTuneError
from core.data import check_data_path
from core.network import multiply_adds
from core.records import RunState, StopReason
from core.run_folder import Run
from core.store import create_run, default_runs_dir, list_runs

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKERS_DIR = ".workers"  # the pool's logs, beside the queue in the runs directory
MONITOR_SECONDS = 1.0  # how often the pool looks for workers that died, to start new ones


class SubmissionRefused(ValueError):
    """The service will not queue this run (over a limit, a run it cannot train, files it reads for nobody); the
    message says why."""


@dataclass(frozen=True)
class ServiceSetting:
    """One setting of the service, read from an environment variable."""

    name: str
    variable: str
    kind: type
    default: object
    help: str


SERVICE_SETTINGS = (
    ServiceSetting("workers", "HYBRID_LAB_WORKERS", int, max(1, (os.cpu_count() or 2) - 1),
                   "worker processes that train at once (default: one core fewer than the machine has)"),
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
    return value


def files_offered(identity: Identity) -> bool:
    """Whether this identity may name files of the server as data: operators only (HYBRID_LAB_FILES=auto),
    everyone (on) or nobody (off)."""
    try:
        _check_files(identity)
    except ValueError:
        return False
    return True


def _check_files(identity: Identity) -> None:
    choice = service_setting("files")
    if choice == "off":
        raise SubmissionRefused("this server does not read its own files (HYBRID_LAB_FILES=off); choose the auto, "
                                "keras or offline source")
    if choice == "auto":
        check_files(identity)


def work_of(config: TrainConfig) -> float:
    """How big a run is: steps x batch size x the multiply-adds of one image's forward pass."""
    return float(config.steps) * config.batch_size * multiply_adds(config)


# ------------------------------------------------------------------------------------------- the pool


class WorkerPool:
    """Warm worker processes for one runs directory, started on demand and restarted when one dies."""

    def __init__(self, runs_dir: Path, size: int):
        self.runs_dir, self.size = Path(runs_dir).resolve(), size
        self.workers: list[subprocess.Popen | None] = [None] * size  # one slot per worker, each with its own log
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.monitor = threading.Thread(target=self._watch, name="worker-pool", daemon=True)

    def start(self) -> None:
        """Start the workers (a no-op for those already running) and the thread that keeps them alive."""
        with self.lock:
            self._fill()
            if not self.monitor.is_alive() and not self.stopped.is_set():
                self.monitor.start()

    def _fill(self) -> None:
        """Start a worker in every empty slot (caller holds the lock); never after stop()."""
        if self.stopped.is_set():
            return
        logs = self.runs_dir / WORKERS_DIR
        logs.mkdir(parents=True, exist_ok=True)
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        for slot, worker in enumerate(self.workers):
            if worker is not None and worker.poll() is None:
                continue
            with open(logs / f"worker-{slot + 1}.log", "ab") as log:
                self.workers[slot] = subprocess.Popen(
                    [sys.executable, "-m", "core.worker", "--serve", str(self.runs_dir), "--parent", str(os.getpid())],
                    cwd=REPO_ROOT, env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def _watch(self) -> None:
        while not self.stopped.wait(MONITOR_SECONDS):
            with self.lock:
                self._fill()  # a worker that died (its run reads "interrupted") is replaced

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every worker to stop (its run is kept as stopped) and wait for them to exit."""
        self.stopped.set()
        with self.lock:
            live = [worker for worker in self.workers if worker is not None]
            for worker in live:
                if worker.poll() is None:
                    worker.terminate()
            for worker in live:
                try:
                    worker.wait(timeout)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            self.workers = [None] * self.size

    @property
    def pids(self) -> list[int]:
        """The process ids of the live workers."""
        return [worker.pid for worker in self.workers if worker is not None and worker.poll() is None]


class PoolKeeper:
    """The worker pools of one process, one per runs directory, each started once and stopped together."""

    def __init__(self):
        self.pools: dict[Path, WorkerPool] = {}
        self.lock = threading.Lock()

    def ensure(self, runs_dir: Path) -> WorkerPool:
        """The pool for the runs directory, started if it is not yet."""
        runs_dir = Path(runs_dir).resolve()
        with self.lock:
            pool = self.pools.get(runs_dir)
            if pool is None or pool.stopped.is_set():
                service_setting("worker_memory")  # a bad budget is refused before any worker starts
                pool = self.pools[runs_dir] = WorkerPool(runs_dir, service_setting("workers"))
        pool.start()
        return pool

    def stop(self, runs_dir: Path | None = None) -> None:
        """Stop the pool of one runs directory, or every pool."""
        with self.lock:
            chosen = list(self.pools) if runs_dir is None else [Path(runs_dir).resolve()]
            pools = [self.pools.pop(key) for key in chosen if key in self.pools]
        for pool in pools:
            pool.stop()


# A page's script has no handle on the server's objects, so the pools of this process are kept here: the
# server owns their lifetime (app.py's lifespan: `serving`), and `submit` makes sure one serves the runs
# directory it queued into (a page served without app.py, a test). Nothing else reaches for them.
POOLS = PoolKeeper()


def ensure_pool(runs_dir: Path | None = None) -> WorkerPool:
    """This process's worker pool for the runs directory, started if it is not yet."""
    return POOLS.ensure(Path(runs_dir or default_runs_dir()))


@contextmanager
def serving(runs_dir: Path):
    """Serve the runs directory's queue with a warm pool while the block runs (the app server's lifetime)."""
    pool = ensure_pool(runs_dir)
    try:
        yield pool
    finally:
        POOLS.stop(runs_dir)


def stop_pools() -> None:
    """Stop every pool this process started (tests, and a server shutting down)."""
    POOLS.stop()


# ------------------------------------------------------------------------------------------- runs


def submit(config: TrainConfig, runs_dir: Path | None = None, *, identity: Identity, limits: bool = True,
           sweep: str | None = None) -> Run:
    """Queue a run for the pool, owned by `identity`, and make sure the pool is up; returns the queued run at once.

    PermissionRefused when the identity may not train (or not on the server's files); with `limits` (a
    request from the app), SubmissionRefused says why a run is not taken: too big, or too many runs of this
    identity (or of all guests) waiting. The run's status records the size ceiling that applied (`work_limit`),
    so that the worker that takes it checks it again (`refusal`). A path that is not there is a DatasetError.
    """
    runs_dir = Path(runs_dir or default_runs_dir())
    check_submission([config], runs_dir, identity, limits)
    run = _queue(config, runs_dir, identity, limits, sweep)
    ensure_pool(runs_dir)
    return run


def check_submission(configs: list[TrainConfig], runs_dir: Path, identity: Identity, limits: bool = True,
                     labels: list[str] | None = None) -> None:
    """Every refusal the service has for these runs, checked for all of them before any is queued.

    Whether the identity may train at all, then each run's own refusals (multi-worker, the server's files, a
    data path that is not there), then with `limits` the size ceiling of each and the identity's queue limit
    for them together. `labels` names each run in a refusal ("the run with distribute multi-worker"), for a
    sweep.
    """
    service_setting("workers")  # a bad pool size or memory budget is refused before anything is queued
    service_setting("worker_memory")
    check_train(identity)
    for config, label in zip(configs, labels or [None] * len(configs)):
        try:
            _check_run(config, identity, runs_dir)
            fine_tune.check(config, runs_dir, identity)
        except (SubmissionRefused, PermissionRefused, FineTuneError, CollectionError) as refusal:
            if not label:
                raise
            raise type(refusal)(f"{label}: {refusal}") from None
    if limits:
        _check_limits(configs, runs_dir, identity)


def _check_run(config: TrainConfig, identity: Identity, runs_dir: Path) -> None:
    """One run's own refusals: what the pool cannot train, the server's files for those who may not, and an
    upload that is gone or not theirs."""
    _check_trainable_here(config)
    if config.source == "path":
        _check_files(identity)  # before the path is looked at
        check_data_path(config.source, config.data_path)
    if config.source == "uploaded":
        uploads.check_use(runs_dir, config.upload, identity)


def _queue(config: TrainConfig, runs_dir: Path, identity: Identity, limits: bool, sweep: str | None) -> Run:
    """Create the queued run, recording the size ceiling it was held to (None: unlimited, the operator's own)."""
    work_limit = _ceiling(identity.key) if limits else None
    return create_run(config, runs_dir, state=RunState.QUEUED, owner=identity, sweep=sweep, work_limit=work_limit)


def submit_sweep(config: TrainConfig, axes: list, runs_dir: Path | None = None, *, identity: Identity,
                 limits: bool = True) -> tuple[str, list[Run]]:
    """Queue every run of a sweep (core/sweeps.py) under one new name, owned by `identity`; returns the name and
    the runs.

    The whole grid is checked first (its shape in sweeps.grid, then every refusal each run could meet), so a
    sweep is queued whole or not at all; if the runs directory fails halfway (a full disk), the runs already
    queued are taken back out.
    """
    runs_dir = Path(runs_dir or default_runs_dir())
    configs = sweeps.grid(config, axes)
    check_submission(configs, runs_dir, identity, limits, [sweeps.run_label(each, axes) for each in configs])
    name = sweeps.new_sweep_name()
    runs = _queue_all(configs, runs_dir, identity, limits, name)
    ensure_pool(runs_dir)
    return name, runs


def submit_engine_comparison(config: TrainConfig, runs_dir: Path | None = None, *, identity: Identity,
                             limits: bool = True) -> list[Run]:
    """Queue the same settings once per engine, for side-by-side curves, owned by `identity`: both runs, or
    (refused) neither."""
    runs_dir = Path(runs_dir or default_runs_dir())
    # Every engine's config is made and checked before any is queued: settings one engine refuses (the session
    # engine runs on one device) must not leave the other engine's run queued alone.
    configs = [config.replace(engine=engine, xla=None) for engine in ENGINES]
    check_submission(configs, runs_dir, identity, limits)
    runs = _queue_all(configs, runs_dir, identity, limits, None)
    ensure_pool(runs_dir)
    return runs


def _queue_all(configs: list[TrainConfig], runs_dir: Path, identity: Identity, limits: bool,
               sweep: str | None) -> list[Run]:
    """Queue these runs together: all of them, or (when the runs directory refuses one) none."""
    runs = []
    try:
        for config in configs:
            runs.append(_queue(config, runs_dir, identity, limits, sweep))
    except OSError:
        for run in runs:  # cancelled and removed: nothing of a half-queued group is left to train or to list
            if queue.cancel(run):
                shutil.rmtree(run.path, ignore_errors=True)
        raise
    return runs


def refusal(run: Run) -> str | None:
    """Why a worker must not train a queued run it has just taken, in one sentence; None to train it.

    Checked again at that moment because a run's config.json may change while it waits (by hand: 200,000
    steps of batch 4,096 through four layers of 1,024 would hold a worker for days). The ceiling is the one
    the run's status recorded when it was queued (`work_limit`): a visitor's run is held to it again, the
    operator's own (none recorded: the CLI, a benchmark) is not. The queue limit is not checked again: it
    counts runs waiting, and this one is leaving.
    """
    try:
        _check_trainable_here(run.config)
        if run.status.work_limit is not None:
            _check_size(run.config, run.status.work_limit, is_guest_key(owner_of(run.status)))
    except SubmissionRefused as error:
        return f"refused when a worker took it: {error}"
    return None


def _check_trainable_here(config: TrainConfig) -> None:
    if config.distribute == "multi-worker":
        raise SubmissionRefused("a multi-worker run starts from the command line on every machine of its cluster "
                                "(TF_CONFIG; see the README); here, choose distribute 'mirrored' or 'none'")


def _ceiling(owner_key: str) -> float:
    """The largest run this owner may queue, in multiply-adds: guests have a ceiling of their own."""
    return service_setting("guest_max_work" if is_guest_key(owner_key) else "max_work")


def _check_size(config: TrainConfig, ceiling: float, guest: bool) -> None:
    if work_of(config) > ceiling:
        raise SubmissionRefused(
            f"this run is too big for this server: {config.steps:,} steps of batch {config.batch_size} through "
            f"{config.describe_layers()} is {work_of(config):.2g} multiply-adds, above its limit of {ceiling:.2g}"
            f"{' for guests' if guest else ''}; use fewer steps, a smaller batch or a smaller network (the limit "
            f"is {'HYBRID_LAB_GUEST_MAX_WORK' if guest else 'HYBRID_LAB_MAX_WORK'})")


def _check_limits(configs: list[TrainConfig], runs_dir: Path, identity: Identity) -> None:
    """The size ceiling and the queue limits: the identity's own, and for a guest all guests' together."""
    guest = is_guest_key(identity.key)
    for config in configs:
        _check_size(config, _ceiling(identity.key), guest)
    active = [owner_of(run.status) for run in list_runs(runs_dir) if run.state.active]
    limit = service_setting("guest_queue_limit" if guest else "queue_limit")
    mine = active.count(identity.key)
    asked = "" if len(configs) == 1 else f" and this asks for {len(configs)} more"
    if mine + len(configs) > limit:
        raise SubmissionRefused(f"you already have {_runs(mine)} waiting or training{asked}; "
                                f"{'a guest' if guest else 'one person'} may have {limit} at once: stop some or "
                                "wait for them to finish")
    if guest:
        total, everyone = service_setting("guests_total"), sum(1 for owner in active if is_guest_key(owner))
        if everyone + len(configs) > total:
            raise SubmissionRefused(f"guests already have {_runs(everyone)} waiting or training{asked}; this server "
                                    f"takes {total} from all guests together: wait for some to finish "
                                    "(the limit is HYBRID_LAB_GUESTS_TOTAL)")


def _runs(count: int) -> str:
    return f"{count} run{'' if count == 1 else 's'}"


def stop(run: Run, identity: Identity) -> None:
    """Stop a run, if `identity` may (core/access.py: check_stop): a queued one leaves the queue at once (kept as
    stopped), a running one after its chunk."""
    check_stop(identity, run)
    if run.state is RunState.QUEUED and queue.cancel(run):
        run.write_status(RunState.STOPPED, "cancelled while queued: it never started", step=0,
                         stop_reason=StopReason.CANCELLED)
        return
    run.request_stop()
