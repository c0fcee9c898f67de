"""Side-by-side comparison of runs trained on one dataset: the compare job.

Every panel is measured under identical conditions, because the metrics in
:mod:`studio.engine.metrics` are only comparable that way: one feature extractor, one set of
held-out reference images, one sample count ``n`` and one seed for every run. The job refuses
runs trained on different datasets or at different resolutions rather than printing numbers
that look comparable but are not.

Writing the results (``report.json``, ``report.csv``, ``sheet.png``) lives in
:mod:`studio.engine.compare_report`; it is re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from studio.core.errors import StudioError
from studio.core.imaging import make_grid
from studio.core.jobs import Progress
from studio.core.options import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS
from studio.engine.runs import RunFolder, TrainConfig

# Declared once in studio.core.options (no diffusers import when settings are built).
DIFFUSION_SAMPLERS = SAMPLERS
DEFAULT_DIFFUSION_STEPS = DEFAULT_STEPS
MAX_PANELS = 6
FD_NOTE = (
    "FD is biased upwards at small n (fewer samples than feature dimensions): compare it only "
    "between panels with the same n, never with published FID values."
)


@dataclass
class CompareSettings:
    """What to compare and how; everything needed to reproduce a report.

    ``overrides`` maps a run path (as given in ``runs``) to per-panel sampling settings,
    ``{"sampler": "ddim", "steps": 50}``; they win over ``diffusion_sampler`` /
    ``diffusion_steps`` for that run. ``extractor_steps`` trains the shared feature extractor
    (cached per dataset, so only the first comparison pays for it).
    """

    runs: list[Path]
    n: int = 64
    seed: int = 0
    diffusion_sampler: str = DEFAULT_SAMPLER
    diffusion_steps: int | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    extractor_steps: int = 600
    cache_dir: Path | None = None  # default: studio.core.paths.cache_dir()

    def sampling_for(self, run: str | Path, options: tuple[Any, ...] = ()) -> dict[str, Any]:
        """The diffusion sampler and step count for ``run`` (a diffusion run uses both).
        ``options``: the run's family's ``sampling_options``, whose "steps" default per
        sampler (super-resolution's few steps) wins over the shared table."""
        over = self.overrides.get(str(run), {})
        sampler = str(over.get("sampler") or self.diffusion_sampler).lower()
        if sampler not in DIFFUSION_SAMPLERS:
            raise StudioError(
                f"Unknown sampler {sampler!r}: choose one of {', '.join(DIFFUSION_SAMPLERS)}."
            )
        from studio.models.capabilities import option_default

        family_default = option_default(options, "steps", {"sampler": sampler})
        steps = (
            over.get("steps")
            or self.diffusion_steps
            or family_default
            or DEFAULT_DIFFUSION_STEPS[sampler]
        )
        return {"sampler": sampler, "steps": int(steps)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (paths as strings)."""
        return {
            "runs": [str(r) for r in self.runs],
            "n": self.n,
            "seed": self.seed,
            "diffusion_sampler": self.diffusion_sampler,
            "diffusion_steps": self.diffusion_steps,
            "overrides": {k: dict(v) for k, v in self.overrides.items()},
            "device": self.device,
            "extractor_steps": self.extractor_steps,
        }


@dataclass
class PanelResult:
    """One run's samples and numbers.

    ``quality`` holds :meth:`studio.engine.metrics.QualityReport.to_dict` (fd, kid_mean,
    kid_std, precision, recall, memorisation_share, memorisation_rank_share, n_samples,
    n_reference, extractor). ``nearest_index[i]`` is the dataset index of the training image
    nearest to sample ``i`` (in pixels; ``nearest_mirrored[i]``: its mirror image), and
    ``nearest_images[i]`` that image as the model saw it. The arrays stay out of the JSON.
    """

    run: str
    name: str
    family: str
    kind: str
    display_name: str
    step: int
    conditions: dict[str, Any]
    quality: dict[str, Any]
    bits_per_dim: float | None
    seconds_per_image: float
    samples: np.ndarray = field(repr=False)
    grid: np.ndarray = field(repr=False)
    nearest_index: np.ndarray = field(repr=False)
    nearest_distance: np.ndarray = field(repr=False)
    nearest_mirrored: np.ndarray = field(repr=False)
    nearest_images: np.ndarray = field(repr=False)

    @property
    def title(self) -> str:
        return f"{self.name} ({self.display_name})"

    def summary(self) -> dict[str, Any]:
        """The JSON-able part: what the report and the CSV hold for this panel."""
        return {
            "run": self.run,
            "name": self.name,
            "family": self.family,
            "kind": self.kind,
            "display_name": self.display_name,
            "step": self.step,
            "conditions": dict(self.conditions),
            **{k: v for k, v in self.quality.items() if k != "extractor"},
            "bits_per_dim": self.bits_per_dim,
            "seconds_per_image": self.seconds_per_image,
            "median_nearest_train_distance": float(np.median(self.nearest_distance)),
        }


@dataclass
class CompareReport:
    """Every panel plus what they were measured against."""

    settings: dict[str, Any]
    dataset: dict[str, Any]  # path, fingerprint, images, held_out (fraction, seed, count)
    resolution: int
    n: int
    n_reference: int
    extractor: str
    extractor_meta: dict[str, Any]
    panels: list[PanelResult]
    notes: list[str]
    versions: dict[str, str]
    machine: dict[str, str]
    created: str


def _run_info(path: Path) -> tuple[dict[str, Any], TrainConfig]:
    run = RunFolder(path)
    if not run.exists():
        raise StudioError(f"{path} is not a Studio run folder (no config.json).")
    config = run.read_config()
    return config, TrainConfig.from_dict(config.get("train", {}))


def check_runs(runs: list[Path]) -> list[tuple[dict[str, Any], TrainConfig]]:
    """Each run's config, once every run is known to share the first run's dataset and
    resolution; otherwise a :class:`StudioError` naming the odd run."""
    if not runs:
        raise StudioError("Choose at least one run to compare.")
    if len(runs) > MAX_PANELS:
        raise StudioError(f"Compare at most {MAX_PANELS} runs at a time (got {len(runs)}).")
    if len({str(Path(r).resolve()) for r in runs}) != len(runs):
        raise StudioError("A run appears twice in the comparison.")
    infos = [_run_info(Path(r)) for r in runs]
    first_cfg, first = infos[0]
    first_fp = first_cfg.get("dataset", {}).get("fingerprint")
    for path, (cfg, train) in zip(runs[1:], infos[1:]):
        fp = cfg.get("dataset", {}).get("fingerprint")
        if fp != first_fp:
            raise StudioError(
                f"{Path(path).name} was trained on a different dataset ({train.data}) than "
                f"{Path(runs[0]).name} ({first.data}): the numbers would not be comparable. "
                "Compare runs trained on the same images."
            )
        if train.resolution != first.resolution:
            raise StudioError(
                f"{Path(path).name} works at {train.resolution} px but {Path(runs[0]).name} at "
                f"{first.resolution} px: compare runs trained at one resolution."
            )
    return infos


@torch.no_grad()
def held_out_bits_per_dim(
    model: Any, images: np.ndarray, labels: np.ndarray | None, seed: int, batch: int = 64
) -> float:
    """Mean bits/dim of uint8 ``images`` under a LIKELIHOOD model (the likelihood protocol,
    :class:`studio.models.capabilities.LikelihoodFamily`; labels go to a model with classes).

    VAEs estimate their bound with random draws; a fixed seed makes the number repeatable."""
    use_labels = labels is not None and int(getattr(model.config, "num_classes", 0)) > 0
    values = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch])).to(model.device)
            x = x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
            if use_labels:
                y = torch.from_numpy(labels[i : i + batch]).long().to(model.device)
                values.append(model.bits_per_dim(x, y).float().cpu())
            else:
                values.append(model.bits_per_dim(x).float().cpu())
    return float(torch.cat(values).mean())


def compare_job(settings: CompareSettings) -> Generator[Progress, None, CompareReport]:
    """Job: sample and score every run in ``settings`` under identical conditions.

    Yields sampling progress with ``info={"run", "panel", "panels"}``, and once per finished
    run a ``"panel"`` report whose image is its sample grid and whose ``payload`` is a
    :class:`PanelDone` (the :class:`PanelResult`). Returns the :class:`CompareReport`.
    """
    prep = yield from prepare_compare(settings)
    panels: list[PanelResult] = []
    for i, path in enumerate(prep.runs):
        panel = yield from run_panel(prep, i)
        panels.append(panel)
        yield Progress(
            "panel",
            i + 1,
            len(prep.runs),
            message=f"Panel {i + 1}/{len(prep.runs)}: {panel.title} done",
            image=panel.grid,
            info={"run": str(path), "panel": i, "panels": len(prep.runs)},
            payload=PanelDone(i, panel, prep.extractor.describe()),
        )
    return build_report(prep, panels)


@dataclass
class ComparePrep:
    """What every panel of one comparison shares: the checked runs, the dataset, its split,
    the feature extractor. Built by :func:`prepare_compare`; a comparison can then run its
    panels as separate jobs (:func:`run_panel`; between training steps, see
    :func:`studio.engine.peek.compare_panel_peek`) and end with :func:`build_report`."""

    settings: CompareSettings
    runs: list[Path]
    infos: list[tuple[dict[str, Any], TrainConfig]]
    device: torch.device
    dataset: Any
    train_idx: np.ndarray
    train_images: np.ndarray
    held_idx: np.ndarray
    extractor: Any
    notes: list[str]
    # Runs that translate images (Capability.PAIRED): the held-out inputs every panel
    # translates (folder A's), and for paired runs their targets (None for unpaired runs,
    # whose held-out folder B images are the reference of FD/KID only).
    inputs: np.ndarray | None = None
    targets: np.ndarray | None = None
    # Runs that restore images from their own degraded copies (Capability.SINGLE_FOLDER:
    # super-resolution): each panel makes the inputs of ``targets`` itself, from the seed, and
    # is scored beside bicubic upsampling of those same inputs.
    restores: bool = False


def prepare_compare(settings: CompareSettings) -> Generator[Progress, None, ComparePrep]:
    """Job: check the runs, read the dataset, split it and get the feature extractor."""
    from studio.core.paths import cache_dir as default_cache_dir
    from studio.engine.device import resolve_device
    from studio.engine.metrics import get_feature_extractor
    from studio.engine.train import prepare_dataset

    if settings.n < 2:
        raise StudioError("Compare with at least 2 samples per run (64 or more is better).")
    runs = [Path(r) for r in settings.runs]
    infos = check_runs(runs)
    first_cfg, first = infos[0]
    device = resolve_device(settings.device)
    cache = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()

    if _translating(first.family):
        return (yield from _prepare_translations(settings, runs, infos, device, cache))
    yield Progress("load", message=f"Reading images from {first.data}")
    dataset = yield from prepare_dataset(first.data, first.resolution, cache)
    fingerprint = first_cfg.get("dataset", {}).get("fingerprint")
    if dataset.fingerprint != fingerprint:
        # The held-out split is rebuilt by index: on changed files it would pick other images.
        raise StudioError(
            f"The dataset folder {first.data} changed since these runs were trained, so their "
            "held-out images cannot be rebuilt. Compare runs against the images they saw."
        )
    train_idx, held_idx, notes = _split(dataset, infos, settings)
    extractor = yield from get_feature_extractor(
        dataset,
        first.resolution,
        cache,
        exclude=held_idx,
        steps=settings.extractor_steps,
        seed=0,
        device=device,
    )
    train_images = dataset.images[train_idx]
    return ComparePrep(
        settings, runs, infos, device, dataset, train_idx, train_images, held_idx, extractor, notes
    )


def _translating(family: str) -> bool:
    from studio.models.base import Capability
    from studio.models.registry import get_family

    try:
        return Capability.PAIRED in get_family(family).info.capabilities
    except KeyError:
        return False


def _restoring(family: str) -> bool:
    """Whether ``family`` restores images from inputs it makes itself from one folder
    (``Capability.SINGLE_FOLDER`` with targets: super-resolution, scored against the originals
    beside bicubic); a single-folder family without targets (a style network) repaints its
    held-out images instead."""
    from studio.models.base import Capability
    from studio.models.registry import get_family

    try:
        cls = get_family(family)
        return Capability.SINGLE_FOLDER in cls.info.capabilities and cls.inputs_have_targets
    except KeyError:
        return False


def _prepare_translations(
    settings: CompareSettings,
    runs: list[Path],
    infos: list[tuple[dict[str, Any], TrainConfig]],
    device: torch.device,
    cache: Path,
) -> Generator[Progress, None, ComparePrep]:
    """The shared part of a comparison of runs that translate images: the first run's folders
    read as it read them, its held-out inputs (folder A's) and, for pairs, their targets."""
    from studio.engine.metrics import get_feature_extractor
    from studio.engine.run_data import read_data

    first_cfg, first = infos[0]
    for path, (_cfg, train) in zip(runs, infos):
        if not _translating(train.family):
            raise StudioError(
                f"{path.name} does not translate images but {runs[0].name} does: compare "
                "image-to-image runs with each other."
            )
    restores = _restoring(first.family)
    for path, (_cfg, train) in zip(runs, infos):
        if _restoring(train.family) != restores:
            raise StudioError(
                f"{path.name} and {runs[0].name} do not take the same kind of input (one "
                "makes its inputs from a single folder, the other reads them from folder A): "
                "compare them with runs of their own kind."
            )
    data = yield from read_data(first, None, cache)
    dataset = data.dataset
    if dataset.fingerprint != first_cfg.get("dataset", {}).get("fingerprint"):
        raise StudioError(
            f"The folders {first.data} and {first.data_b} changed since these runs were "
            "trained, so their held-out images cannot be rebuilt. Compare runs against the "
            "images they saw."
        )
    held = data.held_idx
    if len(held) < 2:
        raise StudioError(
            f"{runs[0].name} kept {len(held)} held-out image(s); the metrics need at least 2. "
            "Train with a larger held-out fraction or more images."
        )
    rng = np.random.default_rng(settings.seed)
    notes = [FD_NOTE]
    if restores:
        if len(held) > settings.n:
            held = np.sort(rng.choice(held, settings.n, replace=False))
        inputs, targets = None, dataset.images[held]
        notes.append(
            f"Runs that restore images: {len(held)} held-out images, each run's low-resolution "
            "inputs made from them by its own degradation (seeded: the same settings give the "
            "same inputs); L1, PSNR and SSIM to the originals, beside bicubic upsampling of "
            "the same inputs (_bicubic), and FD/KID against the originals."
        )
    elif data.unpaired:
        assert data.source_held_idx is not None
        inputs_idx = data.source_held_idx
        if len(inputs_idx) < 2:
            raise StudioError(f"{runs[0].name} kept fewer than 2 held-out images of folder A.")
        if len(inputs_idx) > settings.n:
            inputs_idx = np.sort(rng.choice(inputs_idx, settings.n, replace=False))
        if len(held) > settings.n:
            held = np.sort(rng.choice(held, settings.n, replace=False))
        inputs, targets = data.sources[inputs_idx], None
        notes.append(
            f"Unpaired runs: {len(inputs)} held-out images of folder A translated A to B, "
            f"scored by FD/KID against {len(held)} held-out images of folder B (no targets)."
        )
    elif data.sources is None:  # a single-folder run whose input is the image itself
        if len(held) > settings.n:
            held = np.sort(rng.choice(held, settings.n, replace=False))
        inputs, targets = dataset.images[held], None
        notes.append(
            f"Runs that repaint their input: {len(held)} held-out images repainted, side by "
            "side (no targets: FD/KID against the held-out images say how far from them the "
            "outputs moved)."
        )
    else:
        if len(held) > settings.n:
            held = np.sort(rng.choice(held, settings.n, replace=False))
        inputs, targets = data.sources[held], dataset.images[held]
        notes.append(
            f"Paired runs: {len(held)} held-out inputs translated; L1, PSNR and SSIM to their "
            "targets, FD/KID against the targets."
        )
    extractor = yield from get_feature_extractor(
        dataset,
        first.resolution,
        cache,
        exclude=data.held_idx,
        steps=settings.extractor_steps,
        seed=0,
        device=device,
    )
    train_images = dataset.images[data.train_idx]
    return ComparePrep(
        settings,
        runs,
        infos,
        device,
        dataset,
        data.train_idx,
        train_images,
        held,
        extractor,
        notes,
        inputs,
        targets,
        restores,
    )


def run_panel(
    prep: ComparePrep, i: int, model: Any = None, step: int | None = None
) -> Generator[Progress, None, PanelResult]:
    """Job: sample and score run ``i`` of a prepared comparison, with its saved model or with
    ``model`` (weights of training ``step``; the caller lends it, see peek.borrowed)."""
    return (
        yield from _one_panel(
            i,
            prep.runs[i],
            prep.infos[i][0],
            prep.settings,
            prep.device,
            prep.train_idx,
            prep.train_images,
            prep.held_idx,
            prep.dataset,
            prep.extractor,
            model=model,
            step=step,
            inputs=prep.inputs,
            targets=prep.targets,
            restores=prep.restores,
        )
    )


def build_report(
    prep: ComparePrep, panels: list[PanelResult], notes: list[str] | None = None
) -> CompareReport:
    """The report of a prepared comparison's finished ``panels`` (``notes`` are added)."""
    first = prep.infos[0][1]
    return CompareReport(
        settings=prep.settings.to_dict(),
        dataset={
            "path": str(first.data),
            "fingerprint": prep.dataset.fingerprint,
            "images": len(prep.dataset),
            "held_out": {
                "fraction": first.holdout_fraction,
                "seed": first.seed,
                "count": int(len(prep.held_idx)),
                "used_as_reference": int(len(prep.held_idx)),
            },
        },
        resolution=first.resolution,
        n=prep.settings.n,
        n_reference=int(len(prep.held_idx)),
        extractor=prep.extractor.describe(),
        extractor_meta=dict(prep.extractor.meta),
        panels=panels,
        notes=[*prep.notes, *(notes or [])],
        versions=versions(),
        machine=machine(prep.device),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def _split(
    dataset: Any, infos: list[tuple[dict[str, Any], TrainConfig]], settings: CompareSettings
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Training and reference indices from the first run's split, plus notes for the user."""
    from studio.engine.data import split_holdout

    first = infos[0][1]
    train_idx, held_idx = split_holdout(len(dataset), first.holdout_fraction, first.seed)
    if len(held_idx) < 2:
        raise StudioError(
            f"{Path(settings.runs[0]).name} kept {len(held_idx)} held-out image(s); the metrics "
            "need at least 2. Train with a larger held-out fraction or more images."
        )
    notes = [FD_NOTE]
    if len(held_idx) > settings.n:
        # Same count on both sides, and the same images for every panel: a seeded subset.
        rng = np.random.default_rng(settings.seed)
        held_idx = np.sort(rng.choice(held_idx, settings.n, replace=False))
    elif len(held_idx) < settings.n:
        notes.append(
            f"Only {len(held_idx)} held-out images exist, so {settings.n} samples per run were "
            f"compared with {len(held_idx)} reference images."
        )
    for cfg, train in infos[1:]:
        if (train.holdout_fraction, train.seed) != (first.holdout_fraction, first.seed):
            notes.append(
                f"{train.family} ({cfg.get('dataset', {}).get('path', '')}) used another "
                "held-out split (fraction or seed): some reference images may be in its "
                "training set, which flatters its numbers."
            )
    return train_idx, held_idx, notes


def _one_panel(
    i: int,
    path: Path,
    cfg: dict[str, Any],
    settings: CompareSettings,
    device: torch.device,
    train_idx: np.ndarray,
    train_images: np.ndarray,
    held_idx: np.ndarray,
    dataset: Any,
    extractor: Any,
    model: Any = None,
    step: int | None = None,
    inputs: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    restores: bool = False,
) -> Generator[Progress, None, PanelResult]:
    """Load (unless ``model`` is given), sample (timed after a one-image warm-up), score one
    run. ``step``: the training step of ``model``'s weights (default: the newest checkpoint's)."""
    reference = dataset.images[held_idx]
    from studio.engine.checkpoint import latest_checkpoint, read_trainer_state
    from studio.engine.metrics import evaluate_samples
    from studio.engine.sample import load_run_model, sample_job
    from studio.models.base import Capability

    panels = len(settings.runs)
    info = {"run": str(path), "panel": i, "panels": panels}
    if model is None:
        yield Progress("load", message=f"Panel {i + 1}/{panels}: loading {path.name}", info=info)
        model = load_run_model(path, device)
    # The panel's values of the sampling options the family declares (SamplingOption).
    options = {o.name for o in model.sampling_options}
    over = settings.overrides.get(str(settings.runs[i]), {})
    conditions: dict[str, Any] = {
        k: v for k, v in over.items() if k in options and k in model.conditions and v is not None
    }
    if "sampler" in options:  # the run-wide sampler flags fill what the panel leaves unset
        conditions.update(settings.sampling_for(settings.runs[i], model.sampling_options))
    baseline = None
    if restores:  # its own inputs of the held-out images, and bicubic's upsampling of them
        assert targets is not None
        small = restored_inputs(model, targets, settings.seed)
        baseline = bicubic(small, targets.shape[1:3])
        inputs = baseline  # the sheet's first column: the input at the output's size
        job = translations(model, small, settings.seed, conditions=conditions)
    elif inputs is not None:  # a run that translates: its translations of the held-out inputs
        job = translations(model, inputs, settings.seed)
    else:
        # The first call pays for lazy setup (kernels, schedulers); it is not the model's speed.
        for p in sample_job(path, 1, seed=settings.seed, model=model, **conditions):
            yield Progress("warmup", p.step, p.total, message="Warming up", info=info)
        job = sample_job(path, settings.n, seed=settings.seed, model=model, **conditions)
    start = time.perf_counter()
    while True:
        try:
            p = next(job)
        except StopIteration as done:
            samples = done.value
            break
        msg = f"Panel {i + 1}/{panels}: sampling {path.name}"
        yield Progress("sample", p.step, p.total, message=msg if p.step <= 1 else "", info=info)
    seconds = (time.perf_counter() - start) / len(samples)

    yield Progress("score", message=f"Panel {i + 1}/{panels}: scoring {path.name}", info=info)
    quality = evaluate_samples(samples, train_images, reference, extractor, seed=settings.seed)
    scores = quality.to_dict()
    if targets is not None:
        from studio.engine.metrics import paired_scores

        scores.update(paired_scores(samples, targets))
        if baseline is not None:
            scores.update({f"{k}_bicubic": v for k, v in paired_scores(baseline, targets).items()})
    memo = quality.memorisation
    assert memo is not None  # evaluate_samples always fills it
    bpd = None
    if Capability.LIKELIHOOD in model.info.capabilities:
        held_labels = None if dataset.labels is None else dataset.labels[held_idx]
        bpd = held_out_bits_per_dim(model, reference, held_labels, settings.seed)
    nearest = train_idx[memo.nearest_train_index]
    near_images = dataset.images[nearest]
    if memo.nearest_train_mirrored.any():  # show the image the sample is close to
        near_images = near_images.copy()
        near_images[memo.nearest_train_mirrored] = near_images[memo.nearest_train_mirrored][
            :, :, ::-1
        ]
    if step is None:
        latest = latest_checkpoint(RunFolder(path).state_dir)
        step = int(read_trainer_state(latest)["step"]) if latest else 0
    del model  # free the weights before the next panel loads
    return PanelResult(
        run=str(path),
        name=path.name,
        family=str(cfg.get("family", "")),
        kind=str(cfg.get("family", "")).split(".")[0],
        display_name=_display_name(str(cfg.get("family", ""))),
        step=step,
        conditions=conditions,
        quality=scores,
        bits_per_dim=bpd,
        seconds_per_image=float(seconds),
        samples=samples,
        grid=_grid(samples, inputs, targets),
        nearest_index=nearest.astype(np.int64),
        nearest_distance=np.asarray(memo.nearest_train_distance, dtype=np.float64),
        nearest_mirrored=np.asarray(memo.nearest_train_mirrored, dtype=bool),
        nearest_images=near_images,
    )


def translations(
    model: Any,
    inputs: np.ndarray,
    seed: int,
    batch: int = 16,
    conditions: dict[str, Any] | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Job: ``model``'s translation of each of ``inputs`` (uint8 ``N x R x R x 3``, A to B),
    seeded, in batches, with the sampling ``conditions`` (a super-resolution run's sampler and
    steps); returns them as uint8."""
    from studio.engine.device import cpu_generator
    from studio.models.base import images_to_uint8

    gen = cpu_generator(seed)
    out = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(inputs[i : i + batch]))
            x = chunk.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(model.device)
            out.append(
                images_to_uint8(model.sample(len(x), gen, image=x, **(conditions or {}))).numpy()
            )
            yield Progress("sample", min(i + batch, len(inputs)), len(inputs))
    return np.concatenate(out)


def restored_inputs(model: Any, targets: np.ndarray, seed: int) -> np.ndarray:
    """The low-resolution inputs ``model`` makes of ``targets`` (uint8 ``N x H x W x 3``) by
    its own degradation, from ``seed``, as uint8."""
    from studio.engine.device import cpu_generator
    from studio.models.base import images_to_uint8

    x = torch.from_numpy(np.ascontiguousarray(targets)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        small = model.paired_inputs(x.div(127.5).sub(1.0), cpu_generator(seed + 2))
    return images_to_uint8(small.float().cpu()).numpy()


def bicubic(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``N x h x w x 3`` images upsampled to ``size`` bicubically (clamped): the
    baseline a super-resolution run must beat."""
    from studio.models.base import images_to_uint8

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(
        x.div(127.5).sub(1.0), size=tuple(size), mode="bicubic", align_corners=False
    )
    return images_to_uint8(x.clamp(-1, 1)).numpy()


def _grid(samples: np.ndarray, inputs: np.ndarray | None, targets: np.ndarray | None):
    """The panel's sheet: the samples, or for a translating run rows of input | output
    (| target) for the first held-out inputs."""
    if inputs is None:
        return make_grid(samples)
    shown = min(8, len(samples))
    columns = [inputs[:shown], samples[:shown]]
    if targets is not None:
        columns.append(targets[:shown])
    rows = np.stack(columns, 1).reshape(-1, *samples.shape[1:])
    return make_grid(rows, nrow=len(columns))


def _display_name(key: str) -> str:
    try:
        from studio.models.registry import get_family

        return get_family(key).info.display_name
    except Exception:  # noqa: BLE001 - a name only labels the panel
        return key


# Writing and on-demand views live in their own module to keep this one short.
from studio.engine.compare_report import (  # noqa: E402
    NearestPair,
    PanelDone,
    machine,
    nearest_training_images,
    report_table,
    versions,
    write_report,
)

__all__ = [
    "CompareReport",
    "CompareSettings",
    "NearestPair",
    "PanelDone",
    "PanelResult",
    "check_runs",
    "compare_job",
    "nearest_training_images",
    "report_table",
    "write_report",
]
