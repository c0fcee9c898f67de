"""Make more of a rare class: generate images per class with a trained run into a new folder.

The output keeps the training folder's class layout (``OUT/<class>/gen_00001.png``), so it can
be added to a classifier's training data as it is. A class-conditional run (its family takes
a ``label`` condition) draws every class; a text run (a ``prompt`` condition) is prompted
with each class's name, written beside the image as its caption; an unconditional run draws
one class, named by the caller, and only when it was trained on that class alone.

Two filters drop samples before they are written: one too close to a training image (the
memorisation check's distance: RMS pixel distance to the nearest image of the training folder,
its mirror included), and, optionally, one the feature extractor's class head does not give
to the class it was drawn for. Drawing goes on until every class has its count or the
attempts run out (``max_attempts`` x the count); the report says how many were made.

Nothing is overwritten: the output folder must be new, empty, or an earlier export of ours
(its manifest, ``augment.json``, says so), which gets the new files added after its own.
The manifest lists every file with its class, seed, caption, size and SHA-256, and the
settings of every export; it is rewritten atomically after every batch, so a cancelled or
crashed export leaves a manifest of exactly what was written.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from studio.core import atomic
from studio.core.errors import StudioError
from studio.core.jobs import Progress
from studio.engine.device import cpu_generator, resolve_device
from studio.engine.runs import RunFolder
from studio.engine.sample import load_run_model
from studio.models.base import Capability, GenerativeModel, images_to_uint8

MANIFEST_NAME = "augment.json"
MANIFEST_KIND = "studio-augment"
MANIFEST_VERSION = 1
DEFAULT_BATCH = 16
DEFAULT_MAX_ATTEMPTS = 4.0
# The default minimum distance: this percentile of how close genuinely unseen images (the
# run's held-out images) come to the training images.
DISTANCE_PERCENTILE = 5.0
MIN_DEFAULT_DISTANCE = 1.0 / 255  # a floor, for folders holding duplicates
TOO_CLOSE = "too_close"
WRONG_CLASS = "wrong_class"


@dataclass(frozen=True)
class AugmentReport:
    """What an export did: ``made`` and ``asked`` per class, ``dropped`` per reason, the
    minimum distance used and where it came from, and the files written (relative paths)."""

    out: Path
    family: str
    conditioning: str  # "label", "prompt" or "none"
    asked: dict[str, int]
    made: dict[str, int]
    drawn: dict[str, int]
    dropped: dict[str, int]
    min_distance: float
    distance_source: str
    files: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def short(self) -> dict[str, int]:
        """Classes that got fewer images than asked: name -> how many are missing."""
        return {c: n - self.made[c] for c, n in self.asked.items() if self.made[c] < n}


# -- the output folder and its manifest ---------------------------------------------------------


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """An earlier export's manifest in ``folder``, or None."""
    try:
        data = json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND:
        return None
    if data.get("version") != MANIFEST_VERSION or not isinstance(data.get("files"), dict):
        return None
    if not isinstance(data.get("exports"), list):
        return None
    return data


def _open_output(out: Path) -> dict[str, Any]:
    """The manifest to extend: an earlier export's, or a new one for a new or empty folder.
    Anything else is refused before anything is written."""
    if out.exists() and not out.is_dir():
        raise StudioError(f"{out} is a file; give a new or empty folder for the images.")
    if out.is_dir() and any(out.iterdir()):
        manifest = read_manifest(out)
        if manifest is None:
            raise StudioError(
                f"{out} is not empty and is not an earlier augmentation export (it has no "
                f"{MANIFEST_NAME}), so nothing was written; choose a new or empty folder."
            )
        return manifest
    return {"kind": MANIFEST_KIND, "version": MANIFEST_VERSION, "files": {}, "exports": []}


def _safe_dir_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise StudioError(f"The class name {name!r} cannot be a folder name.")
    return name


def _create_new(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data``, whole or not at all, never replacing a file: a
    hidden temp file (ordinary permissions) hard-linked into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise StudioError(f"{path} appeared during the export; it was left alone.") from None
        except OSError:  # a file system without hard links
            with open(path, "xb") as fh:
                fh.write(data)
    finally:
        tmp.unlink(missing_ok=True)


def _next_name(folder: Path, taken: set[str], cls: str, start: int) -> tuple[str, int]:
    """The first ``<cls>/gen_NNNNN.png`` from number ``start`` that nothing holds yet."""
    number = start
    while True:
        rel = f"{cls}/gen_{number:05d}.png"
        stem = folder / cls / f"gen_{number:05d}"
        busy = rel in taken or any(
            p.exists() or p.is_symlink()
            for p in (stem.with_suffix(".png"), stem.with_suffix(".txt"))
        )
        if not busy:
            return rel, number
        number += 1


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    arr = image[..., 0] if image.shape[-1] == 1 else image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


# -- what the run learned ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Training:
    """The run's training folder as the model sees it (uint8 N x R x R x C, C its channels),
    its labels (or None), and the held-out split the run used."""

    images: np.ndarray
    labels: np.ndarray | None
    held_idx: np.ndarray
    dataset: Any  # studio.engine.data.ImageDataset at the model's resolution
    changed: bool  # the folder's fingerprint differs from the run's


def _load_training(
    config: dict[str, Any], model: GenerativeModel
) -> Generator[Progress, None, _Training]:
    from studio.engine.data import load_dataset, scan_folder, split_holdout
    from studio.engine.score import to_model_input

    record = config.get("dataset", {})
    folder = record.get("path")
    if not folder or not Path(folder).is_dir():
        raise StudioError(
            f"The run's training folder {folder} is not there any more, and the distance filter "
            "compares samples with it; put it back, or give a minimum distance of 0."
        )
    scan = yield from scan_folder(folder)
    scan.require_usable()
    data = yield from load_dataset(scan, int(model.config.resolution))
    train = config.get("train", {})
    _, held = split_holdout(
        len(data), float(train.get("holdout_fraction", 0.05)), int(train.get("seed", 0))
    )
    channels = int(getattr(model.config, "channels", 3))
    images = images_to_uint8(to_model_input(data.images, channels, torch.device("cpu"))).numpy()
    changed = record.get("fingerprint") not in (None, data.fingerprint)
    return _Training(images, data.labels, held, data, changed)


def default_min_distance(images: np.ndarray, held_idx: np.ndarray) -> tuple[float, str]:
    """The default minimum distance and how it was found: the ``DISTANCE_PERCENTILE``th
    percentile of the held-out images' distances to their nearest training image (mirror
    included); without held-out images, of one half of the images' distances to the other
    half. Never below ``MIN_DEFAULT_DISTANCE``."""
    from studio.engine.metrics import nearest_distances

    n = len(images)
    if len(held_idx) >= 1 and n - len(held_idx) >= 1:
        rest = np.setdiff1d(np.arange(n), held_idx)
        d, _, _ = nearest_distances(images[held_idx], images[rest])
        where = f"{len(held_idx)} held-out images' nearest training image"
    elif n >= 2:
        d, _, _ = nearest_distances(images[0::2], images[1::2])
        where = f"{(n + 1) // 2} images' nearest image in the other half of the folder"
    else:
        return MIN_DEFAULT_DISTANCE, "the floor (the folder has one image)"
    value = max(float(np.percentile(d, DISTANCE_PERCENTILE)), MIN_DEFAULT_DISTANCE)
    return value, f"{DISTANCE_PERCENTILE:g}th percentile of the {where} distance"


# -- the job ----------------------------------------------------------------------------------


def _plan(
    model: GenerativeModel, class_names: list[str], class_name: str | None
) -> tuple[str, list[str]]:
    """(conditioning, classes to draw)."""
    takes = set(model.conditions)
    if class_names and ("label" in takes or "prompt" in takes):
        conditioning = "label" if "label" in takes else "prompt"
        if class_name is None:
            return conditioning, [_safe_dir_name(c) for c in class_names]
        if class_name not in class_names:
            known = ", ".join(class_names)
            raise StudioError(f"{class_name!r} is not a class of this run (classes: {known}).")
        return conditioning, [_safe_dir_name(class_name)]
    if class_name is None:
        raise StudioError(
            f"This {model.info.display_name} run cannot draw a chosen class (it is not "
            "class-conditional, or was trained without class folders): train a "
            "class-conditional run, or give --class NAME to put the samples of a run trained "
            "on that class alone into one class folder."
        )
    if class_names and class_names != [class_name]:
        raise StudioError(
            f"This run learned the classes {', '.join(class_names)} together without labels, "
            f"so its samples are not of class {class_name!r}; train it on that class's folder "
            "alone, or train a class-conditional run."
        )
    return "none", [_safe_dir_name(class_name)]


def augment_job(
    run_dir: str | Path,
    out: str | Path,
    *,
    per_class: int | None = None,
    fill: bool = False,
    class_name: str | None = None,
    seed: int = 0,
    min_distance: float | None = None,
    check_class: bool = False,
    max_attempts: float = DEFAULT_MAX_ATTEMPTS,
    batch_size: int = DEFAULT_BATCH,
    sampling: dict[str, Any] | None = None,
    device: str = "auto",
    model: GenerativeModel | None = None,
    extractor_steps: int = 600,
    cache_dir: str | Path | None = None,
) -> Generator[Progress, None, AugmentReport]:
    """Job: draw ``per_class`` new images per class (or, with ``fill``, as many as bring each
    class up to the largest one, counting the real images and those an earlier export put in
    ``out``) from the run at ``run_dir`` into ``out`` (see the module's docstring).

    ``min_distance`` None takes :func:`default_min_distance`; 0 turns the distance filter off.
    ``check_class`` also drops samples the feature extractor (trained on the run's folder,
    its held-out images left out, cached) classifies as another class. ``sampling`` holds
    the family's sampling options. Random draws come from CPU generators seeded from
    ``seed``, the export's number in the folder, the class and the batch."""
    if (per_class is None) == (not fill):
        raise StudioError("Give either a number of images per class or fill, not both.")
    if per_class is not None and per_class < 1:
        raise StudioError("Ask for at least one image per class.")
    if not max_attempts >= 1:  # NaN too
        raise StudioError("The attempts factor must be at least 1.")
    if min_distance is not None and not 0 <= min_distance < float("inf"):
        raise StudioError("The minimum distance must be a number of 0 or more.")
    if batch_size < 1:
        raise StudioError("The batch size must be at least 1.")
    run = RunFolder(run_dir)
    if not run.path.is_dir():
        raise StudioError(f"There is no run folder at {run.path}.")
    out = Path(out)
    manifest = _open_output(out)
    yield Progress("load", message=f"Loading {run.path}")
    if model is None:
        model = load_run_model(run.path, resolve_device(device))
    model.eval()
    if Capability.PAIRED in model.info.capabilities:
        raise StudioError(
            f"{model.info.display_name} translates images rather than drawing samples, so it "
            "cannot make new images of a class."
        )
    sampling = dict(sampling or {})
    try:
        model.check_conditions(sampling)
    except ValueError as err:
        raise StudioError(str(err)) from None
    config = run.read_config()
    data_path = config.get("dataset", {}).get("path")
    if data_path and out.resolve().is_relative_to(Path(data_path).resolve()):
        raise StudioError(
            f"{out} is inside the run's training folder, where the new images would become a "
            "class of their own; choose a folder outside it."
        )
    class_names = [str(c) for c in config.get("dataset", {}).get("class_names", [])]
    if check_class and len(class_names) < 2:
        raise StudioError("The class check needs a run trained on two or more classes.")

    training: _Training | None = None
    if min_distance != 0 or check_class or fill:
        training = yield from _load_training(config, model)
    counts: dict[str, int] = {}
    if training is not None and training.labels is not None:
        names = training.dataset.class_names
        for label in training.labels:
            counts[names[int(label)]] = counts.get(names[int(label)], 0) + 1
    conditioning, classes = _plan(model, class_names, class_name)
    earlier: dict[str, int] = {}
    for entry in manifest["files"].values():
        if isinstance(entry, dict) and isinstance(entry.get("class"), str):
            earlier[entry["class"]] = earlier.get(entry["class"], 0) + 1
    if fill:
        if conditioning == "none" or not counts:
            raise StudioError(
                "Filling classes up needs a class-conditional run trained on class folders; "
                "give a number of images per class instead."
            )
        top = max(counts.values())
        asked = {c: max(0, top - counts.get(c, 0) - earlier.get(c, 0)) for c in classes}
    else:
        asked = dict.fromkeys(classes, int(per_class or 0))

    notes: list[str] = []
    if training is not None and training.changed:
        notes.append("the training folder changed since the run was trained")
    threshold, source = 0.0, "off"
    if min_distance is None:
        assert training is not None
        threshold, source = default_min_distance(training.images, training.held_idx)
    elif min_distance > 0:
        threshold, source = float(min_distance), "given"

    predict = None
    if check_class:
        assert training is not None
        predict, described = yield from _class_checker(training, extractor_steps, seed, cache_dir)
        notes.append(f"class check: {described}")

    export_no = len(manifest["exports"])
    export: dict[str, Any] = {
        "run": str(run.path.resolve()),
        "family": model.info.key,
        "family_name": model.info.display_name,
        "conditioning": conditioning,
        "settings": {
            "per_class": per_class,
            "fill": bool(fill),
            "class": class_name,
            "seed": seed,
            "min_distance": threshold,
            "min_distance_source": source,
            "check_class": bool(check_class),
            "max_attempts": max_attempts,
            "batch_size": batch_size,
        },
        "sampling": sampling,
        "asked": asked,
        "made": dict.fromkeys(classes, 0),
        "drawn": dict.fromkeys(classes, 0),
        "dropped": {TOO_CLOSE: 0, WRONG_CLASS: 0},
        "status": "running",
        "notes": notes,
    }
    manifest["exports"].append(export)
    written: list[str] = []
    total = sum(asked.values())
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / MANIFEST_NAME, manifest)
    status = "failed"
    try:
        for ci, cls in enumerate(classes):
            label = class_names.index(cls) if conditioning == "label" else None
            caption = _caption(cls) if conditioning == "prompt" else None
            budget = int(np.ceil(asked[cls] * max_attempts))
            own = _index_in(training, cls) if predict is not None else -1
            batch_no, number = 0, 1
            while export["made"][cls] < asked[cls] and export["drawn"][cls] < budget:
                # A report before every draw, so a cancel asked after the last batch stops
                # here, with the manifest already listing everything written.
                yield Progress("sample", len(written), total, f"{cls}: drawing")
                n = min(batch_size, budget - export["drawn"][cls])
                batch_seed = _batch_seed(seed, export_no, ci, batch_no)
                conditions = dict(sampling)
                if label is not None:
                    conditions["label"] = label
                if caption is not None:
                    conditions["prompt"] = caption
                with torch.no_grad():
                    drawn = model.sample(n, cpu_generator(batch_seed), **conditions)
                images = images_to_uint8(drawn).numpy()
                export["drawn"][cls] += n
                keep = np.ones(n, dtype=bool)
                if threshold > 0:
                    assert training is not None
                    from studio.engine.metrics import nearest_distances

                    d, _, _ = nearest_distances(images, training.images)
                    close = d < threshold
                    export["dropped"][TOO_CLOSE] += int(close.sum())
                    keep &= ~close
                if predict is not None:
                    wrong = keep & (predict(images) != own)
                    export["dropped"][WRONG_CLASS] += int(wrong.sum())
                    keep &= ~wrong
                for position in np.flatnonzero(keep):
                    if export["made"][cls] >= asked[cls]:
                        break
                    rel, number = _next_name(out, set(manifest["files"]), cls, number)
                    data = _png(images[position])
                    _create_new(out / rel, data)
                    entry = {
                        "class": cls,
                        "export": export_no,
                        "seed": batch_seed,
                        "batch": n,
                        "position": int(position),
                        "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                    }
                    if caption is not None:
                        _create_new((out / rel).with_suffix(".txt"), caption.encode("utf-8"))
                        entry["caption"] = caption
                    manifest["files"][rel] = entry
                    written.append(rel)
                    export["made"][cls] += 1
                batch_no += 1
                atomic.write_json(out / MANIFEST_NAME, manifest)
                done = len(written)
                yield Progress(
                    "sample",
                    done,
                    total,
                    f"{cls}: {export['made'][cls]}/{asked[cls]} made, {export['drawn'][cls]} drawn",
                )
        status = "complete" if all(export["made"][c] >= asked[c] for c in classes) else "short"
    except GeneratorExit:
        status = "cancelled"
        raise
    except BaseException:
        status = "failed"
        raise
    finally:
        export["status"] = status
        with contextlib.suppress(OSError):
            atomic.write_json(out / MANIFEST_NAME, manifest)
    return AugmentReport(
        out=out,
        family=model.info.display_name,
        conditioning=conditioning,
        asked=asked,
        made=dict(export["made"]),
        drawn=dict(export["drawn"]),
        dropped=dict(export["dropped"]),
        min_distance=threshold,
        distance_source=source,
        files=tuple(written),
        notes=tuple(notes),
    )


def _caption(cls: str) -> str:
    return " ".join(cls.replace("_", " ").replace("-", " ").split())


def _batch_seed(seed: int, export_no: int, class_no: int, batch_no: int) -> int:
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, export_no, class_no, batch_no])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _index_in(training: _Training | None, cls: str) -> int:
    names = () if training is None else training.dataset.class_names
    if cls not in names:
        raise StudioError(f"The training folder has no class {cls!r} any more to check against.")
    return names.index(cls)


def _class_checker(
    training: _Training, steps: int, seed: int, cache_dir: str | Path | None
) -> Generator[Progress, None, Any]:
    """(a function: uint8 images -> the class index, into the folder's class names, the
    feature extractor's class head gives each; the extractor described in words)."""
    from studio.engine.feature_extractor import get_feature_extractor

    dataset = training.dataset
    if dataset.labels is None:
        raise StudioError("The class check needs every training image in a class folder.")
    extractor = yield from get_feature_extractor(
        dataset,
        dataset.resolution,
        cache_dir,
        exclude=training.held_idx,
        steps=steps,
        seed=seed,
    )
    keep = np.setdiff1d(np.arange(len(dataset)), training.held_idx)
    classes = np.unique(dataset.labels[keep])
    if len(classes) < 2 or extractor.meta.get("mode") != "classifier":
        raise StudioError("The class check needs a run trained on two or more classes.")

    def predict(images: np.ndarray) -> np.ndarray:
        rgb = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
        feats = torch.from_numpy(extractor.features(rgb)).to(extractor.device)
        with torch.no_grad():
            head = extractor.net.head(feats).argmax(1).cpu().numpy()
        return classes[head]

    return predict, extractor.describe()
