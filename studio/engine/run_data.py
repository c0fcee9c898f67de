"""The run's images, as the trainer reads them: one folder, pairs of folders A and B (or
side-by-side files), or two unpaired folders; split into training and held-out images, and
turned into the batches and the monitor's fixed held-out images."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from studio.core.errors import StudioError
from studio.core.jobs import Progress
from studio.engine.batches import DeviceImages, UnpairedBatches
from studio.engine.data import ImageDataset, load_dataset, scan_folder, split_holdout
from studio.engine.pairs import PairedImages, UnpairedImages, load_pairs, scan_pairs
from studio.engine.runs import TrainConfig
from studio.models.base import Capability, GenerativeModel
from studio.models.registry import get_family


def is_paired(family_key: str) -> bool:
    """Whether the family trains on pairs of images from two folders (``Capability.PAIRED``
    without ``SINGLE_FOLDER``)."""
    caps = get_family(family_key).info.capabilities
    return Capability.PAIRED in caps and Capability.SINGLE_FOLDER not in caps


def is_unpaired(family_key: str) -> bool:
    """Whether the family learns from two unpaired folders (``Capability.UNPAIRED``)."""
    return Capability.UNPAIRED in get_family(family_key).info.capabilities


def prepare_dataset(
    data: str, resolution: int, cache_dir: Path | None = None
) -> Generator[Progress, None, ImageDataset]:
    scan = yield from scan_folder(Path(data))
    yield from report_skipped(scan.describe_skipped())
    scan.require_usable()
    dataset = yield from load_dataset(scan, resolution, cache_dir=cache_dir)
    late = dataset.skipped[len(scan.skipped) :]
    yield from report_skipped([f"{s.path}: {s.reason} ({s.detail})" for s in late])
    return dataset


def prepare_pairs(
    data: str, data_b: str, resolution: int
) -> Generator[Progress, None, PairedImages]:
    """Job: the pairs of folders A (``data``) and B (``data_b``; empty = ``data`` holds
    side-by-side files), decoded at ``resolution``; every file left out is reported."""
    scan = yield from scan_pairs(Path(data), Path(data_b) if data_b else None)
    yield from report_skipped(scan.describe())
    scan.require_usable()
    pairs = yield from load_pairs(scan, resolution)
    yield from report_skipped([f"{s.path}: {s.reason} ({s.detail})" for s in pairs.lost])
    return pairs


def prepare_unpaired(
    data: str, data_b: str, resolution: int, cache_dir: Path | None = None
) -> Generator[Progress, None, UnpairedImages]:
    """Job: folders A (``data``) and B (``data_b``), each read as an ordinary dataset (every
    file left out reported, with its folder)."""
    images = []
    for side, folder in (("A", data), ("B", data_b)):
        yield Progress("load", message=f"Folder {side}: {folder}")
        images.append((yield from prepare_dataset(folder, resolution, cache_dir)))
    return UnpairedImages(images[0], images[1])


def _pairs_as_dataset(pairs: PairedImages) -> ImageDataset:
    """The targets (B) of ``pairs`` as the run's dataset; the inputs (A) travel beside it."""
    n = len(pairs)
    return ImageDataset(
        images=pairs.b,
        labels=pairs.labels,
        class_names=pairs.class_names,
        captions=("",) * n,
        paths=tuple(b for _a, b in pairs.paths),
        resolution=pairs.resolution,
        fingerprint=pairs.fingerprint,
        skipped=pairs.lost,
    )


def report_skipped(lines: list[str], limit: int = 200) -> Generator[Progress, None, None]:
    """One message per skipped file, so the CLI and the GUI log list every one."""
    for line in lines[:limit]:
        yield Progress("load", message=f"Skipped {line}", info={"skipped": line})
    if len(lines) > limit:
        yield Progress("load", message=f"... and {len(lines) - limit} more skipped files")


@dataclass
class RunData:
    """The run's images, split into training and held-out ones. A paired run's ``dataset``
    holds the targets (folder B) and ``sources`` the inputs (folder A), index by index. An
    unpaired run's ``sources`` (folder A) are a collection of their own, split by
    ``source_train_idx`` and ``source_held_idx``."""

    dataset: ImageDataset
    train_idx: np.ndarray
    held_idx: np.ndarray
    labels: np.ndarray | None
    captions: tuple[str, ...]
    sources: np.ndarray | None = None
    side_by_side: bool = False
    source_train_idx: np.ndarray | None = None  # unpaired runs only
    source_held_idx: np.ndarray | None = None

    @property
    def unpaired(self) -> bool:
        return self.source_train_idx is not None


def read_data(
    config: TrainConfig,
    dataset: ImageDataset | PairedImages | UnpairedImages | None,
    cache_dir: Path | None,
) -> Generator[Progress, None, RunData]:
    sources = None
    if is_unpaired(config.family):
        return (yield from _read_unpaired(config, dataset, cache_dir))
    if isinstance(dataset, UnpairedImages):
        raise StudioError("This family does not learn from two unpaired folders.")
    if is_paired(config.family):
        where = f"{config.data} (A) and {config.data_b} (B)" if config.data_b else config.data
        yield Progress("load", message=f"Reading image pairs from {where}")
        if dataset is None:
            dataset = yield from prepare_pairs(config.data, config.data_b, config.resolution)
        if not isinstance(dataset, PairedImages):
            raise StudioError("This family trains on pairs of images: give it folders A and B.")
        sources, dataset = dataset.a, _pairs_as_dataset(dataset)
    else:
        yield Progress("load", message=f"Reading images from {config.data}")
        if dataset is None:
            dataset = yield from prepare_dataset(config.data, config.resolution, cache_dir)
        if isinstance(dataset, PairedImages):
            raise StudioError("This family trains on one folder of images, not on pairs.")
    train_idx, held_idx = split_holdout(len(dataset), config.holdout_fraction, config.seed)
    if len(train_idx) == 0:
        train_idx = np.arange(len(dataset))
    labels = dataset.labels[train_idx] if dataset.labels is not None else None
    captions = tuple(dataset.captions[i] or "" for i in train_idx)
    side_by_side = sources is not None and not config.data_b
    return RunData(dataset, train_idx, held_idx, labels, captions, sources, side_by_side)


def _read_unpaired(
    config: TrainConfig,
    dataset: ImageDataset | PairedImages | UnpairedImages | None,
    cache_dir: Path | None,
) -> Generator[Progress, None, RunData]:
    """Folders A and B of an unpaired run, each split into training and held-out images."""
    yield Progress("load", message=f"Reading {config.data} (A) and {config.data_b} (B)")
    if dataset is None:
        dataset = yield from prepare_unpaired(
            config.data, config.data_b, config.resolution, cache_dir
        )
    if not isinstance(dataset, UnpairedImages):
        raise StudioError("This family learns from two folders of images: give it A and B.")
    splits = []
    for side in (dataset.a, dataset.b):
        train_idx, held_idx = split_holdout(len(side), config.holdout_fraction, config.seed)
        splits.append((train_idx if len(train_idx) else np.arange(len(side)), held_idx))
    (a_train, a_held), (b_train, b_held) = splits
    b = replace(dataset.b, fingerprint=dataset.fingerprint)  # resume notes a change of either
    return RunData(
        b,
        b_train,
        b_held,
        None,  # class folders mean nothing to a translation between two collections
        tuple("" for _ in b_train),
        sources=dataset.a.images,
        source_train_idx=a_train,
        source_held_idx=a_held,
    )


def two_folder_record(config: TrainConfig, data: RunData) -> dict[str, Any]:
    """What config.json says about a paired run's data (``fingerprint`` is the pairs') or an
    unpaired one's (``fingerprint`` is both folders'; ``images`` counts folder B's)."""
    if data.sources is None:
        return {}
    if data.source_train_idx is not None and data.source_held_idx is not None:
        return {
            "unpaired": True,
            "path_b": str(config.data_b),
            "images_a": len(data.sources),
            "train_images_a": int(len(data.source_train_idx)),
            "held_out_images_a": int(len(data.source_held_idx)),
        }
    return {
        "paired": True,
        "path_b": str(config.data_b),
        "side_by_side": data.side_by_side,
        "pairs": len(data.dataset),
    }


def batches_for(
    data: RunData, model: GenerativeModel, config: TrainConfig, device: torch.device
) -> DeviceImages | UnpairedBatches:
    """The training images as batches: one folder's, a paired run's aligned pairs, or an
    unpaired run's two folders drawn independently."""
    dataset = data.dataset
    if data.unpaired and data.sources is not None and data.source_train_idx is not None:
        return UnpairedBatches(
            data.sources[data.source_train_idx],
            dataset.images[data.train_idx],
            device,
            config.seed,
            config.batch_size,
            config.flip,
        )
    return DeviceImages(
        dataset.images[data.train_idx],
        data.labels,
        device,
        config.seed,
        config.batch_size,
        config.flip,
        captions=data.captions if Capability.TEXT in model.info.capabilities else None,
        sources=None if data.sources is None else data.sources[data.train_idx],
        jitter=model.paired_jitter() if data.sources is not None else 0,
    )


def held_out(
    data: RunData, limit: int = 256, from_training: bool = False
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The monitor's fixed images: (held-out images, their inputs). A paired run's are pairs
    (input | output | target grids), an unpaired run's each folder's own (B's, A's), both
    from the training images when nothing is held out (and so a one-folder run's with
    ``from_training``: a single-folder image-to-image family makes its inputs from them)."""
    dataset = data.dataset
    if data.sources is None and from_training and not len(data.held_idx):
        return dataset.images[data.train_idx[:limit]], None
    if data.sources is None:
        return (dataset.images[data.held_idx[:limit]] if len(data.held_idx) else None), None
    shown = data.held_idx if len(data.held_idx) else data.train_idx
    if data.source_train_idx is None or data.source_held_idx is None:
        return dataset.images[shown[:limit]], data.sources[shown[:limit]]
    held_a = data.source_held_idx if len(data.source_held_idx) else data.source_train_idx
    return dataset.images[shown[:limit]], data.sources[held_a[:limit]]
