"""Sample-quality metrics: Fréchet distance, KID, precision/recall and memorisation.

The usual metrics (FID, KID) measure distances between Inception-v3 features. Studio downloads
nothing, and ImageNet features say little about 32 px shapes anyway, so the features come from
a small CNN trained on the dataset itself (:class:`FeatureExtractor`, cached per dataset and
resolution by :func:`get_feature_extractor`). The numbers are therefore comparable between
models trained on the same dataset and evaluated with the same extractor, the same reference
images and the same sample count -- never with published FID values, nor across datasets.

Every metric here is biased by the number of samples (the Fréchet distance strongly so), so a
comparison must use one ``n`` for every model: :meth:`QualityReport.comparable_with` checks it.

The metric functions take plain ``(N, D)`` feature arrays, so they work with any embedding.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from studio.core import atomic
from studio.core.jobs import Progress
from studio.engine.data import ImageDataset

_CHUNK = 1024  # rows per block of a distance matrix: its memory stays 1024 x N float64


def _as_features(feats: Any, name: str) -> np.ndarray:
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must be an (N, D) array with N >= 2, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


# -- the feature extractor ---------------------------------------------------------------------

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


def gaussian_stats(feats: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``ddof=1``) of ``(N, D)`` features, in float64."""
    x = _as_features(feats, "feats")
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via its eigen-decomposition.

    Round-off can leave tiny negative eigenvalues; they are clipped to zero rather than giving
    the complex square roots that ``scipy.linalg.sqrtm`` has to patch up.
    """
    vals, vecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance_from_stats(
    mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray
) -> float:
    """``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)`` in float64.

    The cross term uses ``tr((S_a S_b)^1/2) = tr((S_a^1/2 S_b S_a^1/2)^1/2)``: the inner matrix
    is symmetric PSD, so ``eigh`` gives it exactly where a general ``sqrtm`` of ``S_a S_b``
    would be unstable for the singular covariances of ``N < D`` features.
    """
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
    root_a = _psd_sqrt(sigma_a)
    inner = root_a @ sigma_b @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * cross)
    return max(value, 0.0)  # round-off can leave -1e-12 for identical sets


def frechet_distance(feats_a: Any, feats_b: Any) -> float:
    """Fréchet distance between Gaussians fitted to two ``(N, D)`` feature sets (as in FID).

    0 for identical sets. With fewer samples than dimensions the covariances are singular; the
    formula still applies, but the estimate is biased upwards, more so the smaller N is (even
    two samples of one distribution score well above 0). Compare only values computed with the
    same N on each side.
    """
    return frechet_distance_from_stats(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


# -- kernel inception distance -----------------------------------------------------------------


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel ``(x.y / D + 1)^3`` (Bińkowski 2018)."""
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    m, n = len(x), len(y)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def kernel_inception_distance(
    feats_a: Any,
    feats_b: Any,
    *,
    subsets: int = 100,
    subset_size: int | None = None,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: ``(mean, std)`` of the unbiased MMD^2 over ``subsets`` random subsets.

    Each subset draws ``subset_size`` rows of each set without replacement; the default is
    half the smaller set, at most 1000, so the subsets differ and the std says something about
    the estimate's spread. Unbiased: about 0 (it can dip below) for two samples of one
    distribution, whatever their size.
    """
    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    smaller = min(len(a), len(b))
    size = subset_size if subset_size is not None else min(1000, max(2, smaller // 2))
    if not 2 <= size <= smaller:
        raise ValueError(f"subset_size must be between 2 and {smaller}, got {size}")
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            _unbiased_mmd2(
                a[rng.choice(len(a), size, replace=False)],
                b[rng.choice(len(b), size, replace=False)],
            )
            for _ in range(max(1, subsets))
        ]
    )
    return float(values.mean()), float(values.std())


# -- precision and recall ----------------------------------------------------------------------


def _exact_cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Not the matmul shortcut: it leaves ~1e-7 for identical points, which would put a copy
    # outside a k-NN ball of radius 0 (duplicated reference images).
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row to its k-th nearest other row."""
    radii = []
    for chunk in x.split(_CHUNK):
        d = _exact_cdist(chunk, x)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # + 1: each row's own distance is 0
    return torch.cat(radii)


def _inside_any_ball(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of ``points`` within ``radii[j]`` of some ``centres[j]``."""
    hits = 0
    for chunk in points.split(_CHUNK):
        hits += int((_exact_cdist(chunk, centres) <= radii[None, :]).any(dim=1).sum())
    return hits / len(points)


def precision_recall(real_feats: Any, fake_feats: Any, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each set's manifold is the union of balls around its points reaching their k-th nearest
    neighbour. Precision is the share of fake points on the real manifold (are samples
    realistic?), recall the share of real points on the fake manifold (is all the data
    covered?). Both lie in [0, 1]; identical sets give (1, 1).
    """
    real = torch.from_numpy(_as_features(real_feats, "real_feats"))
    fake = torch.from_numpy(_as_features(fake_feats, "fake_feats"))
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: {real.shape[1]} and {fake.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k_real, k_fake = min(k, len(real) - 1), min(k, len(fake) - 1)
    precision = _inside_any_ball(fake, real, _knn_radii(real, k_real))
    recall = _inside_any_ball(real, fake, _knn_radii(fake, k_fake))
    return precision, recall


# -- memorisation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemorisationReport:
    """How close samples come to the training images, measured against held-out images.

    ``nearest_train_index[i]`` / ``nearest_train_distance[i]``: the training image nearest to
    sample ``i`` over the whole training set (``nearest_train_mirrored[i]``: it was its mirror
    image). In pixel space a distance is the RMS pixel difference on a 0..1 scale.

    ``share``: the share of samples closer to a training image than to any held-out image, with
    the training set subsampled (seeded) to the held-out set's size (``reference_size`` each).
    About 0.5 for a model that does not memorise, 1.0 when every sample copies an image in the
    subsample. It is blunt: a copy of a training image left out of the subsample counts like a
    new image, so a model that copies uniformly from N training images scores about
    ``0.5 + 0.5 * reference_size / N``.

    ``rank_share``: the chance that a sample lies closer to its nearest training image than a
    held-out image does to its own (the Mann-Whitney statistic of the two distance lists, ties
    counted half). It uses the whole training set, so every copy counts: 0.5 for samples as
    new as real unseen images, 1.0 for copies, below 0.5 for samples farther from the data
    than real images are (blurry or broken ones).
    """

    nearest_train_index: np.ndarray
    nearest_train_distance: np.ndarray
    nearest_train_mirrored: np.ndarray
    nearest_heldout_distance: np.ndarray
    share: float
    rank_share: float
    reference_size: int
    space: str  # "pixels" or "features"

    def summary(self) -> dict[str, Any]:
        """The scalar results, JSON-able."""
        return {
            "share": self.share,
            "rank_share": self.rank_share,
            "reference_size": self.reference_size,
            "space": self.space,
            "median_nearest_train_distance": float(np.median(self.nearest_train_distance)),
        }


def _vectors(x: Any, name: str, mirror: bool) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Rows to compare (float64) and, for images with ``mirror``, their mirror images."""
    arr = np.asarray(x)
    if arr.ndim == 4:  # N x H x W x C pixels
        if arr.dtype != np.uint8:
            raise ValueError(f"{name}: images must be uint8 N x H x W x C, got {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float64) / 255.0
        flipped = t.flip(2).flatten(1) if mirror else None
        return t.flatten(1), flipped, "pixels"
    if arr.ndim == 2:
        return torch.from_numpy(_as_features(arr, name)), None, "features"
    raise ValueError(f"{name} must be N x H x W x C images or (N, D) features, got {arr.shape}")


def _nearest(
    queries: torch.Tensor, refs: torch.Tensor, mirrored: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each query: (distance, index, used the mirror) of its nearest reference row."""
    scale = 1.0 / queries.shape[1]  # RMS distance: comparable across resolutions
    dists, idxs, flips = [], [], []
    ref_sets = [refs] if mirrored is None else [refs, mirrored]
    ref_sq = [(r * r).sum(1) for r in ref_sets]
    for chunk in queries.split(_CHUNK):
        q_sq = (chunk * chunk).sum(1, keepdim=True)
        best_d, best_i, best_f = None, None, None
        for flip, (r, r_sq) in enumerate(zip(ref_sets, ref_sq)):
            # |q - r|^2 by the matmul identity: pixel rows are thousands long, so the exact
            # elementwise cdist would be far slower; float64 keeps it accurate.
            d2 = (q_sq + r_sq[None, :] - 2.0 * chunk @ r.T).clamp_min(0.0)
            d, i = d2.min(dim=1)
            if best_d is None:
                best_d, best_i, best_f = d, i, torch.zeros_like(i, dtype=torch.bool)
            else:
                better = d < best_d
                best_d = torch.where(better, d, best_d)
                best_i = torch.where(better, i, best_i)
                best_f = torch.where(better, torch.tensor(bool(flip)), best_f)
        dists.append((best_d * scale).sqrt())
        idxs.append(best_i)
        flips.append(best_f)
    return torch.cat(dists), torch.cat(idxs), torch.cat(flips)


def _closer_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pairs (elementwise) with a < b, ties counted half."""
    return float(np.mean((a < b) + 0.5 * (a == b)))


def memorisation(
    samples: Any, train: Any, heldout: Any, *, mirror: bool = True, seed: int = 0
) -> MemorisationReport:
    """Compare samples with training and held-out images (see :class:`MemorisationReport`).

    Pass either uint8 ``N x H x W x C`` images (all three at one size) or ``(N, D)`` features.
    :func:`evaluate_samples` uses pixels: a copy is a pixel-level notion, and the feature
    extractor has seen the training images but not the held-out ones, so in its space training
    images may sit apart from held-out ones for reasons that have nothing to do with the
    generator. With images and ``mirror`` (default), a reference image's mirror counts as the
    image too, because training flips images and a model can learn the mirrored copy.
    """
    s, _, space = _vectors(samples, "samples", False)
    tr, tr_m, space_t = _vectors(train, "train", mirror)
    ho, ho_m, space_h = _vectors(heldout, "heldout", mirror)
    if len({space, space_t, space_h}) != 1 or len({s.shape[1], tr.shape[1], ho.shape[1]}) != 1:
        raise ValueError("samples, train and heldout must be all images of one size or features")
    if len(tr) < 1 or len(ho) < 1 or len(s) < 1:
        raise ValueError("memorisation needs at least one sample, training and held-out image")

    d_train, i_train, f_train = _nearest(s, tr, tr_m)
    d_held, _, _ = _nearest(s, ho, ho_m)

    # Equal-size references, so a sample from the data distribution is as likely to land
    # nearer to either: the share's baseline is then 0.5.
    size = min(len(tr), len(ho))
    rng = np.random.default_rng(seed)
    sub_tr = np.sort(rng.choice(len(tr), size, replace=False))
    sub_ho = np.sort(rng.choice(len(ho), size, replace=False))
    d_tr_sub, _, _ = _nearest(s, tr[sub_tr], None if tr_m is None else tr_m[sub_tr])
    d_ho_sub = d_held if size == len(ho) else _nearest(s, ho[sub_ho], _sub(ho_m, sub_ho))[0]
    share = _closer_share(d_tr_sub.numpy(), d_ho_sub.numpy())

    # Calibration: how close genuinely unseen images come to the training set.
    d_calib = np.sort(_nearest(ho, tr, tr_m)[0].numpy())
    lower = np.searchsorted(d_calib, d_train.numpy(), side="left")
    upper = np.searchsorted(d_calib, d_train.numpy(), side="right")
    # Held-out distances above the sample's count fully, equal ones half.
    rank = (len(d_calib) - upper + 0.5 * (upper - lower)) / len(d_calib)

    return MemorisationReport(
        nearest_train_index=i_train.numpy().astype(np.int64),
        nearest_train_distance=d_train.numpy(),
        nearest_train_mirrored=f_train.numpy(),
        nearest_heldout_distance=d_held.numpy(),
        share=share,
        rank_share=float(rank.mean()),
        reference_size=int(size),
        space=space,
    )


def _sub(x: torch.Tensor | None, idx: np.ndarray) -> torch.Tensor | None:
    return None if x is None else x[idx]


# -- one report per model ----------------------------------------------------------------------


@dataclass(frozen=True)
class QualityReport:
    """Sample-quality numbers for one model, against held-out images.

    ``fd``: Fréchet distance in the extractor's feature space (lower is better). ``kid_mean``
    / ``kid_std``: KID (lower is better; ~0 is indistinguishable). ``precision`` / ``recall``:
    k-NN manifold precision (realism) and recall (coverage). ``memorisation_share`` and
    ``memorisation_rank_share``: see :class:`MemorisationReport` (~0.5 is healthy, ~1 copies).
    ``n_samples`` samples were compared with ``n_reference`` held-out images. FD, KID's spread
    and precision/recall depend on both counts, so compare reports only when
    :meth:`comparable_with` says so: the same n, reference set size and extractor.
    """

    fd: float
    kid_mean: float
    kid_std: float
    precision: float
    recall: float
    memorisation_share: float
    memorisation_rank_share: float
    n_samples: int
    n_reference: int
    extractor: str
    memorisation: MemorisationReport | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The scalar fields, JSON-able (the per-sample memorisation arrays left out)."""
        out = asdict(self)
        out.pop("memorisation")
        return out

    def comparable_with(self, other: QualityReport) -> bool:
        """True when both reports used the same sample count, reference size and extractor."""
        return (self.n_samples, self.n_reference, self.extractor) == (
            other.n_samples,
            other.n_reference,
            other.extractor,
        )


def evaluate_samples(
    samples_uint8: np.ndarray,
    train_images: np.ndarray,
    heldout_images: np.ndarray,
    extractor: FeatureExtractor,
    *,
    seed: int = 0,
    k: int = 3,
    kid_subsets: int = 100,
) -> QualityReport:
    """Score ``samples_uint8`` (N x H x W x 3) against ``heldout_images`` in ``extractor``'s
    feature space, and check for copies of ``train_images`` in pixel space.

    The held-out images are the reference because the model never saw them: a model that
    reproduced its training set would otherwise look perfect. Use the same sample count N (and
    the same held-out set and extractor) for every model being compared: FD in particular is
    biased by N. Samples at another size than the training images are resized for the
    memorisation check.
    """
    samples = np.asarray(samples_uint8)
    if samples.ndim != 4 or samples.dtype != np.uint8 or len(samples) < 2:
        raise ValueError(f"samples must be uint8 N x H x W x 3 with N >= 2, got {samples.shape}")
    fake = extractor.features(samples)
    real = extractor.features(heldout_images)
    fd = frechet_distance(real, fake)
    kid_mean, kid_std = kernel_inception_distance(real, fake, subsets=kid_subsets, seed=seed)
    precision, recall = precision_recall(real, fake, k=k)
    size = train_images.shape[1]
    if samples.shape[1:3] != (size, size):
        samples = resize_uint8(samples, size)
    memo = memorisation(samples, train_images, heldout_images, seed=seed)
    return QualityReport(
        fd=fd,
        kid_mean=kid_mean,
        kid_std=kid_std,
        precision=precision,
        recall=recall,
        memorisation_share=memo.share,
        memorisation_rank_share=memo.rank_share,
        n_samples=int(len(samples)),
        n_reference=int(len(heldout_images)),
        extractor=extractor.describe(),
        memorisation=memo,
    )
