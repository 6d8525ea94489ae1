"""What to tell a person whose run went wrong: plain sentences about the loss and the learning rate.

The trainer puts these in a run's status message, and pages show them; nothing here imports TensorFlow.
"""

from __future__ import annotations

from core.config import SETTINGS_BY_NAME

# Ten balanced classes: 0.10 is guessing. A run that ends at or below this did not learn anything.
CHANCE_LEVEL_ACCURACY = 0.15


def smaller_learning_rate(learning_rate: float) -> float:
    """A tenth of the learning rate, never below the smallest one allowed."""
    return max(learning_rate / 10, SETTINGS_BY_NAME["learning_rate"].low)


def diverged_message(config, loss: float, step: int) -> str:
    """What to tell a person whose loss became NaN or infinite."""
    return (f"the loss became {loss} at step {step} with learning rate {config.learning_rate:g}; "
            f"try a smaller learning rate, such as {smaller_learning_rate(config.learning_rate):g}")


def is_chance_level(test_accuracy: float | None) -> bool:
    """True when a test accuracy is no better than guessing one of ten classes."""
    return test_accuracy is not None and test_accuracy <= CHANCE_LEVEL_ACCURACY


def chance_level_warning(config, test_accuracy: float) -> str:
    """A sentence to add when a run ended no better than guessing (dead units after too large a step)."""
    if not is_chance_level(test_accuracy):
        return ""
    return (f"; that is no better than guessing, so the network did not learn: with learning rate "
            f"{config.learning_rate:g} ({config.optimizer}) the steps are probably too large, try "
            f"{smaller_learning_rate(config.learning_rate):g}")
