"""Tests for ui/outcomes.py: how a run ended is worded from the typed fields of its status, never from its message.

Each status here carries a message that says something else than its fields (as a message from another
version of the trainer, or a hand edit, could): the words a page shows must follow the fields.
"""

from __future__ import annotations

import pytest

from core.records import Advice, AdviceKind, FailureKind, RunState, Status, StopReason
from core.run_folder import Run
from tests.factories import TINY, finished_summary
from ui.outcomes import FAILURES, STOP_REASONS, outcome

# A message no field agrees with: every reason, kind and piece of advice below must be worded without it.
MISLEADING = "stopped at step 20 of 35: the app server stopped; did not learn: try 99; DatasetError: disk full"


def stopped_run(tmp_path, reason: StopReason | None, step: int = 20, message: str = MISLEADING) -> Run:
    summary = finished_summary(TINY, 0.5, steps=step, seconds=2.0, steps_per_second=10.0)
    return Run("r", tmp_path, TINY, Status(RunState.STOPPED, message, step=step, stop_reason=reason), summary)


def test_every_stop_reason_and_failure_kind_has_words_on_a_page():
    assert set(STOP_REASONS) == set(StopReason)
    assert set(FAILURES) == set(FailureKind) - {FailureKind.ERROR}  # an error's words are its message


@pytest.mark.parametrize("reason", [reason for reason in StopReason if reason is not StopReason.CANCELLED])
def test_a_stopped_run_says_why_from_its_stop_reason(tmp_path, reason):
    result = outcome(stopped_run(tmp_path, reason))

    assert result.tone == "neutral"
    assert result.headline == "Stopped at step 20 of 35. Test accuracy: 0.5000 for the model as it was."
    assert result.details == f"20 steps in 2.0 s (10 steps/s). {STOP_REASONS[reason]}"


def test_a_run_cancelled_while_queued_says_it_never_started(tmp_path):
    result = outcome(stopped_run(tmp_path, StopReason.CANCELLED, step=0, message="stopped at step 0: whatever"))

    assert result.headline == "Stopped before it started. Cancelled while queued: it never started."
    assert "whatever" not in result.headline + result.details


def test_a_stopped_run_from_before_the_field_says_where_it_stopped_and_no_reason(tmp_path):
    # Old folders have no stop_reason: their message is shown nowhere in the outcome, and nothing is guessed.
    result = outcome(stopped_run(tmp_path, None))

    assert result.headline.startswith("Stopped at step 20 of 35.")
    assert result.details == "20 steps in 2.0 s (10 steps/s)."


ADVICE = [
    pytest.param(10.0, Advice(AdviceKind.STEPS_TOO_LARGE, 2.3, 40.0, 2.31, suggested_learning_rate=1.0),
                 ["shot up from 2.3 to 40", "learning rate 10 (sgd)", "too large", "try 1"], id="too-large"),
    pytest.param(1e-5, Advice(AdviceKind.STEPS_TOO_LARGE, 2.3, 80.0, 2.3, suggested_optimizer="adam"),
                 ["shot up to 80", "smallest learning rate (1e-05)", "another optimizer (adam)"], id="at-the-smallest"),
    pytest.param(1e-4, Advice(AdviceKind.STEPS_TOO_SMALL, 2.3, 2.31, 2.29, suggested_learning_rate=1e-3),
                 ["only went from 2.3 to 2.29", "too small", "try 0.001, or more steps"], id="too-small"),
    pytest.param(10.0, Advice(AdviceKind.STEPS_TOO_SMALL, 2.3, 2.31, 2.29),
                 ["largest learning rate", "train for more steps"], id="at-the-largest"),
]


@pytest.mark.parametrize("learning_rate, advice, words", ADVICE)
def test_a_run_that_learned_nothing_gets_its_advice_from_the_field(tmp_path, learning_rate, advice, words):
    config = TINY.replace(learning_rate=learning_rate)
    status = Status(RunState.COMPLETED, MISLEADING, step=35, advice=advice)
    run = Run("r", tmp_path, config, status, finished_summary(config, 0.1))

    result = outcome(run)

    assert (result.tone, result.headline) == ("bad", "Test accuracy: 0.1000")
    assert "chance level for ten classes: the network learned nothing: " in result.details
    for word in words:
        assert word in result.details, result.details
    assert "99" not in result.details


def test_a_run_at_chance_level_from_before_the_field_gets_no_advice_read_from_its_message(tmp_path):
    run = Run("r", tmp_path, TINY, Status(RunState.COMPLETED, MISLEADING, step=35), finished_summary(TINY, 0.1))

    assert outcome(run).details.endswith("the network learned nothing.")


@pytest.mark.parametrize("kind", [FailureKind.LOST_PEER, FailureKind.DISTRIBUTION])
def test_a_failed_run_is_headed_by_its_kind_of_failure(tmp_path, kind):
    run = Run("r", tmp_path, TINY, Status(RunState.FAILED, "it went wrong somehow", failure=kind))

    result = outcome(run)

    assert (result.tone, result.headline) == ("broken", FAILURES[kind])
    assert "it went wrong somehow" in result.details  # core's sentence is shown whole, as details


def test_a_full_disk_is_said_without_the_servers_folder_that_cores_message_names(tmp_path):
    message = f"no space left on device while writing metrics.csv; free some space in {tmp_path} and train again"
    run = Run("r", tmp_path / "r", TINY, Status(RunState.FAILED, message, failure=FailureKind.NO_SPACE))

    result = outcome(run)

    assert (result.tone, result.headline) == ("broken", FAILURES[FailureKind.NO_SPACE])
    assert str(tmp_path) not in result.headline + result.details  # every visitor reads this


@pytest.mark.parametrize("kind", [FailureKind.ERROR, None], ids=["error", "before-the-field"])
def test_a_failed_run_with_an_error_shows_the_message_as_core_wrote_it(tmp_path, kind):
    run = Run("r", tmp_path, TINY, Status(RunState.FAILED, "the file x.npz does not exist", failure=kind))

    result = outcome(run)

    assert result.headline == "Training failed: the file x.npz does not exist"
    assert result.details == "The full error is in error.txt in the run's folder."
    assert str(tmp_path) not in result.headline + result.details  # a visitor never learns the server's paths


@pytest.mark.parametrize("kind", [FailureKind.PROCESS_ENDED, FailureKind.LEFT_QUEUE])
def test_an_interrupted_run_says_how_from_its_kind(tmp_path, kind):
    run = Run("r", tmp_path, TINY, Status(RunState.INTERRUPTED, MISLEADING, failure=kind))

    result = outcome(run)

    assert (result.tone, result.headline) == ("bad", FAILURES[kind])
    assert result.details == "What it logged until then is kept."


def test_a_run_whose_ray_node_left_the_cluster_names_the_node_from_its_status(tmp_path):
    node_id = "f97196e75e2301117489d6e7f986aa5d1331c21719a8bbfd1002c980"
    run = Run("r", tmp_path, TINY, Status(RunState.INTERRUPTED, MISLEADING, failure=FailureKind.NODE_LOST,
                                          host="lab-gpu-3", node_id=node_id))

    result = outcome(run)

    assert result.tone == "bad"
    assert result.headline == ("This run was interrupted: the machine training it, lab-gpu-3 · Ray node f97196e7, "
                               "left the Ray cluster before it finished.")
