"""A family's perceptual loss (:class:`~studio.models.capabilities.PerceptualFamily`): the
trainer hands a family that asks for one the feature function of the extractor the studio
trains on the run's own images (:mod:`studio.engine.feature_extractor`; nothing is
downloaded). The extractor is the one Compare uses for the same folder and resolution (the
held-out images left out of its training, 600 steps, seed 0), so it is trained once and then
read from the cache, on a resume too."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import torch

from studio.core.jobs import Progress
from studio.engine.feature_extractor import get_feature_extractor
from studio.engine.run_data import RunData
from studio.models.base import GenerativeModel
from studio.models.capabilities import PerceptualFamily

EXTRACTOR_STEPS = 600  # as Compare's default, so both share one cached extractor


def attach_perceptual(
    model: GenerativeModel,
    data: RunData,
    resolution: int,
    device: torch.device,
    cache_dir: Path | None,
) -> Generator[Progress, None, None]:
    """Job step: give ``model`` its feature function when it asks for one; else nothing."""
    if not isinstance(model, PerceptualFamily) or not model.wants_perceptual_features():
        return
    yield Progress("load", message="Perceptual loss: the feature extractor for this data")
    extractor = yield from get_feature_extractor(
        data.dataset,
        resolution,
        cache_dir,
        exclude=data.held_idx,
        steps=EXTRACTOR_STEPS,
        seed=0,
        device=device,
    )
    model.set_perceptual_features(extractor.perceptual())
    yield Progress("load", message=f"Perceptual loss through {extractor.describe()}")
