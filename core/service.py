"""The training service: runs wait in a queue in the runs directory, and a pool of warm worker processes
trains them, so that pressing Train does not pay for importing TensorFlow, loading data or tracing a graph.

A worker (`python -m core.worker --serve RUNS_DIR`) imports TensorFlow once, loads the data once, keeps the
traced and compiled step functions of each network shape it has trained (core/engines/function.py), and
runs at a lower CPU priority than the server so pages stay quick while it trains. Where the workers run (the
backend: processes on this machine, core/pool.py, or actors on a Ray cluster, core/ray_backend.py), the pool
size and the limits on what one identity may ask for (smaller ones for guests) are service settings, read from
the environment (core/service_settings.py). Who asks is an Identity (core/access.py): submit and stop check it. A worker
checks a run's size ceiling again when it takes it (`refusal`), and leaves after a run that takes it past its
memory budget; the pool then starts a fresh one.

What happens when the server stops, however it stops (Ctrl-C, `kill`, a crash): each worker notices, stops
its run after the current chunk of steps (kept as "stopped", with all it logged) and exits. Queued runs stay
queued in the runs directory and start when the app serves again.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

from core import fine_tune, queue, sweeps, uploads
from core.access import Identity, PermissionRefused, check_files, check_stop, check_train, is_guest_key, owner_of
from core.collection import CollectionError
from core.config import ENGINES, TrainConfig
from core.fine_tune import FineTuneError
from core.data import check_data_path
from core.network import multiply_adds
from core.pool import WORKERS_DIR, PoolKeeper, WorkerPool  # noqa: F401 (WORKERS_DIR: where the pool logs)
from core.records import RunState, StopReason
from core.run_folder import Run
from core.service_settings import SERVICE_SETTINGS, service_setting, setting_default  # noqa: F401
from core.run_index import shared_index
from core.store import create_run, default_runs_dir



class SubmissionRefused(ValueError):
    """The service will not queue this run (over a limit, a run it cannot train, files it reads for nobody); the
    message says why."""


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


# A page's script has no handle on the server's objects, so the pools of this process are kept here: the
# server owns their lifetime (app.py's lifespan: `serving`), and `submit` makes sure one serves the runs
# directory it queued into (a page served without app.py, a test). Nothing else reaches for them.
POOLS = PoolKeeper()


def ensure_pool(runs_dir: Path | None = None):
    """This process's worker pool for the runs directory, started if it is not yet: local worker processes, or
    Ray actors with HYBRID_LAB_BACKEND=ray."""
    return POOLS.ensure(Path(runs_dir or default_runs_dir()), _new_pool)


def _new_pool(runs_dir: Path):
    """A pool of the configured backend; Ray is imported only here, and only for the ray backend."""
    _check_service_settings()  # a bad one is refused before any worker starts
    if service_setting("backend") == "ray":
        from core import ray_backend

        return ray_backend.RayPool(runs_dir, service_setting("ray_address"))
    return WorkerPool(runs_dir, service_setting("workers"))


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
    _check_service_settings()  # a bad backend, pool size or memory budget is refused before anything is queued
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


def _check_service_settings() -> None:
    """ValueError naming the first bad setting of the pool: its backend, the Ray address, size, memory budget."""
    for name in ("backend", "ray_address", "workers", "worker_memory"):
        service_setting(name)


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
    # From the process's index of the runs (core/run_index.py), which reads again only what changed and every
    # run still queued or training: with 600 runs kept, a submit reads the few active ones, not 600 folders.
    active = [owner_of(run.status) for run in shared_index(runs_dir).runs() if run.state.active]
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
