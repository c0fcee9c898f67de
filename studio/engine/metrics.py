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

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

_CHUNK = 1024  # rows per block of a distance matrix: its memory stays 1024 x N float64


def _as_features(feats: Any, name: str) -> np.ndarray:
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must be an (N, D) array with N >= 2, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


# -- the feature extractor ---------------------------------------------------------------------

from studio.engine.feature_extractor import (  # noqa: E402,F401 - re-exported
    EMBED_DIM,
    EXTRACTOR_NAME,
    FeatureExtractor,
    fit_feature_extractor,
    get_feature_extractor,
    resize_uint8,
)


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


def nearest_distances(
    queries: Any, refs: Any, *, mirror: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each uint8 ``N x H x W x C`` query image: the RMS pixel distance (0..1 scale) to
    its nearest reference image, that image's index, and whether its mirror was nearer (with
    ``mirror``, a reference's mirror image counts as the image): the memorisation check's
    distance, for filters that drop samples too close to a training image."""
    q, _, space_q = _vectors(queries, "queries", False)
    r, r_m, space_r = _vectors(refs, "refs", mirror)
    if space_q != "pixels" or space_r != "pixels" or q.shape[1] != r.shape[1]:
        raise ValueError("queries and refs must be uint8 images of one size")
    if len(q) == 0 or len(r) == 0:
        empty = np.zeros(len(q))
        return empty + np.inf, empty.astype(np.int64), empty.astype(bool)
    d, i, f = _nearest(q, r, r_m)
    return d.numpy(), i.numpy().astype(np.int64), f.numpy()


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


# -- paired image-to-image scores ---------------------------------------------------------------

#: The PSNR reported for identical images (infinite in theory; JSON and tables need a number).
PSNR_CAP = 100.0


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity (Wang et al. 2004) of two uint8 ``N x H x W x 3`` stacks:
    an 11-pixel Gaussian window (sigma 1.5, shrunk to the image on tiny images), K1 0.01,
    K2 0.03, per channel, averaged over the valid windows of every image. 1 for identical
    images."""
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).double() / 255.0
    y = torch.from_numpy(np.ascontiguousarray(b)).permute(0, 3, 1, 2).double() / 255.0
    size = min(11, x.shape[2], x.shape[3])
    g = _gaussian_window(size, 1.5 * size / 11)
    c = x.shape[1]
    kh = g.view(1, 1, size, 1).expand(c, 1, size, 1)
    kw = g.view(1, 1, 1, size).expand(c, 1, 1, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = torch.nn.functional.conv2d(t, kh, groups=c)
        return torch.nn.functional.conv2d(t, kw, groups=c)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(value.mean())


def paired_scores(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """How close translations are to their targets (uint8 ``N x H x W x 3`` each, the same
    shape): ``l1`` the mean absolute difference in [0, 1], ``psnr`` in dB over all pixels of
    each image, averaged (identical images count :data:`PSNR_CAP`), ``ssim`` :func:`ssim`."""
    out = np.asarray(outputs)
    tgt = np.asarray(targets)
    if out.shape != tgt.shape or out.ndim != 4 or out.dtype != np.uint8 or tgt.dtype != np.uint8:
        raise ValueError(f"expected two uint8 N x H x W x 3 stacks, got {out.shape}, {tgt.shape}")
    diff = out.astype(np.float64) / 255.0 - tgt.astype(np.float64) / 255.0
    mse = (diff**2).reshape(len(out), -1).mean(1)
    with np.errstate(divide="ignore"):
        psnr = np.where(mse > 0, 10 * np.log10(1.0 / np.maximum(mse, 1e-300)), PSNR_CAP)
    return {
        "l1": float(np.abs(diff).mean()),
        "psnr": float(np.minimum(psnr, PSNR_CAP).mean()),
        "ssim": ssim(out, tgt),
    }
