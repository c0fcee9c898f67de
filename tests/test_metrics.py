"""Sample-quality metrics: closed forms, limiting cases, and the dataset-trained extractor."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_pattern

from studio.core.jobs import Progress, run_sync
from studio.engine.data import ImageDataset
from studio.engine.metrics import (
    EMBED_DIM,
    FeatureExtractor,
    QualityReport,
    evaluate_samples,
    fit_feature_extractor,
    frechet_distance,
    get_feature_extractor,
    kernel_inception_distance,
    memorisation,
    precision_recall,
)

STEPS = 30  # enough for two stripe patterns; keeps the extractor tests around a second each


def _whitened(n: int, d: int, seed: int) -> np.ndarray:
    """``n x d`` points whose sample mean is exactly 0 and sample covariance exactly I."""
    x = np.random.default_rng(seed).normal(size=(n, d))
    x -= x.mean(axis=0)
    cov = np.cov(x, rowvar=False)
    return x @ np.linalg.inv(np.linalg.cholesky(cov)).T


def _tiny_images(n: int = 64, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    return np.stack([tiny_pattern(int(k), size, rng) for k in labels]), labels


def _dataset(images: np.ndarray, labels: np.ndarray) -> ImageDataset:
    n = len(images)
    return ImageDataset(
        images=images,
        labels=labels,
        class_names=("a", "b"),
        captions=(None,) * n,
        paths=tuple(f"{i}.png" for i in range(n)),
        resolution=images.shape[1],
        fingerprint="tiny-test-dataset",
    )


# -- Fréchet distance -------------------------------------------------------------------------


def test_fd_is_zero_for_identical_sets() -> None:
    feats = np.random.default_rng(0).normal(size=(200, 16))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_fd_matches_the_closed_form_for_diagonal_gaussians() -> None:
    d = 8
    s1, s2 = np.linspace(0.5, 2.0, d), np.linspace(1.0, 3.0, d)
    shift = np.full(d, 0.7)
    a = _whitened(500, d, 1) * s1
    b = _whitened(400, d, 2) * s2 + shift
    expected = shift @ shift + ((s1 - s2) ** 2).sum()  # |dmu|^2 + sum (s1 - s2)^2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_fd_grows_with_the_mean_shift() -> None:
    a = _whitened(300, 8, 3)
    values = [frechet_distance(a, a + shift) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert values == pytest.approx([8 * s**2 for s in (0.0, 0.5, 1.0, 2.0)], abs=1e-8)


def test_fd_handles_fewer_samples_than_dimensions() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(20, 64)), rng.normal(size=(20, 64))
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value > 0  # singular covariances; biased upwards


# -- KID ----------------------------------------------------------------------------------------


def test_kid_is_about_zero_for_one_distribution_and_positive_when_shifted() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same_mean, same_std = kernel_inception_distance(a, b, subsets=20)
    shifted_mean, _ = kernel_inception_distance(a, b + 1.0, subsets=20)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert shifted_mean > 0.5 and shifted_mean > 20 * abs(same_mean)


def test_kid_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(100, 8)), rng.normal(size=(120, 8))
    assert kernel_inception_distance(a, b, seed=3) == kernel_inception_distance(a, b, seed=3)


# -- precision and recall ---------------------------------------------------------------------


def test_precision_recall_limits() -> None:
    rng = np.random.default_rng(7)
    real = rng.normal(size=(150, 16))
    assert precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
    assert precision_recall(real, rng.normal(size=(150, 16)) + 100.0, k=3) == (0.0, 0.0)


def test_precision_recall_see_a_collapsed_generator() -> None:
    rng = np.random.default_rng(8)
    real = rng.normal(size=(300, 4))
    collapsed = real[:10][rng.integers(0, 10, 300)] + rng.normal(scale=1e-3, size=(300, 4))
    precision, recall = precision_recall(real, collapsed, k=3)
    assert precision > 0.9 and recall < 0.3  # realistic but covering little


# -- memorisation --------------------------------------------------------------------------------


def test_memorisation_of_copies() -> None:
    images, _ = _tiny_images(64)
    train, heldout = images[:32], images[32:]
    picks = np.array([3, 17, 0, 31, 8, 8])
    report = memorisation(train[picks], train, heldout)
    assert report.share == 1.0 and report.rank_share == 1.0
    np.testing.assert_array_equal(report.nearest_train_index, picks)
    np.testing.assert_allclose(report.nearest_train_distance, 0.0, atol=1e-6)
    assert report.space == "pixels" and report.reference_size == 32


def test_memorisation_finds_mirrored_copies_and_uses_the_whole_training_set() -> None:
    images, _ = _tiny_images(64)
    train, heldout = images[:48], images[48:]  # more training images than held-out ones
    picks = np.array([40, 5, 47])
    report = memorisation(train[picks][:, :, ::-1], train, heldout)
    np.testing.assert_array_equal(report.nearest_train_index, picks)
    assert report.nearest_train_mirrored.all()
    assert report.rank_share == 1.0 and report.reference_size == 16


def test_memorisation_share_is_about_half_for_new_data() -> None:
    rng = np.random.default_rng(9)
    feats = rng.normal(size=(3000, 4))
    report = memorisation(feats[:1000], feats[1000:2000], feats[2000:])
    assert report.space == "features"
    assert 0.4 < report.share < 0.6 and 0.4 < report.rank_share < 0.6


# -- the feature extractor -------------------------------------------------------------------


def _fit(images: np.ndarray, labels: np.ndarray | None, steps: int = STEPS) -> FeatureExtractor:
    outcome = run_sync(fit_feature_extractor(images, labels, steps=steps, batch_size=32))
    assert outcome.ok, outcome.details
    return outcome.result


@pytest.fixture(scope="module")
def fitted() -> FeatureExtractor:
    """One extractor fitted on the tiny labelled images, shared by the tests that only use it."""
    images, labels = _tiny_images(64)
    return _fit(images, labels)


def test_extractor_learns_the_classes_and_is_deterministic(tmp_path, fitted) -> None:
    images, labels = _tiny_images(64)
    first, second = fitted, _fit(images, labels)
    feats = first.features(images)
    assert feats.shape == (64, EMBED_DIM) and feats.dtype == np.float32
    np.testing.assert_array_equal(feats, second.features(images))
    assert first.meta["mode"] == "classifier" and first.meta["val_accuracy"] == 1.0
    assert first.describe().startswith("studio-cnn-128 (16 px) trained on this dataset's 2 classes")
    # The two patterns land apart: the class means differ by more than the spread within.
    a, b = feats[labels == 0], feats[labels == 1]
    assert np.linalg.norm(a.mean(0) - b.mean(0)) > np.linalg.norm(a.std(0))

    first.save(tmp_path / "x")
    loaded = FeatureExtractor.load(tmp_path / "x")
    np.testing.assert_array_equal(loaded.features(images), feats)
    assert loaded.describe() == first.describe()


def test_extractor_without_labels_is_an_autoencoder() -> None:
    images, _ = _tiny_images(16)
    extractor = _fit(images, None, steps=5)
    assert extractor.meta["mode"] == "autoencoder" and "16 unlabelled" in extractor.describe()
    assert extractor.features(images).shape == (16, EMBED_DIM)


def test_extractor_takes_float_tensors_and_resizes(fitted) -> None:
    import torch

    images, _ = _tiny_images(16)
    extractor = fitted
    as_float = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    np.testing.assert_allclose(
        extractor.features(as_float), extractor.features(images), rtol=1e-5, atol=1e-5
    )
    big = images.repeat(2, axis=1).repeat(2, axis=2)  # 32 px: resized down to 16
    assert extractor.features(big).shape == (16, EMBED_DIM)


def test_get_feature_extractor_caches(tmp_path) -> None:
    images, labels = _tiny_images(64)
    dataset = _dataset(images, labels)
    seen: list[Progress] = []
    first = run_sync(
        get_feature_extractor(dataset, 16, tmp_path, exclude=[0, 1], steps=10), None, seen.append
    )
    assert first.ok and any(p.step == 10 for p in seen)
    assert first.result.meta["images"] == 62
    seen.clear()
    again = run_sync(
        get_feature_extractor(dataset, 16, tmp_path, exclude=[1, 0], steps=10), None, seen.append
    )
    assert again.ok and not any(p.step for p in seen) and "cache" in seen[0].message
    np.testing.assert_array_equal(again.result.features(images), first.result.features(images))
    assert len(list(tmp_path.glob("features-*"))) == 1


def test_evaluate_samples_reports_comparable_numbers(fitted) -> None:
    images, _ = _tiny_images(64)
    extractor = fitted
    train, heldout = images[:40], images[40:]
    report = evaluate_samples(train[:20], train, heldout, extractor, kid_subsets=5)
    assert isinstance(report, QualityReport)
    assert report.n_samples == 20 and report.n_reference == 24
    # Copies of training images left out of the equal-size subsample count like new images.
    assert report.memorisation_rank_share == 1.0 and report.memorisation_share > 0.5
    assert report.fd >= 0 and 0 <= report.precision <= 1 and 0 <= report.recall <= 1
    assert set(report.to_dict()) >= {"fd", "kid_mean", "kid_std", "extractor"}
    other = evaluate_samples(heldout[:20], train, heldout, extractor, kid_subsets=5)
    assert report.comparable_with(other) and other.memorisation_share < 1.0
