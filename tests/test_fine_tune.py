"""Fine-tuning: a run that starts from another run's weights (init_from) and mixes kept drawings into its batches.

The last test is the issue's: a personal hand the model misreads (a slashed zero, read as 8), drawn with the
canvas's own strokes (tests/handwriting.py) and preprocessed as the Draw page does; six drawings of each digit
are kept, the model fine-tuned, and 20 fresh slashed zeros and 20 fresh drawings of the whole hand, never kept,
are read. Its figures: `.venv/bin/python -m pytest tests/test_fine_tune.py -k hand -s`.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from core import collection, fine_tune, service
from core.access import OPERATOR, new_guest
from core.collection import CollectionError
from core.config import TrainConfig
from core.digits import classify, preprocess_drawing
from core.export_script import run_script
from core.fine_tune import FineTuneError, MixedBatchSchedule
from core.network import load_model
from core.store import load_run
from core.training import train
from tests.factories import TINY
from tests.handwriting import drawings, render
from tests.test_cli import run_cli


def keep_some(runs_dir, identity=OPERATOR, per_digit=5, digits=(0, 1)):
    rng = np.random.default_rng(0)
    for digit in digits:
        for _ in range(per_digit):
            image = np.zeros((28, 28), np.float32)
            image[6:22, 8 + digit * 4:12 + digit * 4] = rng.uniform(0.5, 1.0)
            collection.keep_drawing(runs_dir, image, digit, identity=identity)
    return collection.freeze(runs_dir, identity=identity)


def test_mixed_batches_take_their_share_from_the_drawings_and_repeat_with_the_seed():
    batches = MixedBatchSchedule(original_size=100, drawings_size=7, batch_size=20, share=0.25, seed=3).take(30)
    again = MixedBatchSchedule(original_size=100, drawings_size=7, batch_size=20, share=0.25, seed=3).take(30)

    np.testing.assert_array_equal(batches, again)
    assert batches.shape == (30, 20)
    assert (batches[:, :15] < 100).all() and (batches[:, 15:] >= 100).all() and (batches < 107).all()
    assert set(batches[:, 15:].ravel()) == set(range(100, 107))  # every drawing comes round


@pytest.mark.parametrize("engine", ["function", "session"])
def test_a_run_starts_from_the_weights_of_the_run_it_names(tmp_path, engine):
    source = train(TINY.replace(engine=engine), tmp_path)

    tuned = train(TINY.replace(engine=engine, init_from=source.run_id, steps=1, eval_every=1, learning_rate=1e-5),
                  tmp_path)

    assert tuned.state == "completed", tuned.message
    # Measured before its first step on the same test set: the source's figure, so its weights were loaded.
    assert tuned.summary.initial_test_accuracy == pytest.approx(source.test_accuracy, abs=1e-9)
    assert tuned.summary.collection_accuracy is None
    fresh = train(TINY.replace(engine=engine, steps=1, eval_every=1, learning_rate=1e-5), tmp_path)
    assert abs(fresh.test_accuracy - tuned.test_accuracy) > 0.05  # fresh weights are far from trained ones


def test_a_run_whose_layers_differ_from_the_run_it_starts_from_is_refused_in_a_sentence(tmp_path):
    source = train(TINY, tmp_path)
    wider = TINY.replace(hidden_units=[32], init_from=source.run_id)

    with pytest.raises(FineTuneError, match=r"has the layers 784-16-10 .* and this run 784-32-10 .* same layers"):
        service.check_submission([wider], tmp_path, OPERATOR, limits=False)
    failed = train(wider, tmp_path)  # the command line's way: the run fails, saying the same
    assert failed.state == "failed" and "same layers" in failed.message
    with pytest.raises(FineTuneError, match="there is no run 'nothing-here'"):
        service.check_submission([TINY.replace(init_from="nothing-here")], tmp_path, OPERATOR, limits=False)
    # The command line refuses it before any run folder exists: one line, exit code 2.
    before = sorted(path.name for path in tmp_path.iterdir())
    refused = run_cli("--runs-dir", str(tmp_path), "--source", "offline", "--hidden-units", "32",
                      "--init-from", source.run_id)
    assert refused.returncode == 2 and "same layers" in refused.stderr.splitlines()[-1]
    assert sorted(path.name for path in tmp_path.iterdir()) == before


def test_a_run_trains_only_on_a_snapshot_of_who_asks(tmp_path):
    frozen = keep_some(tmp_path)
    config = TINY.replace(collection=frozen.snapshot_id)

    service.check_submission([config], tmp_path, OPERATOR, limits=False)
    with pytest.raises(CollectionError, match="no snapshot"):
        service.check_submission([config], tmp_path, new_guest(), limits=False)


def test_a_run_on_kept_drawings_mixes_them_in_and_reports_both_accuracies(tmp_path):
    source = train(TINY, tmp_path)
    frozen = keep_some(tmp_path)
    config = fine_tune.fine_tune_config(load_run(source.run_id, tmp_path), frozen.snapshot_id).replace(steps=20,
                                                                                                     eval_every=10)
    assert (config.init_from, config.collection, config.augment) == (source.run_id, frozen.snapshot_id, True)
    assert config.learning_rate == pytest.approx(TINY.learning_rate * fine_tune.LEARNING_RATE_FACTOR)

    tuned = train(config, tmp_path)

    assert tuned.state == "completed", tuned.message
    summary = tuned.summary
    assert summary.collection_held_out == 2 and summary.data_sizes["train"] == 4000 + 8
    assert frozen.snapshot_id in summary.data_source
    assert 0 <= summary.collection_accuracy <= 1 and 0 <= summary.initial_collection_accuracy <= 1
    assert summary.initial_test_accuracy == pytest.approx(source.test_accuracy)
    assert "fine-tuned" in run_script(tuned)
    # Fine-tuning the fine-tuned run again starts from its weights, at its (already reduced) learning rate.
    again = fine_tune.fine_tune_config(tuned, frozen.snapshot_id)
    assert (again.init_from, again.learning_rate) == (tuned.run_id, config.learning_rate)


def read(model, items) -> np.ndarray:
    """The digits a model reads in drawings given as (digit, strokes), through the page's preprocessing."""
    images = np.stack([preprocess_drawing(render(strokes)) for _, strokes in items])
    return classify(model, images).argmax(axis=1)


def accuracy(model, items) -> float:
    return float(np.mean(read(model, items) == np.array([digit for digit, _ in items])))


def test_fine_tuning_on_a_hand_with_a_slashed_zero_reads_it_and_keeps_the_test_accuracy(tmp_path):
    base = train(TrainConfig(source="offline"), tmp_path)  # the article's MLP, as the Draw page trains it
    fresh_zeros, fresh_hand = drawings([0], 20, seed=2), drawings(range(10), 2, seed=3)
    base_model = load_model(base.model_path)
    zeros_before, hand_before = accuracy(base_model, fresh_zeros), accuracy(base_model, fresh_hand)
    assert zeros_before <= 0.5  # the style the model misreads: a slashed zero reads as 8
    for digit, strokes in drawings(range(10), 6, seed=1):  # six of each digit kept, never the fresh ones
        collection.keep_drawing(tmp_path, preprocess_drawing(render(strokes)), digit, identity=OPERATOR)
    frozen = collection.freeze(tmp_path, identity=OPERATOR)

    started = time.monotonic()
    tuned = train(fine_tune.fine_tune_config(load_run(base.run_id, tmp_path), frozen.snapshot_id), tmp_path)
    seconds = time.monotonic() - started

    assert tuned.state == "completed", tuned.message
    model = load_model(tuned.model_path)
    zeros_after, hand_after = accuracy(model, fresh_zeros), accuracy(model, fresh_hand)
    print(f"\nslashed zeros {zeros_before:.0%} -> {zeros_after:.0%}, the whole hand {hand_before:.0%} -> "
          f"{hand_after:.0%} (20 fresh drawings each); original test accuracy {base.test_accuracy:.3f} -> "
          f"{tuned.test_accuracy:.3f}; held-out kept drawings {tuned.summary.initial_collection_accuracy:.0%} -> "
          f"{tuned.summary.collection_accuracy:.0%}; fine-tuning {seconds:.1f} s ({tuned.summary.seconds:.1f} s "
          "of steps)")
    assert zeros_after >= 0.9 and hand_after >= 0.9
    assert tuned.test_accuracy >= base.test_accuracy - 0.01
    assert tuned.summary.initial_test_accuracy == pytest.approx(base.test_accuracy)
