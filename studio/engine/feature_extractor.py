"""The feature extractor behind Studio's sample-quality metrics: a small CNN trained on the
user's own dataset (nothing is downloaded), cached per dataset fingerprint and resolution.

See :mod:`studio.engine.metrics` for what the features are used for, and why the numbers are
comparable only between models evaluated with the same extractor.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from studio.core import atomic
from studio.core.jobs import Progress
from studio.engine.data import ImageDataset

EMBED_DIM = 128
EXTRACTOR_NAME = f"studio-cnn-{EMBED_DIM}"
_EXTRACTOR_VERSION = 1
_WEIGHTS = "feature_extractor.safetensors"
_META = "feature_extractor.json"


DEGRADATIONS = 4  # blur, noise, colour cast, checkerboard: see _degrade


def _degrade(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A degraded copy of each image in [-1, 1] and the kind applied (1..4), at a random
    strength. The kinds are the typical generator failures: blur (VAEs), leftover noise
    (diffusion with too few steps), colour casts and checkerboard artefacts (GANs)."""
    n, dev = len(x), x.device
    kind = torch.randint(1, DEGRADATIONS + 1, (n,), generator=gen).to(dev)
    strength = (0.25 + 0.75 * torch.rand(n, 1, 1, 1, generator=gen)).to(dev)
    blurred = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    noise = torch.randn(x.shape, generator=gen).to(dev)
    cast = (torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1).to(dev)
    yy, xx = torch.meshgrid(torch.arange(x.shape[2]), torch.arange(x.shape[3]), indexing="ij")
    checker = (((yy + xx) % 2) * 2 - 1).to(dev, x.dtype)
    options = torch.stack(
        [x + strength * (blurred - x), x + strength * 0.3 * noise]
        + [x + strength * 0.3 * cast, x + strength * 0.15 * checker.expand_as(x)]
    )
    out = options[kind - 1, torch.arange(n, device=dev)]
    return out.clamp(-1, 1), kind


class _FeatureNet(nn.Module):
    """Four conv blocks (each halves the size), a 2x2 average pool, a linear embedding.

    The 2x2 pool rather than a global one keeps coarse position, which matters for small
    centred-object datasets. GroupNorm, not BatchNorm: an image's features never depend on the
    other images in its batch. The class head and the decoder serve training only.
    """

    def __init__(self, resolution: int, num_classes: int, width: int, embed_dim: int) -> None:
        super().__init__()
        chans = (width, 2 * width, 4 * width, 4 * width)
        layers: list[nn.Module] = []
        c_in = 3
        for c in chans:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.GroupNorm(8, c), nn.SiLU()]
            layers += [nn.Conv2d(c, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.SiLU()]
            c_in = c
        self.encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.embed = nn.Linear(chans[-1] * 4, embed_dim)
        # Bounded features: a classifier left alone grows its embedding without limit on
        # separable data, and the resulting heavy tails swamp FD and KID with noise.
        self.norm = nn.LayerNorm(embed_dim, elementwise_affine=False)
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(embed_dim, max(num_classes, 1)))
        self.degradation_head = nn.Sequential(nn.SiLU(), nn.Linear(embed_dim, 1 + DEGRADATIONS))
        self.resolution, self.base = resolution, max(1, resolution // 8)
        self.dec_in = nn.Linear(embed_dim, chans[-1] * self.base**2)
        dec: list[nn.Module] = []
        for a, b in ((chans[3], chans[1]), (chans[1], chans[0])):
            dec += [nn.Upsample(scale_factor=2), nn.Conv2d(a, b, 3, padding=1)]
            dec += [nn.GroupNorm(8, b), nn.SiLU()]
        # No wide conv at full size: the decoder only shapes the embedding, so keep it cheap.
        dec += [nn.Upsample(scale_factor=2), nn.Conv2d(chans[0], 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.embed(self.encoder(x)))

    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.dec_in(z).reshape(len(z), -1, self.base, self.base))
        if out.shape[-1] != self.resolution:
            out = F.interpolate(out, size=(self.resolution,) * 2, mode="bilinear")
        return out


def _to_input(images: Any, resolution: int, device: torch.device) -> torch.Tensor:
    """uint8 ``N x H x W x 3`` (numpy or torch) or float ``N x 3 x H x W`` in [-1, 1] to a
    float batch at ``resolution`` on ``device``."""
    t = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if t.dtype == torch.uint8:
        if t.ndim != 4 or t.shape[-1] != 3:
            raise ValueError(f"uint8 images must be N x H x W x 3, got {tuple(t.shape)}")
        t = t.to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    elif t.is_floating_point():
        if t.ndim != 4 or t.shape[1] != 3:
            raise ValueError(f"float images must be N x 3 x H x W in [-1, 1], got {tuple(t.shape)}")
        t = t.to(device).float()
    else:
        raise ValueError(f"images must be uint8 N x H x W x 3 or float tensors, got {t.dtype}")
    if t.shape[-2:] != (resolution, resolution):
        t = F.interpolate(t, size=(resolution,) * 2, mode="bilinear", antialias=True)
    return t


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``N x H x W x 3`` images resized (bilinear, antialiased) to ``size x size``."""
    x = _to_input(images, size, torch.device("cpu"))
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


class FeatureExtractor:
    """A small CNN embedding (``EMBED_DIM`` numbers per image) trained on one dataset.

    Build one with :func:`fit_feature_extractor` or :func:`get_feature_extractor` (cached);
    ``meta`` records how it was trained. Its features are only comparable with features from
    the same extractor.
    """

    name = EXTRACTOR_NAME

    def __init__(self, net: nn.Module, meta: dict[str, Any]) -> None:
        self.net = net.eval()
        self.meta = dict(meta)

    @property
    def resolution(self) -> int:
        return int(self.meta["resolution"])

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def describe(self) -> str:
        """One line for the UI, e.g. "studio-cnn-128 (32 px) trained on this dataset's 6
        classes (val acc 98%)"."""
        m, base = self.meta, f"{self.name} ({self.resolution} px) trained on this dataset's"
        if m["mode"] == "classifier":
            acc = m.get("val_accuracy")
            val = f" (val acc {acc:.0%})" if acc is not None else ""
            return f"{base} {m['num_classes']} classes{val}"
        rmse = m.get("val_rmse")
        val = f" (val RMSE {rmse:.3f})" if rmse is not None else ""
        return f"{base} {m['images']} unlabelled images as an autoencoder{val}"

    @torch.no_grad()
    def features(self, images: Any, batch_size: int = 256) -> np.ndarray:
        """``(N, EMBED_DIM)`` float32 features of uint8 ``N x H x W x 3`` images or a float
        ``N x 3 x H x W`` tensor in [-1, 1]; resized to the extractor's resolution if needed."""
        self.net.eval()
        out = [
            self.net(_to_input(images[i : i + batch_size], self.resolution, self.device)).cpu()
            for i in range(0, len(images), batch_size)
        ]
        if not out:
            return np.zeros((0, int(self.meta["embed_dim"])), np.float32)
        return torch.cat(out).float().numpy()

    def perceptual(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A frozen, differentiable feature function for a perceptual loss: float
        ``N x 3 x H x W`` images in [-1, 1] (resized to the extractor's resolution) -> the
        activations of the network's four blocks, each position's channel vector scaled to
        unit length (as LPIPS does) and each block's share scaled to unit norm, concatenated:
        N x F. The squared distance between two images' features, summed, lies in 0..16."""
        net = copy.deepcopy(self.net).eval().requires_grad_(False)
        per_block = len(net.encoder) // 4  # conv, norm, act, strided conv, norm, act
        blocks = [net.encoder[i * per_block : (i + 1) * per_block] for i in range(4)]
        res = self.resolution

        def features(images: torch.Tensor) -> torch.Tensor:
            h = images.float()
            if h.shape[-2:] != (res, res):
                h = F.interpolate(h, size=(res, res), mode="bilinear", antialias=True)
            out = []
            for block in blocks:
                h = block(h)
                unit = h / h.square().sum(1, keepdim=True).add(1e-10).sqrt()
                out.append(unit.flatten(1) / math.sqrt(unit[0, 0].numel()))
            return torch.cat(out, 1)

        return features

    def save(self, folder: str | Path) -> None:
        """Weights (safetensors), then ``feature_extractor.json`` last: its presence means the
        folder is complete. Both writes are atomic."""
        from safetensors.torch import save_file

        folder = Path(folder)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        with atomic.atomic_path(folder / _WEIGHTS) as tmp:
            save_file(tensors, str(tmp))
        atomic.write_json(folder / _META, self.meta)

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> FeatureExtractor:
        """Load what :meth:`save` wrote; ValueError for another version of the extractor."""
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
        if meta.get("version") != _EXTRACTOR_VERSION:
            raise ValueError(f"feature extractor version {meta.get('version')} is not supported")
        net = _FeatureNet(meta["resolution"], meta["num_classes"], meta["width"], meta["embed_dim"])
        net.load_state_dict(load_file(str(folder / _WEIGHTS), device="cpu"))
        return cls(net.to(device), meta)


def fit_feature_extractor(
    dataset_images: np.ndarray,
    labels: np.ndarray | None,
    *,
    steps: int = 600,
    seed: int = 0,
    device: str | torch.device = "cpu",
    resolution: int | None = None,
    batch_size: int = 64,
    width: int = 16,
    lr: float = 2e-3,
) -> Generator[Progress, None, FeatureExtractor]:
    """Job: train a :class:`FeatureExtractor` on uint8 ``N x H x W x 3`` images.

    Objectives, all on the one embedding: with two or more classes in ``labels``, classify
    them; always, reconstruct the image from the embedding (an autoencoder), because class
    labels alone teach a network to ignore what they do not name (the demo's colours and
    sizes), and the metrics must notice a model getting those wrong; and always, tell a clean
    image from a degraded copy and name the degradation (see ``_degrade``), because neither
    objective above cares about blur, noise or artefacts, the usual ways samples fail. On the
    demo shapes this makes FD grow with blur, noise, greyed colours and mode collapse, each
    well above the spread between two random halves of the held-out images.

    A tenth of the images (at most 1000) is kept aside to report validation accuracy (or the
    reconstruction RMSE without classes). Images are mirrored at random, as in training. The
    same inputs, seed and device give the same extractor.
    """
    images = np.asarray(dataset_images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) < 2:
        raise ValueError(f"need uint8 N x H x W x 3 images with N >= 2, got {images.shape}")
    res = int(resolution or images.shape[1])
    n = len(images)
    classes = np.unique(labels) if labels is not None else np.empty(0)
    classify = len(classes) >= 2
    targets = torch.from_numpy(np.searchsorted(classes, labels)) if classify else None
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = min(n // 10, 1000) if n >= 20 else 0
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):  # the seed fixes the initial weights
        torch.manual_seed(seed)
        net = _FeatureNet(res, len(classes) if classify else 0, width, EMBED_DIM).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)  # degradations: CPU draws, the same everywhere
    data = torch.from_numpy(np.ascontiguousarray(images))  # uint8: converted per batch
    batch = min(batch_size, len(train_idx))
    net.train()
    for step in range(steps):
        for group in opt.param_groups:  # cosine decay: the last steps settle the weights
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        idx = rng.choice(train_idx, batch, replace=False)
        x = _to_input(data[idx], res, dev)
        flip = torch.from_numpy(rng.random(batch) < 0.5).to(dev)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        degraded, kind = _degrade(x, gen)
        z = net(torch.cat([x, degraded]))
        recon = F.mse_loss(net.reconstruct(z[:batch]), x)
        loss = recon + F.cross_entropy(net.degradation_head(z), torch.cat([kind * 0, kind]))
        if targets is not None:
            loss = loss + F.cross_entropy(net.head(z[:batch]), targets[idx].to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        logged = (step + 1) % 10 == 0 or step + 1 == steps
        yield Progress(
            "features",
            step + 1,
            steps,
            message=f"Training the feature extractor: {step + 1}/{steps}",
            metrics={"loss": float(loss.detach()), "recon": float(recon.detach())}
            if logged
            else {},
        )
    net.eval()
    meta: dict[str, Any] = {
        "version": _EXTRACTOR_VERSION,
        "name": EXTRACTOR_NAME,
        "mode": "classifier" if classify else "autoencoder",
        "num_classes": int(len(classes)) if classify else 0,
        "embed_dim": EMBED_DIM,
        "width": width,
        "resolution": res,
        "images": n,
        "steps": steps,
        "seed": seed,
    }
    meta.update(_validate(net, data, val_idx, targets, res, dev))
    return FeatureExtractor(net, meta)


@torch.no_grad()
def _validate(
    net: _FeatureNet,
    data: torch.Tensor,
    val_idx: np.ndarray,
    targets: torch.Tensor | None,
    res: int,
    dev: torch.device,
) -> dict[str, float]:
    if len(val_idx) == 0:
        return {}
    correct, spotted, sq_err = 0, 0, 0.0
    gen = torch.Generator().manual_seed(0)
    for chunk in np.array_split(val_idx, max(1, len(val_idx) // 256)):
        x = _to_input(data[chunk], res, dev)
        z = net(x)
        sq_err += float(((net.reconstruct(z) - x) ** 2).mean()) * len(chunk)
        degraded, kind = _degrade(x, gen)
        spotted += int((net.degradation_head(z).argmax(1) == 0).sum())
        spotted += int((net.degradation_head(net(degraded)).argmax(1) == kind).sum())
        if targets is not None:
            correct += int((net.head(z).argmax(1).cpu() == targets[chunk]).sum())
    rmse = (sq_err / len(val_idx)) ** 0.5 / 2  # / 2: on the 0..1 pixel scale
    out = {"val_rmse": rmse, "val_degradation_accuracy": spotted / (2 * len(val_idx))}
    if targets is not None:
        out["val_accuracy"] = correct / len(val_idx)
    return out


def get_feature_extractor(
    dataset: ImageDataset,
    resolution: int,
    cache_dir: str | Path | None = None,
    *,
    exclude: Sequence[int] | np.ndarray | None = None,
    steps: int = 600,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Generator[Progress, None, FeatureExtractor]:
    """Job: the dataset's extractor at ``resolution``, from the cache or trained and cached.

    The cache folder under ``cache_dir`` (default :func:`studio.core.paths.cache_dir`) is keyed
    by the dataset's fingerprint, the resolution, ``steps``, ``seed`` and ``exclude``: the
    indices of images kept out of its training -- pass the held-out images the samples will be
    compared with, so the reference features are not those of images the extractor fitted.
    A damaged cache entry is retrained and overwritten; a failed cache write is ignored.
    """
    from safetensors import SafetensorError

    from studio.core.paths import cache_dir as default_cache_dir

    left_out = np.unique(np.asarray([] if exclude is None else exclude, dtype=np.int64))
    key = json.dumps(
        [_EXTRACTOR_VERSION, dataset.fingerprint, int(resolution), int(steps), int(seed)]
        + [hashlib.sha256(left_out.tobytes()).hexdigest()]
    )
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / f"features-{hashlib.sha256(key.encode()).hexdigest()[:24]}"
    if (folder / _META).is_file():
        try:
            extractor = FeatureExtractor.load(folder, device)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
            pass  # damaged or from another version: train a new one over it
        else:
            yield Progress("features", message=f"Loaded {extractor.describe()} (cache)")
            return extractor
    keep = np.setdiff1d(np.arange(len(dataset)), left_out)
    labels = dataset.labels[keep] if dataset.labels is not None else None
    extractor = yield from fit_feature_extractor(
        dataset.images[keep], labels, steps=steps, seed=seed, device=device, resolution=resolution
    )
    extractor.meta["dataset_fingerprint"] = dataset.fingerprint
    with contextlib.suppress(OSError):  # the cache only saves time: a full disk must not fail
        extractor.save(folder)
    return extractor


# -- Fréchet distance --------------------------------------------------------------------------
