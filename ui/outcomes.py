"""How a run ended, in a page's words: the outcome box's headline and details.

Why a run stopped, the kind of failure and the advice for a run that learned nothing are typed fields of its
status (core/records.py), read here as data and worded for a page; the message core wrote is only ever shown,
never searched for meaning. Nothing here imports streamlit or TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.advice import advice_words, is_chance_level
from core.records import ERROR_FILE, FailureKind, RunState, StopReason
from core.run_folder import Run
from ui.texts import describe_node, format_seconds

# Why a stopped run stopped, as a page says it.
STOP_REASONS = {
    StopReason.ASKED: "Someone asked it to stop.",
    StopReason.SERVER_STOPPED: "The app server stopped.",
    StopReason.WORKER_STOPPED: "The worker training it was asked to stop.",
    StopReason.CANCELLED: "Cancelled while queued: it never started.",
    StopReason.PEER: "Another worker of this multi-worker run asked to stop, so every worker stopped.",
}
# How a failed or interrupted run ended, as a page's headline says it (ERROR's is the message itself).
FAILURES = {
    FailureKind.NO_SPACE: "Training failed: the disk holding the runs is full. Free some space and train again.",
    FailureKind.LOST_PEER: "Training failed: another worker of this multi-worker run stopped answering. Start the "
                           "same command on every machine again.",
    FailureKind.DISTRIBUTION: "This run could not start on the devices it asked for.",
    FailureKind.PROCESS_ENDED: "This run was interrupted: the process training it ended before it finished "
                               "(was the server restarted?).",
    FailureKind.LEFT_QUEUE: "This run was interrupted: it left the queue before a worker started it.",
    FailureKind.REFUSED: "This run was not trained: when a worker took it, it was over the limits it was queued under.",
    FailureKind.NODE_LOST: "This run was interrupted: the machine training it left the Ray cluster before it finished.",
}
# The same, naming the machine, as its status records it (host name and Ray node).
NODE_LOST_NAMED = "This run was interrupted: the machine training it, {node}, left the Ray cluster before it finished."


@dataclass(frozen=True)
class Outcome:
    """How a finished run ended, for a page: `tone` is good, neutral, bad or broken."""

    tone: str
    headline: str
    details: str = ""


def outcome(run: Run) -> Outcome:
    """The end of a run in plain words; 'Test accuracy: 0.9412' for a completed one."""
    state = run.state
    summary = run.summary
    timing = ""
    if summary and summary.steps and summary.seconds and summary.steps_per_second:
        timing = (f"{summary.steps:,} steps in {format_seconds(summary.seconds)} "
                  f"({summary.steps_per_second:,.0f} steps/s)")
    accuracy = run.test_accuracy
    if state is RunState.COMPLETED and accuracy is not None and is_chance_level(accuracy):
        advice = run.status.advice
        return Outcome("bad", f"Test accuracy: {accuracy:.4f}",
                       (f"{timing}. " if timing else "") + "That is chance level for ten classes: the network "
                       "learned nothing" + (f": {advice_words(advice, run.config)}." if advice else "."))
    if state is RunState.COMPLETED and accuracy is not None:
        return Outcome("good", f"Test accuracy: {accuracy:.4f}", timing)
    if state is RunState.STOPPED:
        return _stopped_outcome(run, timing)
    if state is RunState.DIVERGED:
        return Outcome("broken", "The loss blew up, so training stopped. Try a smaller learning rate.",
                       f"What happened: {run.message}.")
    if state in (RunState.FAILED, RunState.INTERRUPTED):
        return _failed_outcome(run)
    if state is RunState.DAMAGED:
        return Outcome("bad", f"This run folder cannot be read: {run.damaged}")
    if state is RunState.COMPLETED:
        return Outcome("neutral", "Completed, with no test accuracy recorded.", timing)
    if state is RunState.QUEUED:
        return Outcome("neutral", "Queued: waiting for a worker.")
    return Outcome("neutral", f"Still training: step {run.step:,} of {run.total_steps:,}.")


def _stopped_outcome(run: Run, timing: str) -> Outcome:
    """A stopped run: where it stopped, why (when its status says; folders from before the field do not)."""
    reason = run.status.stop_reason
    why = STOP_REASONS[reason] if reason else ""
    if reason is StopReason.CANCELLED or run.step == 0:  # it never trained
        return Outcome("neutral", " ".join(part for part in ("Stopped before it started.", why) if part))
    accuracy = run.test_accuracy
    scored = f" Test accuracy: {accuracy:.4f} for the model as it was." if accuracy is not None else ""
    return Outcome("neutral", f"Stopped at step {run.step:,} of {run.total_steps:,}.{scored}",
                   " ".join(part for part in (timing and f"{timing}.", why) if part))


def _failed_outcome(run: Run) -> Outcome:
    """A failed or interrupted run, worded from the kind of failure its status records."""
    kind = run.status.failure
    if run.state is RunState.INTERRUPTED and kind is FailureKind.NODE_LOST and describe_node(run.status):
        return Outcome("bad", NODE_LOST_NAMED.format(node=describe_node(run.status)),
                       "What it logged until then is kept.")
    if run.state is RunState.INTERRUPTED:
        return Outcome("bad", FAILURES[kind if kind in FAILURES else FailureKind.PROCESS_ENDED],
                       "What it logged until then is kept.")
    # The file's name in the run folder, never its path: every visitor reads this, and the path is the server's.
    error_file = f"The full error is in {ERROR_FILE} in the run's folder."
    if kind is FailureKind.NO_SPACE:  # core's message names the server's folder to free: the CLI's to say
        return Outcome("broken", FAILURES[kind], f"What it logged until then is kept. {error_file}")
    if kind is FailureKind.LOST_PEER:
        return Outcome("broken", FAILURES[kind], f"What happened: {run.message}. {error_file}")
    if kind in (FailureKind.DISTRIBUTION, FailureKind.REFUSED):
        return Outcome("broken", FAILURES[kind], run.message)
    return Outcome("broken", f"Training failed: {run.message}", error_file)
