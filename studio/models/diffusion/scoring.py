"""Diffusion's anomaly score: the denoising error.

Each image is noised to a few fixed levels of the training noise process (noise drawn from the
caller's CPU generator, so a seed gives the same scores), the model predicts the clean image
back, and the squared error of that prediction, averaged over the levels, is the score. An
image like the training set is denoised well at every level; a foreign one is "repaired"
towards what the model knows, and the error shows where (the per-pixel map).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from studio.models.capabilities import DENOISING, ScoreBatch
from studio.models.diffusion.samplers import predicted_x0

# Fractions of the training timesteps the error is measured at: low levels test fine detail,
# high ones the overall composition. Few, fixed: four network passes per image.
SCORE_LEVELS = (0.1, 0.25, 0.5, 0.75)
RECONSTRUCTION_LEVEL = 1  # the level whose prediction is shown as "the reconstruction"

Denoiser = Callable[[Tensor, Tensor], Tensor]


class DenoisingScore:
    """:class:`~studio.models.capabilities.ScoreFamily` for a diffusion family: it provides
    ``score_denoiser(n, labels)``, the network call ``f(x_t, t) -> output`` (EMA weights,
    unconditional where no labels are given)."""

    scores = (DENOISING,)

    def score_denoiser(self, n: int, labels: Tensor | None) -> Denoiser:
        raise NotImplementedError

    @torch.no_grad()
    def anomaly_scores(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ScoreBatch:
        c = self.config  # type: ignore[attr-defined]
        device = self.device  # type: ignore[attr-defined]
        alphas = self.scheduler.alphas_cumprod  # type: ignore[attr-defined]
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        x0 = images.to(device).float()
        n = len(x0)
        denoise = self.score_denoiser(n, labels)
        total = torch.zeros(n, *x0.shape[2:], device=device)
        shown = x0
        for i, level in enumerate(SCORE_LEVELS):
            step = int(round(level * (c.num_train_timesteps - 1)))
            t = torch.full((n,), step, dtype=torch.long, device=device)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            x_t = self.scheduler.add_noise(x0, noise, t)  # type: ignore[attr-defined]
            guess = predicted_x0(alphas, x_t, denoise(x_t, t).float(), t, c.prediction_type)
            total += ((guess - x0).square() / 4).mean(1)
            if i == RECONSTRUCTION_LEVEL:
                shown = guess
        error = total / len(SCORE_LEVELS)
        return ScoreBatch(
            {DENOISING.name: error.flatten(1).mean(1).cpu()},
            error_map=error.cpu(),
            reconstruction=shown.cpu(),
        )
