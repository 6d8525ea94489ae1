"""Tests for core.records: the typed records of status.json and summary.json, checked field by field on read,
so that a hand-edited or damaged folder is a damaged run that names the file and the field."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict

import pytest

from core.records import (
    CONFIG_FILE, EVALUATIONS_FILE, METRICS_FILE, MODEL_FILE, STATUS_FILE, SUMMARY_FILE, Advice, AdviceKind,
    FailureKind, RunState, Status, StopReason, Summary,
)
from core.access import OPERATOR, member, owner_name_of, owner_of
from core.run_folder import read_folder
from core.store import best_run, create_run, list_runs, load_run, load_runs, read_run
from tests.factories import TINY, finished_summary, make_run, rewrite_json

METRICS_HEADER = "step,loss,batch_accuracy"


# --- the typed records -------------------------------------------------------------------------------


def test_status_and_summary_round_trip_through_json(tmp_path):
    run = make_run(tmp_path, state=RunState.STOPPED, message="stopped at step 20", test_accuracy=0.5)
    on_disk = json.loads((run.path / STATUS_FILE).read_text())

    assert on_disk["status"] == "stopped" and "state" not in on_disk
    assert Status.from_json(on_disk) == run.status
    summary = finished_summary(TINY, 0.5)
    assert Summary.from_json(json.loads((run.path / SUMMARY_FILE).read_text())) == summary
    reread = load_run(run.run_id, tmp_path)
    assert reread.summary == summary and reread.test_accuracy == 0.5 and reread.step == TINY.steps
    assert reread.data_description == summary.data_source


@pytest.mark.parametrize("state, ending", [
    (RunState.STOPPED, {"stop_reason": StopReason.PEER}),
    (RunState.FAILED, {"failure": FailureKind.NO_SPACE}),
    (RunState.INTERRUPTED, {"failure": FailureKind.LEFT_QUEUE}),
    (RunState.COMPLETED, {"advice": Advice(AdviceKind.STEPS_TOO_SMALL, 2.3, 2.31, 2.29, suggested_learning_rate=1e-3)}),
    (RunState.COMPLETED, {"advice": Advice(AdviceKind.STEPS_TOO_LARGE, 2.3, 80.0, 2.3, suggested_optimizer="adam")}),
], ids=["stop-reason", "failure", "interrupted", "advice", "advice-optimizer"])
def test_how_a_run_ended_round_trips_through_status_json_as_typed_fields(tmp_path, state, ending):
    run = make_run(tmp_path, state=state, message="a sentence for people", **ending)
    on_disk = json.loads((run.path / STATUS_FILE).read_text())

    reread = read_folder(run.path).status  # as written: the store's liveness checks play no part
    assert reread == run.status and reread.message == "a sentence for people"
    name, value = next(iter(ending.items()))
    assert getattr(reread, name) == value and type(getattr(reread, name)) is type(value)
    assert on_disk[name] == (asdict(value) if isinstance(value, Advice) else str(value))  # plain JSON words


def test_a_status_from_before_the_ending_fields_reads_them_as_unknown(tmp_path):
    run = make_run(tmp_path, state=RunState.STOPPED, message="stopped at step 20 of 35: the app server stopped")
    rewrite_json(run.path / STATUS_FILE, lambda values: {key: value for key, value in values.items()
                                                         if key not in ("stop_reason", "failure", "advice")})

    reread = load_run(run.run_id, tmp_path)

    assert reread.damaged is None and reread.state is RunState.STOPPED
    assert (reread.status.stop_reason, reread.status.failure, reread.status.advice) == (None, None, None)


def test_the_owner_round_trips_and_a_status_from_before_owners_reads_as_the_operators(tmp_path):
    alice = member({"iss": "https://id.example.org", "sub": "alice", "name": "Alice Liddell"}, frozenset())
    run = create_run(TINY, tmp_path, owner=alice)
    old = make_run(tmp_path)
    rewrite_json(old.path / STATUS_FILE, lambda values: {key: value for key, value in values.items()
                                                         if key not in ("owner", "owner_name")})

    reread, older = load_run(run.run_id, tmp_path), load_run(old.run_id, tmp_path)

    assert (reread.status.owner, reread.status.owner_name) == (alice.key, "Alice Liddell")
    assert older.damaged is None and (older.status.owner, older.status.owner_name) == (None, None)
    assert (owner_of(older.status), owner_name_of(older.status)) == (OPERATOR.key, "operator")
    assert load_run(make_run(tmp_path).run_id, tmp_path).status.owner == OPERATOR.key  # the store's default


def test_a_status_from_before_owners_with_a_visitor_field_still_reads(tmp_path):
    run = make_run(tmp_path)
    rewrite_json(run.path / STATUS_FILE, lambda values: {**values, "visitor": "0123abcd"})

    assert load_run(run.run_id, tmp_path).damaged is None


def test_a_new_state_does_not_keep_the_ending_of_the_last_one(tmp_path):
    run = make_run(tmp_path, state=RunState.STOPPED, stop_reason=StopReason.ASKED)

    run.write_status(RunState.FAILED, "it failed afterwards", failure=FailureKind.ERROR)

    reread = load_run(run.run_id, tmp_path)
    assert reread.damaged is None  # a stop reason left on a failed run would read as damage
    assert (reread.status.stop_reason, reread.status.failure) == (None, FailureKind.ERROR)


def test_run_states_compare_equal_to_their_words():
    assert RunState.COMPLETED == "completed" and RunState("diverged") is RunState.DIVERGED
    assert [state for state in RunState if not state.finished] == [RunState.QUEUED, RunState.RUNNING]
    assert [state for state in RunState if state.active] == [RunState.QUEUED, RunState.RUNNING]
    assert RunState.QUEUED == "queued" and RunState("queued") is RunState.QUEUED


def test_write_status_refuses_damaged_and_unknown_states(tmp_path):
    run = make_run(tmp_path)

    with pytest.raises(ValueError, match="damaged"):
        run.write_status(RunState.DAMAGED)
    with pytest.raises(ValueError, match="finished"):
        run.write_status("finished")
    assert load_run(run.run_id, tmp_path).state is RunState.COMPLETED


# --- damaged folders -------------------------------------------------------------------------------


def _summary(**changes):
    return lambda path: rewrite_json(path / SUMMARY_FILE, lambda values: {**values, **changes})


def _status(**changes):
    return lambda path: rewrite_json(path / STATUS_FILE, lambda values: {**values, **changes})


def _without(name, key):
    return lambda path: rewrite_json(path / name, lambda values: {k: v for k, v in values.items() if k != key})


def _text(name, text):
    return lambda path: (path / name).write_text(text)


def _random_bytes(name):
    return lambda path: (path / name).write_bytes(os.urandom(4096))


def _folder(name):
    def edit(path):
        (path / name).unlink()
        (path / name).mkdir()
    return edit


def _link_out(name):
    """The file replaced by a link to a file outside the folder with the very same content: only the link is wrong."""
    def edit(path):
        outside = path.parent / f"outside-{name}"
        shutil.copyfile(path / name, outside)
        (path / name).unlink()
        (path / name).symlink_to(outside)
    return edit


def _link_to(name, target):
    def edit(path):
        (path / name).unlink()
        (path / name).symlink_to(target)
    return edit


ADVICE_JSON = {"kind": "steps-too-large", "first_loss": 2.3, "highest_loss": 40.0, "last_loss": 2.3,
               "suggested_learning_rate": 1.0, "suggested_optimizer": None}
# (edit of a good run's copy, words the reason must hold: the file first, then the field or value)
DAMAGE = {
    "accuracy-word": (_summary(test_accuracy="high"), [SUMMARY_FILE, "test_accuracy", "'high'", "from 0 to 1"]),
    "accuracy-nan": (_summary(test_accuracy=float("nan")), [SUMMARY_FILE, "test_accuracy", "nan"]),
    "accuracy-5": (_summary(test_accuracy=5), [SUMMARY_FILE, "test_accuracy", "5"]),
    "accuracy-negative": (_summary(test_accuracy=-0.1), [SUMMARY_FILE, "test_accuracy", "-0.1"]),
    "accuracy-true": (_summary(test_accuracy=True), [SUMMARY_FILE, "test_accuracy", "True"]),
    "data-sizes-word": (_summary(data_sizes="z"), [SUMMARY_FILE, "data_sizes", "'z'"]),
    "steps-word": (_summary(steps="x"), [SUMMARY_FILE, "steps", "'x'"]),
    "summary-engine": (_summary(engine="pytorch"), [SUMMARY_FILE, "engine", "pytorch"]),
    "summary-source": (_summary(source=[]), [SUMMARY_FILE, "source"]),
    "summary-missing-field": (_without(SUMMARY_FILE, "test_loss"), [SUMMARY_FILE, "test_loss"]),
    "summary-list": (_text(SUMMARY_FILE, "[0.9, 0.3]"), [SUMMARY_FILE, "list"]),
    "summary-half-written": (_text(SUMMARY_FILE, '{"test_accuracy": 0.9'), [SUMMARY_FILE, "JSON"]),
    "summary-folder": (_folder(SUMMARY_FILE), [SUMMARY_FILE, "not a file"]),
    "message-null": (_text(STATUS_FILE, '{"status": "failed", "message": null}'), [STATUS_FILE, "message", "None"]),
    "status-number": (_status(status=5), [STATUS_FILE, "status", "5"]),
    "status-exploded": (_status(status="exploded"), [STATUS_FILE, "status", "exploded"]),
    "status-damaged": (_status(status="damaged"), [STATUS_FILE, "status", "damaged"]),  # read, never written
    "status-empty-object": (_text(STATUS_FILE, "{}"), [STATUS_FILE, "no status"]),
    "status-list": (_text(STATUS_FILE, "[1, 2]"), [STATUS_FILE, "list"]),
    "status-half-written": (_text(STATUS_FILE, "{ this is not json"), [STATUS_FILE, "JSON"]),
    "status-empty-file": (_text(STATUS_FILE, ""), [STATUS_FILE, "JSON"]),
    "status-random-bytes": (_random_bytes(STATUS_FILE), [STATUS_FILE]),
    "status-missing": (lambda path: (path / STATUS_FILE).unlink(), [STATUS_FILE, "missing"]),
    "step-word": (_status(step="x"), [STATUS_FILE, "step", "'x'"]),
    "step-negative": (_status(step=-1), [STATUS_FILE, "step", "-1"]),
    "pid-word": (_status(pid="x"), [STATUS_FILE, "pid", "'x'"]),
    "started-at-word": (_status(started_at="yesterday"), [STATUS_FILE, "started_at", "yesterday"]),
    "owner-number": (_status(owner=7), [STATUS_FILE, "owner", "7", "non-empty text"]),
    "owner-empty": (_status(owner=" "), [STATUS_FILE, "owner", "' '"]),
    "owner-name-list": (_status(owner_name=["Alice"]), [STATUS_FILE, "owner_name", "['Alice']"]),
    "queue-entry-list": (_status(queue_entry=["x"]), [STATUS_FILE, "queue_entry", "['x']"]),
    # How a run ended: typed fields, checked like the others (the good run is completed).
    "stop-reason-word": (_status(status="stopped", stop_reason="bored"), [STATUS_FILE, "stop_reason", "'bored'",
                                                                         "asked, server-stopped"]),
    "stop-reason-on-completed": (_status(stop_reason="asked"), [STATUS_FILE, "stop_reason", "'asked'", "completed"]),
    "failure-number": (_status(status="failed", failure=7), [STATUS_FILE, "failure", "7", "no-space"]),
    "failure-on-stopped": (_status(status="stopped", failure="no-space"), [STATUS_FILE, "failure", "stopped"]),
    "advice-word": (_status(advice="try harder"), [STATUS_FILE, "advice", "'try harder'"]),
    "advice-kind": (_status(advice={**ADVICE_JSON, "kind": "vibes"}), [STATUS_FILE, "advice.kind", "'vibes'"]),
    "advice-loss-negative": (_status(advice={**ADVICE_JSON, "first_loss": -1}), [STATUS_FILE, "advice.first_loss"]),
    "advice-loss-nan": (_status(advice={**ADVICE_JSON, "highest_loss": float("nan")}),
                        [STATUS_FILE, "advice.highest_loss", "nan"]),
    "advice-missing-loss": (_status(advice={"kind": "steps-too-small"}), [STATUS_FILE, "advice", "first_loss"]),
    "advice-rate-zero": (_status(advice={**ADVICE_JSON, "suggested_learning_rate": 0}),
                         [STATUS_FILE, "advice.suggested_learning_rate", "0"]),
    "advice-optimizer": (_status(advice={**ADVICE_JSON, "suggested_optimizer": "newton"}),
                         [STATUS_FILE, "advice.suggested_optimizer", "newton"]),
    "advice-on-failed": (_status(status="failed", advice=ADVICE_JSON), [STATUS_FILE, "advice", "failed"]),
    "config-missing": (lambda path: (path / CONFIG_FILE).unlink(), [CONFIG_FILE, "missing"]),
    "config-unknown-field": (_text(CONFIG_FILE, json.dumps({**TINY.to_dict(), "colour": "blue"})),
                             [CONFIG_FILE, "unknown", "colour"]),
    "config-bad-value": (_text(CONFIG_FILE, json.dumps({**TINY.to_dict(), "learning_rate": 99})),
                         [CONFIG_FILE, "learning_rate", "99"]),
    "config-random-bytes": (_random_bytes(CONFIG_FILE), [CONFIG_FILE]),
    "metrics-random-bytes": (_random_bytes(METRICS_FILE), [METRICS_FILE, "header", METRICS_HEADER]),
    "metrics-other-header": (_text(METRICS_FILE, "epoch,loss\n1,2.0\n"), [METRICS_FILE, "header"]),
    "evaluations-random-bytes": (_random_bytes(EVALUATIONS_FILE), [EVALUATIONS_FILE, "header"]),
    "metrics-folder": (_folder(METRICS_FILE), [METRICS_FILE, "not a file"]),
    "model-folder": (_folder(MODEL_FILE), [MODEL_FILE, "not a file"]),
    # A link is not a file the store wrote, wherever it points: a page would serve what it points at.
    "model-link": (_link_to(MODEL_FILE, "/etc/passwd"), [MODEL_FILE, "a link"]),
    "model-link-out": (_link_out(MODEL_FILE), [MODEL_FILE, "a link"]),
    "config-link-out": (_link_out(CONFIG_FILE), [CONFIG_FILE, "a link"]),
    "status-link-out": (_link_out(STATUS_FILE), [STATUS_FILE, "a link"]),
    "summary-link-out": (_link_out(SUMMARY_FILE), [SUMMARY_FILE, "a link"]),
}
DAMAGE_CASES = [pytest.param(edit, words, id=name) for name, (edit, words) in DAMAGE.items()] + [
    pytest.param(_text(STATUS_FILE, "[" * 100_000), [STATUS_FILE, "JSON"], id="status-deeply-nested"),
]


@pytest.fixture
def good_run(tmp_path):
    """A completed run with everything a finished training leaves: status, summary, metrics, evaluations, model."""
    run = make_run(tmp_path, model=True)
    run.append_metrics([(0, 2.3, 0.1), (1, 2.1, 0.2)])
    run.append_evaluation(10, 0.75, 0.8125)
    return run


@pytest.mark.parametrize("damage, words", DAMAGE_CASES)
def test_a_damaged_folder_is_listed_with_the_reason_in_words(tmp_path, good_run, damage, words):
    damaged_path = tmp_path / f"{good_run.run_id}-copy"
    shutil.copytree(good_run.path, damaged_path)
    damage(damaged_path)

    runs = {run.run_id: run for run in list_runs(tmp_path)}

    assert set(runs) == {good_run.run_id, damaged_path.name}
    good = runs[good_run.run_id]
    assert good.state is RunState.COMPLETED and good.damaged is None and good.test_accuracy == 0.9
    damaged = runs[damaged_path.name]
    assert damaged.state is RunState.DAMAGED
    reason = damaged.damaged
    assert reason and reason.startswith(words[0]), reason  # the file first, then what is wrong with it
    for word in words[1:]:
        assert word in reason, reason
    assert "\n" not in reason and "Traceback" not in reason and len(reason) < 400, reason
    assert damaged.message == reason  # what a page shows as the run's message
    # Reading by id or by path gives the same answer and never raises; a damaged run never wins.
    assert load_run(damaged_path.name, tmp_path).damaged == reason
    assert read_run(damaged_path).damaged == reason
    assert best_run(tmp_path).run_id == good_run.run_id
    assert [run.run_id for run in load_runs([damaged_path.name, good_run.run_id], tmp_path)] == [good_run.run_id]
