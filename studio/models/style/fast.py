"""A feed-forward style network (Johnson, Alahi and Fei-Fei 2016): an image-transformation
network trained on ONE style image over a folder of content images, so that afterwards it
stylises any image in a single pass.

The network: a 9x9 convolution, two stride-2 convolutions down, residual blocks, two
nearest-neighbour upsamplings each followed by a 3x3 convolution (no transposed convolutions,
which leave checkerboards), a 9x9 convolution out; instance norm throughout (Ulyanov et al.
2016) and reflection padding, so the borders do not darken. It is fully convolutional: it
stylises an image of any size (padded by reflection to a multiple of 4, cropped back).

The loss is perceptual, read through a VGG-19 (:mod:`studio.models.vgg`) whose weights come
from a file the user chose (the one the Canvas's *Stylize…* uses), read weights-only by the
engine and handed over through :mod:`studio.models.file_inputs`:

* content: the mean squared difference of ``relu2_2`` features of output and content image;
* style: the mean squared difference of the output's Gram matrices and the style image's at
  ``relu1_2``, ``relu2_2``, ``relu3_4``, ``relu4_4`` (the style image resized so its longer
  side is the training resolution times ``style_scale``), summed;
* total variation of the output, against speckle.

It trains on one folder (``Capability.SINGLE_FOLDER``): each image's input is the image
itself (:meth:`FastStyle.paired_inputs`), and there is no target to score an output against,
so the held-out grid shows input | output rows (``inputs_have_targets`` is False). The VGG and
the style's Gram matrices are loaded before training (:meth:`FastStyle.prepare_for_data`), kept
outside the family's modules (not saved: the run's weights are the transformation network's
alone) and not needed to stylise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.core.schema import FileInput, file_setting
from studio.core.stylize import WHERE_TO_GET
from studio.models.base import (
    Batch,
    Capability,
    FamilyInfo,
    GenerativeModel,
    ModelConfig,
    SampleStep,
    StepContext,
    any_size_inputs,
    eval_mode,
    setting,
)
from studio.models.configs import learning_rate, network_width
from studio.models.file_inputs import read_file_input
from studio.models.vgg import gram, tv_loss

CONTENT_LAYER = "relu2_2"
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_4", "relu4_4")
IMAGE_PATTERNS = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)"
VGG_FILE = FileInput(
    kind="vgg19",
    what="a VGG-19 weights file",
    patterns="VGG-19 weights (*.pth *.safetensors);;All files (*)",
    remember="stylize/vgg",
    where=WHERE_TO_GET,
)
STYLE_FILE = FileInput(kind="image", what="a style image", patterns=IMAGE_PATTERNS)


@dataclass
class FastStyleConfig(ModelConfig):
    style_image: str = file_setting(
        label="Style image",
        accepts=STYLE_FILE,
        help="the painting (or any picture) whose style the network learns",
    )
    vgg_weights: str = file_setting(
        label="VGG-19 file",
        accepts=VGG_FILE,
        help="torchvision's VGG-19 weights (vgg19-dcbb9e9d.pth) or a .safetensors copy: the "
        "losses are measured through it. " + WHERE_TO_GET,
    )
    content_weight: float = setting(
        1.0,
        label="Content weight",
        help="how much the output keeps the content image's features (relu2_2)",
        minimum=1e-3,
        maximum=1e4,
        main=True,
    )
    style_weight: float = setting(
        1e5,
        label="Style weight",
        help="how strongly the output takes the style's Gram matrices; raise it for more "
        "style, lower it to keep more of the picture",
        minimum=1.0,
        maximum=1e10,
        main=True,
    )
    tv_weight: float = setting(
        1.0,
        label="TV weight",
        help="total variation: smooths speckle; 0 = off",
        minimum=0.0,
        maximum=100.0,
    )
    style_scale: float = setting(
        1.0,
        label="Style scale",
        help="the style image is resized to the training resolution times this (longer "
        "side): larger gives larger brush strokes",
        minimum=0.25,
        maximum=4.0,
    )
    width: int = network_width(32, help="channels of the first convolution", main=True)
    residual_blocks: int = setting(
        5, label="Residual blocks", help="blocks at a quarter of the size", minimum=1, maximum=12
    )
    lr: float = learning_rate(1e-3)


# -- the image-transformation network ----------------------------------------------------------


def conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Reflection padding and a convolution (the padding keeps the size at stride 1)."""
    return nn.Sequential(nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride))


def norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=True)


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(channels, channels, 3),
            norm(channels),
            nn.ReLU(),
            conv(channels, channels, 3),
            norm(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution (no checkerboard)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = conv(cin, cout, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TransformNet(nn.Module):
    """``N x C x H x W`` in [-1, 1] (H and W multiples of 4) -> the same size, unclamped."""

    def __init__(self, channels: int, width: int, blocks: int) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            conv(channels, w, 9), norm(w), nn.ReLU(),
            conv(w, 2 * w, 3, 2), norm(2 * w), nn.ReLU(),
            conv(2 * w, 4 * w, 3, 2), norm(4 * w), nn.ReLU(),
            *[Residual(4 * w) for _ in range(blocks)],
            Upsample(4 * w, 2 * w), norm(2 * w), nn.ReLU(),
            Upsample(2 * w, w), norm(w), nn.ReLU(),
            conv(w, channels, 9),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def padded_forward(net: nn.Module, x: Tensor) -> Tensor:
    """``net`` on ``x`` of any size: padded (reflecting, or repeating where the image is too
    small to reflect) to a multiple of 4 and at least 8 px (what the 9x9 padding at full size
    and the 3x3 at a quarter need), cropped back."""
    h, w = x.shape[-2:]
    ph, pw = max(8, h + -h % 4) - h, max(8, w + -w % 4) - w
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return net(x)[..., :h, :w]


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], what the VGG reads."""
    return (x.float() + 1) * 0.5


# -- the family --------------------------------------------------------------------------------


class FastStyle(GenerativeModel):
    info = FamilyInfo(
        key="style.fast",
        kind="style",
        display_name="Fast style network",
        summary="Paints any image in the style of one picture, in a single pass: trained on "
        "one style image over your folder of photos (needs the VGG-19 file).",
        capabilities=Capability.TRAIN
        | Capability.SAMPLE
        | Capability.PAIRED
        | Capability.SINGLE_FOLDER,
        loss_names=("loss", "loss_content", "loss_style", "loss_tv", "grad_norm"),
        about=(
            "A feed-forward style network (Johnson et al. 2016): where the Canvas's Stylize… "
            "optimises one picture for minutes, this trains a network once on ONE style "
            "image (the Style image setting) over a folder of your own pictures, and then "
            "paints any image in that style in a single pass, at any size. The network "
            "downsamples twice, runs residual blocks, and upsamples (nearest neighbour and a "
            "convolution, so no checkerboards), with instance norm throughout. Its losses are "
            "measured through a VGG-19 (the same file Stylize… uses; choose it once, the "
            "window remembers it; Studio downloads nothing): the content loss keeps the "
            "picture's relu2_2 features, the style loss matches the style image's Gram "
            "matrices at four layers, and a total-variation term smooths speckle. The style "
            "weight is the main knob: raise it for more paint, lower it to keep more of the "
            "picture; Style scale sets the size of the brush strokes. Sample grids show "
            "held-out pictures as input | output rows and `samples/style.png` the style "
            "image as trained; the plot shows the three losses. Apply a run on the Canvas "
            "(Image to image) or with `studio translate --run RUN --image IMG --out OUT`; the "
            "VGG file is needed only to train."
        ),
    )
    Config = FastStyleConfig
    config: FastStyleConfig  # type: ignore[assignment]
    conditions = ("image",)
    translates_any_size = True
    inputs_have_targets = False
    seeded = False
    latent_note = "A style network has no latent space: it repaints an input image."

    def __init__(self, config: FastStyleConfig) -> None:
        super().__init__(config)
        self.net = TransformNet(config.channels, config.width, config.residual_blocks)
        # Loaded for training only (prepare_for_data), kept outside the modules: not saved.
        self._frozen: dict[str, Any] = {}

    def _apply(self, fn: Any, recurse: bool = True) -> FastStyle:  # .to() moves the VGG too
        super()._apply(fn, recurse)
        frozen = getattr(self, "_frozen", {})
        if "vgg" in frozen:
            frozen["vgg"]._apply(fn, recurse)
        if "grams" in frozen:
            frozen["grams"] = {k: fn(v) for k, v in frozen["grams"].items()}
        return self

    # -- what training reads besides the images -----------------------------------------------
    def prepare_for_data(self, images: int) -> None:
        """Load the VGG-19 and the style image, and compute the style's Gram matrices (before
        the run's folder is written: a missing file stops nothing but this run)."""
        del images
        c = self.config
        if c.channels != 3:
            raise ValueError("the style network's losses read colour images: channels must be 3")
        style = read_file_input("image", c.style_image, "Style image", "style_image")
        vgg = read_file_input("vgg19", c.vgg_weights, "VGG-19 file", "vgg_weights")
        vgg = vgg.to(self.device).eval().requires_grad_(False)
        side = max(16, round(c.resolution * c.style_scale))
        h, w = style.shape[-2:]
        size = (max(1, round(h * side / max(h, w))), max(1, round(w * side / max(h, w))))
        style = F.interpolate(
            style[None].to(self.device), size=size, mode="bilinear", antialias=True
        ).clamp(0, 1)
        with torch.no_grad():
            feats = vgg(style, list(STYLE_LAYERS))
            grams = {k: gram(v) for k, v in feats.items()}
        self._frozen = {"vgg": vgg, "grams": grams, "style": style[0] * 2 - 1}

    def training_notes(self) -> list[str]:
        c = self.config
        return [f"style image {c.style_image}; losses through the VGG-19 file {c.vgg_weights}"]

    def extra_images(self) -> dict[str, Tensor]:
        style = self._frozen.get("style")
        return {} if style is None else {"style": style[None].float().cpu()}

    def paired_inputs(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """The content image is the input: nothing is made from it."""
        del generator
        return images

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        self.optimizers = {"net": torch.optim.Adam(self.net.parameters(), lr=self.config.lr)}
        return self.optimizers

    def losses(self, content: Tensor, output: Tensor) -> dict[str, Tensor]:
        """The weighted perceptual loss of ``output`` for ``content`` (both in [-1, 1]) and its
        parts (content, style, total variation, unweighted)."""
        if "vgg" not in self._frozen:
            raise RuntimeError("the style network's VGG is not loaded (prepare_for_data)")
        c, vgg, grams = self.config, self._frozen["vgg"], self._frozen["grams"]
        y = to_unit(output)
        feats = vgg(y, [CONTENT_LAYER, *STYLE_LAYERS])
        with torch.no_grad():
            target = vgg(to_unit(content), [CONTENT_LAYER])[CONTENT_LAYER]
        loss_content = F.mse_loss(feats[CONTENT_LAYER], target)
        loss_style = sum(
            (F.mse_loss(gram(feats[k]), grams[k].expand(len(y), -1, -1)) for k in STYLE_LAYERS),
            y.new_zeros(()),
        )
        loss_tv = tv_loss(y)
        loss = c.content_weight * loss_content + c.style_weight * loss_style + c.tv_weight * loss_tv
        return {
            "loss": loss,
            "loss_content": loss_content,
            "loss_style": loss_style,
            "loss_tv": loss_tv,
        }

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        content = batch.images
        with ctx.autocast():
            out = self.net(content)
        parts = self.losses(content, out.float())
        grad_norm = self.optimizer_step("net", parts["loss"], ctx)
        result = {k: v.detach() for k, v in parts.items()}
        if grad_norm is not None:
            result["grad_norm"] = grad_norm
        return result

    # -- stylising ---------------------------------------------------------------------------
    def sample_iter(self, n: int, generator: torch.Generator, **conditions: Any):
        """Stylise the ``image`` condition (``m x C x h x w`` in [-1, 1], or one ``C x h x w``,
        any size) into ``n`` outputs of the same size: input ``i % m`` for output ``i``. The
        network draws no noise: every seed gives the same image."""
        del generator
        self.check_conditions(conditions)
        x = any_size_inputs(
            self,
            conditions.get("image"),
            n,
            f"{self.info.display_name} repaints images: give it an input image "
            "(studio translate --run RUN --image IMG --out OUT)",
        )
        with torch.no_grad(), eval_mode(self.net):
            out = padded_forward(self.net, x).float().clamp(-1, 1)
        yield SampleStep(1, 1, out)
        return out
