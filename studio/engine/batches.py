"""Batches from a decoded dataset: uint8 on the device, augmentation there, a seeded order.

The order of examples depends only on (seed, step), so a resumed run sees exactly the batches
an uninterrupted run would have seen. A paired run's inputs (``sources``) are indexed,
flipped and cropped exactly as its targets, so every pair stays aligned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from studio.engine.pairs import paired_crop_flip
from studio.models.base import Batch


class DeviceImages:
    """The training images as one uint8 ``N x C x H x W`` tensor, on the GPU when it fits."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        device: torch.device,
        seed: int,
        batch_size: int,
        flip: bool,
        captions: Sequence[str | None] | None = None,
        sources: np.ndarray | None = None,
        jitter: int = 0,
    ) -> None:
        """``sources``: a paired run's input images, aligned with ``images`` (its targets);
        ``jitter``: pixels each pair is enlarged by before a random crop back to size."""
        if len(images) == 0:
            raise ValueError("no training images")
        data = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        src = None
        if sources is not None:
            if sources.shape != images.shape:
                raise ValueError(f"{len(images)} targets {images.shape} but inputs {sources.shape}")
            src = torch.from_numpy(np.ascontiguousarray(sources)).permute(0, 3, 1, 2).contiguous()
        self.device = device
        both = data.numel() * (2 if src is not None else 1)
        self.on_device = device.type == "cpu" or _fits(data, device, both)
        self.data = data.to(device) if self.on_device else data.pin_memory()
        self.sources = None
        if src is not None:
            self.sources = src.to(device) if self.on_device else src.pin_memory()
        self.jitter = max(0, int(jitter)) if src is not None else 0
        lab = torch.from_numpy(labels.astype(np.int64)) if labels is not None else None
        self.labels = lab.to(self.data.device) if lab is not None else None
        self.n = len(images)
        self.captions = None if captions is None else tuple(c or "" for c in captions)
        if self.captions is not None and len(self.captions) != self.n:
            raise ValueError(f"{self.n} images but {len(self.captions)} captions")
        self.batch_size = min(batch_size, self.n)
        self.steps_per_epoch = self.n // self.batch_size
        self.seed = seed
        self.flip = flip
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)
        self.features: torch.Tensor | None = None  # per image, from the family, once
        self.flipped_features: torch.Tensor | None = None

    @torch.no_grad()
    def compute_features(
        self, fn: Callable[[torch.Tensor], torch.Tensor | None], chunk: int = 256
    ) -> bool:
        """Run ``fn`` (a family's ``training_features``) once over every training image, and
        over every flipped one when batches flip; batches then carry the rows of their
        images (``Batch.features``). False when ``fn`` computes nothing."""
        if self.sources is not None:  # paired runs: not offered
            return False
        every = torch.arange(self.n, device=self.data.device)
        outs, flipped = [], []
        for start in range(0, self.n, chunk):
            x = self._floats(self.data, every[start : start + chunk])
            out = fn(x)
            if out is None:
                return False
            outs.append(out.detach())
            if self.flip:
                flipped.append(fn(x.flip(3)).detach())  # type: ignore[union-attr]
        self.features = torch.cat(outs)
        self.flipped_features = torch.cat(flipped) if self.flip else None
        return True

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed((self.seed * 7919 + epoch) % (2**63))
            self._perm = torch.randperm(self.n, generator=gen).to(self.data.device)
            self._perm_epoch = epoch
        return self._perm

    def batch(
        self,
        step: int,
        generator: torch.Generator,
        shard: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> Batch:
        """The batch for ``step``; flips use ``generator`` (the step's own). ``shard`` picks
        this process's slice of the global batch in a data-parallel run."""
        epoch, i = divmod(step, self.steps_per_epoch)
        idx = self._permutation(epoch)[i * self.batch_size : (i + 1) * self.batch_size]
        if shard is not None:
            idx = shard(idx)
        x = self._floats(self.data, idx)
        if self.sources is not None:
            sources, x = self._augment_pairs(self._floats(self.sources, idx), x, generator)
        else:
            sources = None
        features = None if self.features is None else self.features.index_select(0, idx)
        if self.flip and sources is None:
            mask = torch.rand(len(idx), generator=generator, device=generator.device) < 0.5
            x = torch.where(mask.to(x.device)[:, None, None, None], x.flip(3), x)
            if features is not None and self.flipped_features is not None:
                flipped = self.flipped_features.index_select(0, idx)
                m = mask.to(features.device).view(-1, *([1] * (features.dim() - 1)))
                features = torch.where(m, flipped, features)
        labels = None
        if self.labels is not None:
            labels = self.labels.index_select(0, idx).to(self.device, non_blocking=True)
        captions = None
        if self.captions is not None:  # strings live on the host: one small copy of idx
            captions = tuple(self.captions[i] for i in idx.tolist())
        return Batch(images=x, labels=labels, captions=captions, sources=sources, features=features)

    def _floats(self, data: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        x = data.index_select(0, idx)
        if not self.on_device:
            x = x.to(self.device, non_blocking=True)
        return x.float().div_(127.5).sub_(1.0)

    def _augment_pairs(
        self, a: torch.Tensor, b: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same flip, and with jitter the same enlarge-and-crop, for inputs and targets."""
        if self.jitter:
            size = a.shape[-1]
            big = size + self.jitter
            both = F.interpolate(
                torch.cat([a, b], 1), size=(big, big), mode="bilinear", align_corners=False
            )
            ca = a.shape[1]
            return paired_crop_flip(both[:, :ca], both[:, ca:], size, generator, self.flip)
        if self.flip:
            mask = torch.rand(len(a), generator=generator, device=generator.device) < 0.5
            mask = mask.to(a.device)[:, None, None, None]
            a, b = torch.where(mask, a.flip(3), a), torch.where(mask, b.flip(3), b)
        return a, b


class UnpairedBatches:
    """The batches of an unpaired run (``Capability.UNPAIRED``): folder B's images as
    ``Batch.images`` and folder A's as ``Batch.sources``, each folder in its own seeded order
    and with its own flips, so the two are drawn independently (and a resumed run still sees
    exactly the batches an uninterrupted one would)."""

    def __init__(
        self,
        images_a: np.ndarray,
        images_b: np.ndarray,
        device: torch.device,
        seed: int,
        batch_size: int,
        flip: bool,
    ) -> None:
        if len(images_a) == 0 or len(images_b) == 0:
            raise ValueError("no training images in folder A or folder B")
        size = min(batch_size, len(images_a), len(images_b))
        self.b = DeviceImages(images_b, None, device, seed, size, flip)
        self.a = DeviceImages(images_a, None, device, seed + 1, size, flip)  # another order
        self.batch_size = size
        self.n = self.b.n
        self.data = self.b.data
        self.device = device

    def compute_features(self, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> bool:
        """Per-image features are not offered for two collections (as for pairs)."""
        return False

    def batch(
        self,
        step: int,
        generator: torch.Generator,
        shard: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> Batch:
        b = self.b.batch(step, generator, shard)
        a = self.a.batch(step, generator, shard)
        return Batch(images=b.images, sources=a.images)


def _fits(data: torch.Tensor, device: torch.device, numel: int | None = None) -> bool:
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return (numel or data.numel()) * data.element_size() < 0.25 * free
