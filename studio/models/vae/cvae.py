"""Conditional VAE (Sohn et al. 2015): the ConvVAE with a class embedding fed to both the
encoder, q(z | x, y), and the decoder, p(x | z, y). Pick the class when sampling.

Its likelihood is log p(x | y) when labels are given; without labels it reports a bound on
log p(x) = log mean_y p(x | y) (a uniform class prior), from one ELBO per class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from studio.models.base import Batch, Capability, FamilyInfo, class_labels
from studio.models.vae.conv import ConvVAE, ConvVAEConfig


@dataclass
class ConditionalVAEConfig(ConvVAEConfig):
    pass


class ConditionalVAE(ConvVAE):
    info = FamilyInfo(
        key="vae.cvae",
        kind="vae",
        display_name="Conditional VAE",
        summary="Conditional VAE: choose which class to generate; steady training, "
        "but blurry like any VAE.",
        capabilities=ConvVAE.info.capabilities | Capability.CONDITIONAL,
        loss_names=ConvVAE.info.loss_names,
    )
    Config = ConditionalVAEConfig
    config: ConditionalVAEConfig
    conditions: tuple[str, ...] = ("label", "temperature")

    def __init__(self, config: ConditionalVAEConfig) -> None:
        if config.num_classes <= 0:
            raise ValueError(
                "The conditional VAE needs class labels: put the images in one subfolder per "
                "class (this dataset has no classes)."
            )
        super().__init__(config)

    def _label_classes(self) -> int:
        return self.config.num_classes

    def _batch_labels(self, batch: Batch) -> Tensor:
        if batch.labels is None:
            raise ValueError("The conditional VAE needs labelled batches (class subfolders).")
        return batch.labels

    def _checked(self, labels: Tensor | None, n: int) -> Tensor:
        if labels is None:
            raise ValueError("The conditional VAE needs a class label for each image.")
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.device).reshape(-1)
        if len(labels) != n:
            raise ValueError(f"expected {n} labels, got {len(labels)}")
        if bool(((labels < 0) | (labels >= self.config.num_classes)).any()):
            raise ValueError(f"labels must lie in 0..{self.config.num_classes - 1}")
        return labels

    def _sample_labels(self, n: int, conditions: dict[str, Any]) -> Tensor:
        label = conditions.get("label")
        return class_labels(
            n, self.config.num_classes, None if label is None else int(label), self.device
        )

    def log_likelihood(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        samples: int = 1,
    ) -> Tensor:
        """Per-image bound in nats: on log p(x | y) with ``labels``; otherwise on log p(x)
        under a uniform class prior, log mean_y exp(ELBO(x, y)) (each ELBO bounds its
        log p(x | y), so their log-mean-exp bounds log p(x))."""
        n = len(images)
        if labels is not None:
            return self.elbo(images, self._checked(labels, n), generator, samples)
        k = self.config.num_classes
        per_class = []
        for y in range(k):
            gen = generator if generator is not None else torch.Generator().manual_seed(0)
            ys = torch.full((n,), y, dtype=torch.long, device=self.device)
            per_class.append(self.elbo(images, ys, gen, samples))
        return torch.logsumexp(torch.stack(per_class), dim=0) - math.log(k)
