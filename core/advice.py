"""What to tell a person whose run went wrong: plain sentences about the loss and the learning rate.

For a run that learned nothing, the advice is a typed record first (core.records.Advice, kept in its status)
and words second: the trainer puts the words in the status message for the command line, and pages word the
same record with `advice_words`, never by reading the message. Nothing here imports TensorFlow.
"""

from __future__ import annotations

from core.config import SETTINGS_BY_NAME
from core.records import Advice, AdviceKind

# Ten balanced classes: 0.10 is guessing. A run that ends at or below this did not learn anything.
CHANCE_LEVEL_ACCURACY = 0.15


# A loss that climbed past this many times where it started blew up: the steps were too large.
BLEW_UP_FACTOR = 2.0
LEARNING_RATE = SETTINGS_BY_NAME["learning_rate"]


def smaller_learning_rate(learning_rate: float) -> float:
    """A tenth of the learning rate, never below the smallest one allowed."""
    return max(learning_rate / 10, LEARNING_RATE.low)


def larger_learning_rate(learning_rate: float) -> float:
    """Ten times the learning rate, never above the largest one allowed."""
    return min(learning_rate * 10, LEARNING_RATE.high)


def other_optimizer(config) -> str:
    """An optimizer to suggest instead of the one the run used: adam, or rmsprop for a run that used adam."""
    return "rmsprop" if config.optimizer == "adam" else "adam"


def diverged_message(config, loss: float, step: int) -> str:
    """What to tell a person whose loss became NaN or infinite."""
    if config.learning_rate <= LEARNING_RATE.low:
        return (f"the loss became {loss} at step {step} even at the smallest learning rate, "
                f"{config.learning_rate:g}; try another optimizer ({other_optimizer(config)}) or a smaller network")
    return (f"the loss became {loss} at step {step} with learning rate {config.learning_rate:g}; "
            f"try a smaller learning rate, such as {smaller_learning_rate(config.learning_rate):g}")


def is_chance_level(test_accuracy: float | None) -> bool:
    """True when a test accuracy is no better than guessing one of ten classes."""
    return test_accuracy is not None and test_accuracy <= CHANCE_LEVEL_ACCURACY


def chance_level_advice(config, test_accuracy: float | None, first_loss: float, highest_loss: float,
                        last_loss: float) -> Advice | None:
    """For a run that ended no better than guessing, whether its steps were too large or too small, and what
    to try; None for a run that learned.

    Too large, the loss shoots up (ReLU units die, and it settles back near chance); too small, it hardly
    moves from where it started. The suggestion always stays within the learning rates allowed.
    """
    if not is_chance_level(test_accuracy):
        return None
    rate = config.learning_rate
    losses = dict(first_loss=first_loss, highest_loss=highest_loss, last_loss=last_loss)
    if highest_loss > BLEW_UP_FACTOR * first_loss:
        if rate <= LEARNING_RATE.low:
            return Advice(AdviceKind.STEPS_TOO_LARGE, **losses, suggested_optimizer=other_optimizer(config))
        return Advice(AdviceKind.STEPS_TOO_LARGE, **losses, suggested_learning_rate=smaller_learning_rate(rate))
    if rate >= LEARNING_RATE.high:
        return Advice(AdviceKind.STEPS_TOO_SMALL, **losses)
    return Advice(AdviceKind.STEPS_TOO_SMALL, **losses, suggested_learning_rate=larger_learning_rate(rate))


def advice_words(advice: Advice, config) -> str:
    """The advice in words, for the run's `config`: what the loss did, and what to try."""
    rate = config.learning_rate
    if advice.kind is AdviceKind.STEPS_TOO_LARGE:
        if advice.suggested_learning_rate is None:
            return (f"the loss shot up to {advice.highest_loss:.3g} even at the smallest learning rate ({rate:g}); "
                    f"try another optimizer ({advice.suggested_optimizer or other_optimizer(config)})")
        return (f"the loss shot up from {advice.first_loss:.3g} to {advice.highest_loss:.3g}, so with learning "
                f"rate {rate:g} ({config.optimizer}) the steps are too large; "
                f"try {advice.suggested_learning_rate:g}")
    if advice.suggested_learning_rate is None:
        return (f"the loss only went from {advice.first_loss:.3g} to {advice.last_loss:.3g} even at the largest "
                "learning rate; train for more steps")
    return (f"the loss only went from {advice.first_loss:.3g} to {advice.last_loss:.3g}, so with learning rate "
            f"{rate:g} ({config.optimizer}) the steps are too small; try {advice.suggested_learning_rate:g}, "
            "or more steps")


def chance_level_warning(config, test_accuracy: float, first_loss: float, highest_loss: float,
                         last_loss: float) -> str:
    """The words to add to a status message when a run ended no better than guessing ("" when it learned)."""
    advice = chance_level_advice(config, test_accuracy, first_loss, highest_loss, last_loss)
    if advice is None:
        return ""
    return "; that is no better than guessing, so the network did not learn: " + advice_words(advice, config)
