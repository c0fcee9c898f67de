"""Words for which weights a result was made with (Explore, Compare): a training run's
current weights, between its steps, or the run's saved checkpoint."""

from __future__ import annotations


def describe_weights(live: bool, step: int | None) -> str:
    """``live``: the training model's weights at ``step``; else the saved checkpoint's."""
    at = "?" if step is None else f"{step:,}"
    if live:
        return f"Live weights: training step {at} (the run is training)"
    if step is None:
        return "Saved weights"
    return f"Saved weights: checkpoint of step {at}"
