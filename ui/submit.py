"""Submitting from a page: the one way the pages queue a run, an engine comparison or a sweep, and turn what
core refuses into one sentence for `st.error`.

Every button that trains goes through here, so each catches the same errors, and only those core raises:
ValueError (SubmissionRefused, PermissionRefused, a DatasetError, a bad service setting, a sweep the settings
forbid), RunStoreError (the runs directory cannot take a run) and any other OSError (the pool cannot start a
worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core import service
from core.config import TrainConfig
from core.records import RunStoreError
from core.run_folder import Run
from ui.identity import current_identity

TRAIN, COMPARE, SWEEP = "Cannot train", "Cannot compare engines", "Cannot queue this sweep"


@dataclass(frozen=True)
class Submission:
    """What a press queued (its runs, and the sweep's name), or `refusal`: why it did not, in one sentence."""

    runs: tuple[Run, ...] = ()
    sweep: str | None = None
    refusal: str | None = None


def submit_run(config: TrainConfig, runs_dir: Path) -> Submission:
    """Queue one run for who is asking."""
    return _attempt(TRAIN, lambda identity: Submission((service.submit(config, runs_dir, identity=identity),)))


def submit_engine_comparison(config: TrainConfig, runs_dir: Path) -> Submission:
    """Queue the same settings once per engine, for who is asking."""
    return _attempt(COMPARE, lambda identity: Submission(
        tuple(service.submit_engine_comparison(config, runs_dir, identity=identity))))


def submit_sweep(config: TrainConfig, axes: list, runs_dir: Path) -> Submission:
    """Queue a sweep's grid for who is asking, under one new name."""
    def queue_sweep(identity):
        name, runs = service.submit_sweep(config, axes, runs_dir, identity=identity)
        return Submission(tuple(runs), sweep=name)

    return _attempt(SWEEP, queue_sweep)


def _attempt(action: str, submit) -> Submission:
    """Call `submit` with who is asking; a refusal from core (PermissionRefused included) becomes one sentence
    that starts with `action`."""
    try:
        return submit(current_identity())
    except (ValueError, RunStoreError) as error:  # core's messages say what was given and what to do
        return Submission(refusal=_sentence(f"{action}: {error}"))
    except OSError as error:  # the run is queued, but the pool could not start a worker for it
        where = f"{error.filename}: " if error.filename else ""
        return Submission(refusal=_sentence(
            f"{action}: a training worker could not start ({where}{error.strerror or error}); what was queued "
            "waits in the queue and starts once a worker can"))


def _sentence(text: str) -> str:
    return text if text.endswith((".", "?", "!")) else text + "."
