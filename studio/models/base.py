"""The contract every model family implements.

A family is an ``nn.Module`` holding its networks, a typed ``Config`` dataclass (saved as
``config.json``), its optimizers, and a ``train_step`` that performs one update and returns
named loss components. The noise process or sampler stays apart from the networks.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from studio.core import atomic
from studio.core.schema import (  # noqa: F401 - declared without torch, re-exported here
    A2B,
    B2A,
    DIRECTIONS,
    KIND_TITLES,
    Capability,
    FamilyInfo,
    ModelConfig,
    setting,
)
from studio.models.base_runs import verify_base_records
from studio.models.capabilities import (  # noqa: F401 - the contract, re-exported
    AnomalyScore,
    CodeFamily,
    CodeSpec,
    InpaintFamily,
    InpaintSettings,
    LatentFamily,
    LatentSpec,
    LikelihoodFamily,
    OdeLatentFamily,
    SamplingOption,
    ScoreBatch,
    ScoreFamily,
    derived_scores,
)
from studio.models.export import ExportContext, ExportNotes, export_state_dict

MODEL_CONFIG = "studio.json"  # the family descriptor; not config.json, which diffusers owns
MODEL_WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class Batch:
    images: Tensor  # B x C x H x W, float in [-1, 1], on the model's device
    labels: Tensor | None = None  # B, long; None for unlabelled data
    captions: tuple[str, ...] | None = None  # B captions ("" = none); None when not carried
    # Paired families (Capability.PAIRED): the input images (folder A), aligned with
    # ``images`` (the targets, folder B) pixel for pixel; None for every other family.
    sources: Tensor | None = None
    # What the family's ``training_features`` computed once from these images (codes of a
    # frozen encoder, say), indexed and flipped with them; None when it computes none.
    features: Tensor | None = None


@dataclass
class StepContext:
    """What the trainer hands each train_step."""

    step: int
    generator: torch.Generator  # on the model's device; seeded from (run seed, step)
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    # Trainer options, applied by GenerativeModel.optimizer_step (studio.engine.schedule):
    lr_scale: float | None = None  # schedule multiplier of the base rates; None = family warm-up
    total_steps: int = 0  # the run's target step count, for a family's own schedule (0: unknown)
    max_grad_norm: float = 0.0  # > 0 overrides the family's own clipping
    accumulate: int = 1  # micro-batches per optimizer step; this call is micro-batch ``micro``
    micro: int = 0
    grad_norms: dict[str, Tensor] = field(default_factory=dict)  # filled by optimizer_step
    # fp16 training: one torch.amp.GradScaler per optimizer name (empty: no loss scaling)
    grad_scalers: dict[str, Any] = field(default_factory=dict)
    # CPU: a studio.models.shards.ShardPool when the trainer splits batches across threads
    # (only families with ``shardable = True`` get one)
    shards: Any = None

    def grad_scale(self, name: str) -> float:
        """The loss scale of optimizer ``name``'s gradient scaler, 1 without one. Penalties
        that take an inner gradient (R1, WGAN-GP) scale it the same way, so fp16 does not
        flush it to zero. Reading it costs a host sync, in fp16 training only."""
        scaler = self.grad_scalers.get(name)
        return float(scaler.get_scale()) if scaler is not None else 1.0

    def randn(self, *shape: int, device: torch.device | None = None) -> Tensor:
        dev = device or self.generator.device
        return torch.randn(*shape, generator=self.generator, device=dev)

    def rand(self, *shape: int, device: torch.device | None = None) -> Tensor:
        dev = device or self.generator.device
        return torch.rand(*shape, generator=self.generator, device=dev)


@dataclass(frozen=True)
class SampleStep:
    """One report from :meth:`GenerativeModel.sample_iter` (a sampler step, say)."""

    step: int
    total: int
    preview: Tensor | None = None  # images in [-1, 1], for a live preview


class GenerativeModel(nn.Module):
    """Base class of every family. Subclasses set ``info`` and ``Config``."""

    info: ClassVar[FamilyInfo]
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    # Keyword conditions ``sample`` accepts, from: label (class index), steps, sampler,
    # guidance, temperature, prompt, negative_prompt, image (the inputs a paired family
    # translates). Anything else is refused with a clear message.
    conditions: ClassVar[tuple[str, ...]] = ()
    # The sampling knobs among ``conditions``, as data the window and the command line build
    # their controls and flags from (studio.models.capabilities.SamplingOption).
    sampling_options: ClassVar[tuple[SamplingOption, ...]] = ()
    # How the family scores how unusual an image is ("find the odd ones out"), the default
    # first; () = those derived from its capabilities (see score_options).
    scores: ClassVar[tuple[AnomalyScore, ...]] = ()
    # Why the explorer cannot open this family, when it has no LATENT capability and there is
    # more to say than "it has no latent space".
    latent_note: ClassVar[str] = ""
    # True when train_step makes exactly one optimizer_step per optimizer, so the trainer may
    # split a batch into micro-batches (gradient accumulation).
    supports_accumulation: ClassVar[bool] = False
    # True when train_step can split its batch across CPU threads (``ctx.shards``,
    # studio.models.shards): every sample is processed on its own (no batch norm).
    shardable: ClassVar[bool] = False
    # Image-to-image families (Capability.PAIRED) whose generator is fully convolutional: they
    # translate an ``image`` condition of any height and width (padding it as their strides
    # need), so ``studio translate`` hands them the image at its own size instead of fitting
    # it to the training resolution.
    translates_any_size: ClassVar[bool] = False
    # The formats ``studio export`` writes for this family (studio.models.export.EXPORT_FORMATS);
    # () = it cannot be exported. Every family's state dict exports as safetensors.
    export_formats: ClassVar[tuple[str, ...]] = ("safetensors",)
    # Single-folder image-to-image families (Capability.SINGLE_FOLDER): whether the image an
    # input was made from is the output to aim for (super-resolution: the original, so
    # held-out outputs are scored against it) or not (a style network: its input is the
    # image itself and there is no right answer; its grids show input | output).
    inputs_have_targets: ClassVar[bool] = True
    # Whether sampling draws randomness from its generator (another seed, another image);
    # False for a family whose output depends on its inputs alone (a style network).
    seeded: ClassVar[bool] = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._base_lrs: dict[str, list[float]] = {}
        self._penalty: Callable[[str], Tensor | None] | None = None
        # Runs this one builds on (studio.models.base_runs): frozen models kept outside this
        # module's children (not trained, not in its state dict), and what identifies them.
        self._bases: dict[str, GenerativeModel] = {}
        self.base_records: dict[str, dict[str, str]] = {}

    # -- base runs (studio.core.schema.run_setting, studio.models.base_runs) -----------------
    def attach_bases(self, bases: dict[str, GenerativeModel]) -> None:
        """Keep the frozen base models (called by ``base_runs.attach_base_runs``)."""
        for base in bases.values():
            base.to(self.device)
        self._bases.update(bases)

    def base(self, name: str) -> GenerativeModel:
        """The frozen model of run setting ``name``."""
        try:
            return self._bases[name]
        except KeyError:
            raise RuntimeError(f"{self.info.display_name} has no base run '{name}'") from None

    def _apply(self, fn: Any, recurse: bool = True) -> GenerativeModel:  # .to(), .cuda(), ...
        super()._apply(fn, recurse)
        for base in getattr(self, "_bases", {}).values():
            base._apply(fn, recurse)
        return self

    def save_run_files(self, folder: Path, context: Any) -> None:
        """Files for a run's ``model/`` folder that need what the run knows and the model does
        not (``context``: a :class:`studio.models.export.ExportContext`, the class names),
        written by the trainer after :meth:`save`. Default: none."""

    def training_features(self, images: Tensor) -> Tensor | None:
        """What the family wants computed once per training image instead of at every step
        (``images``: a chunk of training images in [-1, 1] on the device; the trainer calls
        it on every image and, when it flips, on every flipped image, and hands the rows of
        a batch's images to ``train_step`` as ``batch.features``). None (the default): none.
        """
        del images
        return None

    @classmethod
    def diagnose(cls, history: Sequence[Mapping[str, float]]) -> list[str]:
        """Advice on a run from its logged metrics (``history``: the latest logged points,
        oldest first, as ``metrics.jsonl`` holds them): one sentence per problem, naming what
        to change. Pure Python on a few floats, so a window may call it on its GUI thread.
        Default: none."""
        return []

    @classmethod
    def score_options(cls) -> tuple[AnomalyScore, ...]:
        """The anomaly scores this family offers, the default first: its declared ``scores``,
        else bits/dim from a likelihood or the reconstruction error from a latent space
        (:func:`studio.models.capabilities.derived_scores`). Computed by the family itself
        where it implements :class:`ScoreFamily`, else by :mod:`studio.models.scoring`."""
        return tuple(cls.scores) or derived_scores(cls.info.capabilities)

    # -- training ------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Create ``self.optimizers`` once the model sits on its device."""
        raise NotImplementedError

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        """One update. Returns detached scalar tensors (no host sync is required here)."""
        raise NotImplementedError

    def networks(self) -> dict[str, nn.Module]:
        """The networks train_step runs, for the trainer's speed options (torch.compile,
        channels_last). Default: the direct submodules; override to leave copies (EMA) out."""
        return dict(self.named_children())

    def default_warmup_steps(self) -> int:
        """The family's own learning-rate warm-up, used unless the trainer sets one."""
        return 0

    @property
    def output_scale(self) -> int:
        """Image-to-image families: how many times larger (each side) an output is than its
        ``image`` condition (super-resolution: 2 or 4)."""
        return self.scale_for(self.config)

    @classmethod
    def scale_for(cls, config: ModelConfig) -> int:
        """``output_scale`` of a model of ``config``, without building it (the Canvas lists
        the runs that enlarge images from their config.json). Default: 1."""
        del config
        return 1

    def paired_inputs(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Single-folder image-to-image families (``Capability.SINGLE_FOLDER``): the inputs
        made from target ``images`` (N x C x H x W in [-1, 1]; a degraded copy, possibly
        ``output_scale`` times smaller), all randomness from ``generator``."""
        raise NotImplementedError(f"{self.info.display_name} makes no inputs from its images")

    def paired_jitter(self) -> int:
        """Paired families (``Capability.PAIRED``): how many pixels the trainer enlarges each
        training pair by before cropping it back to the resolution at a random place, the
        same crop (and flip) for both images (pix2pix's random jitter). 0 = no crop."""
        return 0

    def example_losses(self, batch: Batch, generator: torch.Generator) -> Tensor | None:
        """One training loss per example (a tensor of ``len(batch.images)``), differentiable
        with respect to every trained weight: what continual learning's elastic weight
        consolidation squares the gradients of (its diagonal Fisher estimate). Called in eval
        mode, outside any train step; ``generator`` is a CPU generator for the noise the loss
        draws. None = the family has none, and EWC is not offered for it.

        Default: the negative log-likelihood in bits/dim where the family has a likelihood
        whose ``bits_per_dim`` carries gradients; None otherwise."""
        if Capability.LIKELIHOOD not in self.info.capabilities:
            return None
        with torch.enable_grad():
            bpd = self.bits_per_dim(batch.images)  # type: ignore[attr-defined]
        return bpd if isinstance(bpd, Tensor) and bpd.requires_grad else None

    def set_penalty(self, penalty: Callable[[str], Tensor | None] | None) -> None:
        """A term added to the loss of optimizer ``name`` before every backward in
        :meth:`optimizer_step` (``penalty(name)``; None adds nothing): continual learning's
        EWC (studio.engine.continual). ``set_penalty(None)`` removes it."""
        self._penalty = penalty

    def remember_base_lrs(self) -> None:
        """Record every param group's configured rate: schedules scale these, statelessly."""
        self._base_lrs = {
            name: [float(g["lr"]) for g in opt.param_groups]
            for name, opt in self.optimizers.items()
        }

    def optimizer_step(
        self, name: str, loss: Tensor, ctx: StepContext, clip: float = 0.0
    ) -> Tensor | None:
        """Backward ``loss`` and step optimizer ``name`` as the trainer's options ask.

        Gradients are zeroed on the first micro-batch and accumulate ``loss / ctx.accumulate``;
        on the last one the rate is set (base rate x ``ctx.lr_scale``, or x the family's
        warm-up when that is None), gradients are clipped to ``ctx.max_grad_norm`` (or
        ``clip``, the family's default; 0 = none) and the optimizer steps. Returns the gradient
        norm before clipping (a tensor: no host sync), or None after a micro-batch that did not
        step.

        With a gradient scaler for ``name`` in ``ctx.grad_scalers`` (fp16 training) the loss is
        scaled before backward and the gradients unscaled before clipping; a step whose
        gradients overflowed is skipped and the scale lowered (``torch.amp.GradScaler``)."""
        opt = self.optimizers[name]
        k = max(1, int(ctx.accumulate))
        if self._penalty is not None and (extra := self._penalty(name)) is not None:
            loss = loss + extra  # before the division: the micro-batches add up to one penalty
        if ctx.micro == 0:
            opt.zero_grad(set_to_none=True)
        scaler = ctx.grad_scalers.get(name)
        part = loss / k if k > 1 else loss
        (scaler.scale(part) if scaler is not None else part).backward()
        if ctx.micro < k - 1:
            return None
        if name not in self._base_lrs:
            self.remember_base_lrs()
        scale = ctx.lr_scale
        if scale is None:
            scale = linear_warmup(ctx.step, self.default_warmup_steps())
        for group, base in zip(opt.param_groups, self._base_lrs[name]):
            if isinstance(group["lr"], Tensor):
                group["lr"].fill_(base * scale)
            else:
                group["lr"] = base * scale
        if scaler is not None:
            scaler.unscale_(opt)  # true gradients for the norm and the clipping
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        max_norm = ctx.max_grad_norm if ctx.max_grad_norm > 0 else clip
        if max_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        elif params:
            norm = torch.linalg.vector_norm(
                torch.stack(torch._foreach_norm([p.grad for p in params]))
            )
        else:
            norm = torch.zeros((), device=loss.device)
        if scaler is not None:
            scaler.step(opt)  # skipped when the unscaled gradients hold inf or NaN
            scaler.update()
        else:
            opt.step()
        ctx.grad_norms[name] = norm.detach()
        return norm.detach()

    def prepare_for_data(self, images: int) -> None:
        """Told by the trainer, before training, how many images the training folder holds,
        so a family may choose what depends on it (a GAN's "auto" augmentation). Called
        again on resume with the same folder. Default: nothing."""
        del images

    def training_notes(self) -> list[str]:
        """Lines the trainer logs when training starts: what the family chose and why (after
        :meth:`prepare_for_data`). Default: none."""
        return []

    def training_phase(self) -> str:
        """A few words on where a curriculum stands after the latest step (a GAN's
        progressive growing: "growing: fading 16 px in, alpha 0.40"), shown in the training
        status line; "" when there is none. Default: none."""
        return ""

    def memory_probe_step(self) -> int:
        """A step whose ``train_step`` needs the most memory, for the automatic batch size
        (a growing GAN's full size comes late). Default: 0."""
        return 0

    def extra_state(self) -> dict[str, Any]:
        """JSON-able trainer state a family keeps between steps (saved with checkpoints)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        del state

    def extra_images(self) -> dict[str, Tensor]:
        """Named image batches (N x C x H x W in [-1, 1], C 1 or 3) that show what the model
        has learned beyond its samples (an RBM's filters, say). The trainer saves each as a
        grid beside the sample grids whenever it samples, ``samples/<name>.png`` (the latest
        kept); names are lower-case words. Default: none."""
        return {}

    # -- sampling ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def check_conditions(self, conditions: dict[str, Any]) -> None:
        unknown = sorted(set(conditions) - set(self.conditions))
        if unknown:
            allowed = ", ".join(self.conditions) or "none"
            raise ValueError(
                f"{self.info.display_name} does not take {', '.join(unknown)} (it takes: {allowed})"
            )

    def sample(self, n: int, generator: torch.Generator, **conditions: Any) -> Tensor:
        """``n`` images in [-1, 1]. ``generator`` is a CPU generator: same seed, same images."""
        gen = self.sample_iter(n, generator, **conditions)
        while True:
            try:
                next(gen)
            except StopIteration as done:
                return done.value

    def sample_iter(
        self, n: int, generator: torch.Generator, **conditions: Any
    ) -> Generator[SampleStep, None, Tensor]:
        """Like :meth:`sample` but yields between steps, so sampling can show progress and be
        cancelled. One-shot samplers yield once."""
        raise NotImplementedError
        yield  # pragma: no cover

    # -- persistence: safetensors and JSON only -----------------------------------------------
    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu().clone() for k, v in self.state_dict().items()}
        with atomic.atomic_path(folder / MODEL_WEIGHTS) as tmp:
            save_file(tensors, str(tmp), metadata={"family": self.info.key})
        atomic.write_json(folder / MODEL_CONFIG, self.describe())

    def describe(self) -> dict[str, Any]:
        from studio import __version__

        out = {
            "family": self.info.key,
            "config": self.config.to_dict(),
            "studio_version": __version__,
            "torch_version": torch.__version__,
        }
        if self.base_records:
            out["base_runs"] = self.base_records
        return out

    def export_files(self, folder: Path, fmt: str, context: ExportContext) -> ExportNotes:
        """Write the ``fmt`` export (one of ``export_formats``) into the empty ``folder``: the
        weights samples come from (EMA where the family keeps one) and the settings to rebuild
        them. The default writes the state dict and settings (safetensors)."""
        if fmt != "safetensors" or fmt not in self.export_formats:
            raise ValueError(f"{self.info.display_name} does not export as {fmt}")
        return export_state_dict(self, folder, context)

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> GenerativeModel:
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = json.loads((folder / MODEL_CONFIG).read_text(encoding="utf-8"))
        model = cls(cls.Config.from_saved(meta["config"]))
        verify_base_records(model, meta.get("base_runs"), str(folder / MODEL_CONFIG))
        state = load_file(str(folder / MODEL_WEIGHTS), device="cpu")
        model.load_state_dict(state)
        return model.to(device)


# -- small helpers shared by families ------------------------------------------------------


def linear_warmup(step: int, warmup_steps: int) -> float:
    """The learning-rate factor at ``step`` of a linear warm-up: a function of the step alone,
    so a resumed run continues exactly."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def images_to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] float images (B x C x H x W) to uint8 (B x H x W x C) on the CPU."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu()


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put modules in eval mode for the block and restore each one's previous mode."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def any_size_inputs(model: GenerativeModel, image: Any, n: int, missing: str) -> Tensor:
    """The ``image`` condition of an image-to-image family that takes any size (``m x C x h x
    w`` in [-1, 1], or one ``C x h x w``) as ``n`` inputs on the model's device, input
    ``i % m`` for output ``i``. ``missing``: the ValueError's text when there is none (what
    the family does and the command that gives it an image)."""
    if image is None:
        raise ValueError(missing)
    x = torch.as_tensor(image)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    channels = model.config.channels
    if x.dim() != 4 or x.shape[1] != channels or len(x) == 0 or min(x.shape[-2:]) < 2:
        raise ValueError(
            f"the input must be images of {channels} channels and at least 2 x 2 px, "
            f"not {tuple(x.shape)}"
        )
    return x[torch.arange(n) % len(x)].to(model.device).float()


def class_labels(n: int, num_classes: int, label: int | None, device: torch.device) -> Tensor:
    """Labels for ``n`` samples: all ``label``, or cycling through every class when None."""
    if label is None:
        return torch.arange(n, device=device) % max(1, num_classes)
    if not 0 <= label < num_classes:
        raise ValueError(f"class {label} is out of range: this model has {num_classes} classes")
    return torch.full((n,), int(label), device=device, dtype=torch.long)
