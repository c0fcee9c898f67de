"""Builders for test image folders. Pure Pillow and numpy, fast enough to call per test.

Import as ``from helpers import make_image_zoo, make_tiny_dataset`` (pytest puts ``tests/`` on
``sys.path`` because the folder has no ``__init__.py``).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ZOO_MAX_PIXELS = 30_000  # scan the zoo with this: "big.png" (200x200) is then over the limit


def _split_image(mode: str, size: tuple[int, int], left: Any, right: Any) -> Image.Image:
    """An image whose left half is ``left`` and right half ``right``."""
    img = Image.new(mode, size, left)
    img.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return img


def write_png_header(path: Path, width: int, height: int) -> Path:
    """Write a tiny PNG that claims ``width x height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    data += chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def make_image_zoo(folder: Path) -> dict[str, Any]:
    """Fill ``folder`` with good images in every mode and with bad files.

    Returns a dict with:
      ``good``: relpath -> (width, height) after EXIF rotation;
      ``modes``: relpath -> the Pillow mode the file opens in;
      ``bad``: relpath -> the exact reason it must be skipped with (scan with
      ``max_pixels=ZOO_MAX_PIXELS``);
      ``captions``: image relpath -> caption text; ``hidden``: files that must be ignored;
      ``max_pixels``: ``ZOO_MAX_PIXELS``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    good: dict[str, tuple[int, int]] = {}
    modes: dict[str, str] = {}

    def keep(rel: str, img: Image.Image, mode: str | None = None, **save: Any) -> None:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, **save)
        good[rel] = img.size
        modes[rel] = mode or img.mode

    grad = np.zeros((8, 12, 3), np.uint8)
    grad[..., 0] = np.arange(12, dtype=np.uint8)[None, :] * 20
    grad[..., 1] = np.arange(8, dtype=np.uint8)[:, None] * 30
    grad[0, 0] = (10, 20, 30)
    keep("rgb.png", Image.fromarray(grad))
    keep("photo.jpg", Image.new("RGB", (16, 16), (200, 100, 50)), quality=95)
    keep("gray.png", Image.new("L", (10, 10), 77))
    keep("bilevel.png", _split_image("1", (10, 10), 0, 1))
    keep("palette.png", Image.new("RGB", (10, 10), (0, 128, 255)).quantize(colors=4))

    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    pal.paste(1, (5, 0, 10, 10))  # left half index 0 (transparent), right half blue
    keep("palette_alpha.png", pal, transparency=0)

    keep("gray_alpha.png", _split_image("LA", (10, 10), (100, 0), (100, 255)))
    rgba = _split_image("RGBA", (10, 10), (255, 0, 0, 0), (0, 255, 0, 255))
    keep("rgba.png", rgba)
    keep("cmyk.jpg", Image.new("CMYK", (16, 16), (0, 255, 255, 0)), quality=95)
    keep("cmyk.tif", Image.new("CMYK", (10, 10), (255, 0, 0, 0)))

    deep = Image.fromarray(np.array([[65535, 32768], [0, 256]], dtype=np.uint16))
    keep("deep16.png", deep.convert("I;16") if deep.mode != "I;16" else deep, mode="I;16")

    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = folder / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    good["animated.gif"], modes["animated.gif"] = (10, 10), "P"

    # Stored 20 wide x 10 tall, left half red; EXIF orientation 6 means "rotate 90 degrees
    # clockwise to display", so it shows 10 x 20 with the red half on top.
    rotated = _split_image("RGB", (20, 10), (255, 0, 0), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(folder / "rotated.jpg", exif=exif.tobytes(), quality=95)
    good["rotated.jpg"], modes["rotated.jpg"] = (10, 20), "RGB"

    keep("pic.webp", Image.new("RGB", (9, 7), (30, 60, 90)), lossless=True)
    keep("pic.bmp", Image.new("RGB", (7, 9), (90, 60, 30)))
    keep("sub/inner.png", Image.new("RGB", (6, 6), (1, 2, 3)))
    keep("ünïcödé 画像.png", Image.new("RGB", (5, 5), (4, 5, 6)))

    captions = {"rgb.png": "a colourful gradient", "sub/inner.png": "tiny dark square"}
    for rel, text in captions.items():
        (folder / rel).with_suffix(".txt").write_text(text + "\n", encoding="utf-8")

    bad: dict[str, str] = {}
    rng = np.random.default_rng(1)
    (folder / "corrupt.png").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    bad["corrupt.png"] = "unreadable"
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, "PNG")
    (folder / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 6 // 10])
    bad["truncated.png"] = "truncated"
    (folder / "empty.jpg").write_bytes(b"")
    bad["empty.jpg"] = "zero bytes"
    (folder / "notes.md").write_text("# not a picture\n", encoding="utf-8")
    bad["notes.md"] = "not an image"
    (folder / "orphan.txt").write_text("a caption of nothing\n", encoding="utf-8")
    bad["orphan.txt"] = "not an image"
    Image.new("RGB", (200, 200), (5, 5, 5)).save(folder / "big.png")
    bad["big.png"] = "over the pixel limit"

    (folder / ".DS_Store").write_bytes(b"\x00\x01junk")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "broken.png").write_bytes(b"junk")
    hidden = [".DS_Store", ".cache/broken.png"]

    return {
        "root": folder,
        "good": good,
        "modes": modes,
        "bad": bad,
        "captions": captions,
        "hidden": hidden,
        "max_pixels": ZOO_MAX_PIXELS,
    }


_TINY_COLOURS = [(230, 60, 50), (40, 90, 220), (40, 180, 80), (240, 200, 40), (150, 60, 200)]


def tiny_pattern(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size x size x 3`` uint8 image whose pattern and colour identify ``label``."""
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(2, size // 4)
    kind = label % 4
    if kind == 0:
        mask = (yy // (period // 2 or 1)) % 2 == 0  # horizontal stripes
    elif kind == 1:
        mask = (xx // (period // 2 or 1)) % 2 == 0  # vertical stripes
    elif kind == 2:
        mask = ((yy // period) + (xx // period)) % 2 == 0  # checkerboard
    else:
        mask = ((xx + yy) // (period // 2 or 1)) % 2 == 0  # diagonal stripes
    colour = np.array(_TINY_COLOURS[label % len(_TINY_COLOURS)], np.float64)
    img = np.where(mask[..., None], colour, colour * 0.25)
    img += rng.normal(0.0, 8.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_tiny_dataset(
    folder: Path, n: int = 32, size: int = 16, classes: int = 2, seed: int = 0
) -> Path:
    """Write ``n`` labelled PNGs (``class_0/``, ``class_1/``, ...) into ``folder``; return it.

    Classes alternate, so every class gets ``n // classes`` images or one more. Deterministic.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for k in range(classes):
        (folder / f"class_{k}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        label = i % classes
        img = Image.fromarray(tiny_pattern(label, size, rng))
        img.save(folder / f"class_{label}" / f"{i:04d}.png")
    return folder


def make_tiny_pairs(
    folder: Path, n: int = 16, size: int = 16, side_by_side: bool = False, seed: int = 0
) -> tuple[Path, Path | None]:
    """Paired images for image-to-image families: B is a :func:`tiny_pattern`, A its colour
    negative (255 - B). Written as ``folder/a`` and ``folder/b`` (same names; returns both),
    or as one side-by-side folder ``folder/ab`` (A left, B right; returns it and None)."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    if side_by_side:
        (folder / "ab").mkdir(parents=True, exist_ok=True)
    else:
        (folder / "a").mkdir(parents=True, exist_ok=True)
        (folder / "b").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        b = tiny_pattern(i % 4, size, rng)
        a = 255 - b
        if side_by_side:
            Image.fromarray(np.concatenate([a, b], axis=1)).save(folder / "ab" / f"{i:04d}.png")
        else:
            Image.fromarray(a).save(folder / "a" / f"{i:04d}.png")
            Image.fromarray(b).save(folder / "b" / f"{i:04d}.png")
    if side_by_side:
        return folder / "ab", None
    return folder / "a", folder / "b"


def make_tiny_unpaired(
    folder: Path, n_a: int = 12, n_b: int = 10, size: int = 16, seed: int = 0
) -> tuple[Path, Path]:
    """Two unpaired folders for families that learn from two collections: ``folder/a`` holds
    ``n_a`` :func:`tiny_pattern` images, ``folder/b`` ``n_b`` colour negatives (255 - x) of
    other draws, under other names; nothing pairs them. Returns both folders."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    (folder / "a").mkdir(parents=True, exist_ok=True)
    (folder / "b").mkdir(parents=True, exist_ok=True)
    for i in range(n_a):
        Image.fromarray(tiny_pattern(i % 4, size, rng)).save(folder / "a" / f"a{i:04d}.png")
    for i in range(n_b):
        img = 255 - tiny_pattern((i + 1) % 4, size, rng)
        Image.fromarray(img).save(folder / "b" / f"b{i:04d}.png")
    return folder / "a", folder / "b"


# -- tiny training runs ----------------------------------------------------------------------------

#: The smallest settings that still exercise each registered model's code paths.
TINY_MODELS: dict[str, dict[str, Any]] = {
    "gan.dcgan": {"latent_dim": 8, "width": 8},
    "gan.cgan": {"latent_dim": 8, "width": 8},
    "gan.wgan_gp": {"latent_dim": 8, "width": 8, "n_critic": 2},
    "gan.stylegan": {
        "latent_dim": 8,
        "w_dim": 8,
        "mapping_layers": 2,
        "width": 8,
        "r1_every": 2,
        "conditional": True,
    },
    "hybrid.vaegan": {"latent_dim": 4, "width": 8, "conditional": True},
    "vae.conv": {"latent_dim": 4, "width": 8},
    "vae.beta": {"latent_dim": 4, "width": 8, "kl_warmup_steps": 50},
    "vae.cvae": {"latent_dim": 4, "width": 8},
    "vae.vqvae": {
        "codebook_size": 16,
        "embedding_dim": 4,
        "downsample": 2,
        "width": 8,
        "restart_after": 20,
    },
    "ae.kl": {"width": 8, "downsample": 4, "disc_weight": 0.1, "disc_start": 1},
    "vae.hierarchical": {"levels": 2, "latent_channels": 2, "width": 8, "kl_warmup_steps": 10},
    "flow.nice": {"couplings": 4, "hidden": 16, "warmup_steps": 10},
    "flow.realnvp": {"scales": 2, "couplings": 2, "hidden": 16, "warmup_steps": 10},
    "flow.glow": {"levels": 2, "steps": 2, "hidden": 16, "warmup_steps": 10},
    "flow.flowpp": {
        "scales": 2,
        "couplings": 1,
        "hidden": 8,
        "blocks": 1,
        "components": 4,
        "heads": 2,
        "dequant_couplings": 1,
        "warmup_steps": 10,
    },
    "diffusion.ddpm": {"width": 8, "layers_per_block": 1, "attention_res": 4},
    "diffusion.text": {
        "width": 8,
        "layers_per_block": 1,
        "attention_res": 4,
        "text_dim": 16,
        "text_layers": 1,
        "text_heads": 2,
    },
    "i2i.pix2pix": {"width": 8},
    "i2i.cyclegan": {"width": 8, "blocks": 1, "dropout": 0.5},
    # No warm-up and a large rate: its last layer starts at zero (a fresh model returns
    # bicubic whatever the noise), so two tiny steps must move it for seeds to differ.
    "i2i.superres": {
        "width": 8,
        "layers_per_block": 1,
        "num_train_timesteps": 50,
        "warmup_steps": 0,
        "lr": 1e-2,
    },
    "ar.pixelcnn": {"width": 8, "layers": 2, "mixtures": 2, "warmup_steps": 0},
    "ebm.rbm": {"hidden": 16},
}

#: What turns a diffusion family's tiny config into its tiny diffusion transformer.
TINY_DIT: dict[str, Any] = {"backbone": "dit", "dit_layers": 1, "dit_width": 32, "patch_size": 4}


class _WithTinyBaseRun(Mapping[str, Any]):
    """Tiny settings whose ``setting`` (``base_run`` by default) is a tiny VQ-VAE run, trained
    (two steps, 16 px) the first time the settings are read and kept for the test process."""

    def __init__(self, settings: dict[str, Any], setting: str = "base_run") -> None:
        self._settings = settings
        self._setting = setting
        self._full: dict[str, Any] | None = None

    def _resolve(self) -> dict[str, Any]:
        if self._full is None:
            self._full = {**self._settings, self._setting: str(tiny_vqvae_run())}
        return self._full

    def __getitem__(self, key: str) -> Any:
        return self._resolve()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolve())

    def __len__(self) -> int:
        return len(self._resolve())


_TINY_VQVAE: list[Path] = []


def tiny_vqvae_run() -> Path:
    """A tiny VQ-VAE run (16 px, the contract's settings), trained once per test process
    under a temporary folder removed at exit."""
    if not _TINY_VQVAE:
        import atexit
        import shutil
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="studio-tiny-vqvae-"))
        atexit.register(shutil.rmtree, root, True)
        data = make_tiny_dataset(root / "data", n=16, size=16, classes=2)
        _TINY_VQVAE.append(train_tiny_run(root / "vqvae", "vae.vqvae", data))
    return _TINY_VQVAE[0]


TINY_MODELS["ar.vq_prior"] = _WithTinyBaseRun(  # type: ignore[assignment]
    {"width": 8, "layers": 2, "heads": 2, "warmup_steps": 0}
)
# Latent diffusion on the tiny VQ-VAE's 4 x 8 x 8 grid (16 px images, downsampling 2).
TINY_MODELS["diffusion.latent"] = _WithTinyBaseRun(  # type: ignore[assignment]
    {"width": 8, "layers_per_block": 1, "attention_res": 4}, "autoencoder"
)
TINY_MODELS["diffusion.latent_text"] = _WithTinyBaseRun(  # type: ignore[assignment]
    {
        "width": 8,
        "layers_per_block": 1,
        "attention_res": 4,
        "text_dim": 16,
        "text_layers": 1,
        "text_heads": 2,
    },
    "autoencoder",
)


def tiny_model(key: str, resolution: int = 16) -> Any:
    """``key``'s tiny model (:data:`TINY_MODELS`) built after ``torch.manual_seed(0)``, with
    its optimizers and their base rates, ready for train steps."""
    import torch

    from studio.models.registry import get_family

    family = get_family(key)
    torch.manual_seed(0)
    model = family(family.Config.from_dict({**TINY_MODELS[key], "resolution": resolution}))
    model.configure_optimizers()
    model.remember_base_lrs()
    return model


def tiny_train_config(key: str, data_dir: Path, model: dict | None = None, **overrides: Any):
    """A two-step CPU training config for ``key`` on a 16 px test folder (overridable)."""
    from studio.engine.runs import TrainConfig

    if model is None:
        assert key in TINY_MODELS, f"add a tiny config for {key} to tests/helpers.py"
        model = TINY_MODELS[key]
    settings: dict[str, Any] = dict(
        family=key, data=str(data_dir), resolution=16, batch_size=4, steps=2, seed=1,
        sample_every=1000, checkpoint_every=1000, log_every=1, samples=4,
        holdout_fraction=0.2, device="cpu", model=dict(model),
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


def train_tiny_run(
    run_dir: Path, key: str, data_dir: Path, model: dict | None = None, **overrides: Any
) -> Path:
    """Train :func:`tiny_train_config` into ``run_dir`` through the real job; return the run."""
    from studio.core.jobs import CancelToken, run_sync
    from studio.engine.train import train_job

    out = run_sync(
        train_job(run_dir, CancelToken(), tiny_train_config(key, data_dir, model, **overrides))
    )
    assert out.ok, out.error or out.details
    return Path(run_dir)


TINY_VGG_WIDTHS = (4, 8, 8, 16, 16)


def tiny_vgg_files(folder: Path) -> dict[str, Path]:
    """A VGG-19-shaped network with random weights and narrow blocks (never real weights),
    saved as torchvision's pickled state dict (``vgg.pth``) and as ``vgg.safetensors``."""
    import torch
    from safetensors.torch import save_file

    from studio.engine.vgg import full_state_dict, random_vgg19

    folder.mkdir(parents=True, exist_ok=True)
    state = full_state_dict(random_vgg19(TINY_VGG_WIDTHS))
    state["classifier.0.weight"] = torch.zeros(2, 3)  # torchvision's file has a classifier too
    paths = {"pth": folder / "vgg.pth", "safetensors": folder / "vgg.safetensors"}
    torch.save(state, paths["pth"])
    save_file(state, paths["safetensors"])
    return paths


class _WithTinyStyleFiles(Mapping[str, Any]):
    """Tiny settings whose ``vgg_weights`` and ``style_image`` are a tiny random VGG-19
    (:func:`tiny_vgg_files`) and a striped style image, written the first time the settings
    are read and kept for the test process."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._settings = settings
        self._full: dict[str, Any] | None = None

    def _resolve(self) -> dict[str, Any]:
        if self._full is None:
            vgg, style = tiny_style_files()
            self._full = {**self._settings, "vgg_weights": str(vgg), "style_image": str(style)}
        return self._full

    def __getitem__(self, key: str) -> Any:
        return self._resolve()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolve())

    def __len__(self) -> int:
        return len(self._resolve())


_TINY_STYLE: list[tuple[Path, Path]] = []


def tiny_style_files() -> tuple[Path, Path]:
    """(a tiny VGG-19 safetensors file, a 24 x 32 striped style PNG), written once per test
    process under a temporary folder removed at exit."""
    if not _TINY_STYLE:
        import atexit
        import shutil
        import tempfile

        import numpy as np
        from PIL import Image

        root = Path(tempfile.mkdtemp(prefix="studio-tiny-style-"))
        atexit.register(shutil.rmtree, root, True)
        vgg = tiny_vgg_files(root / "vgg")["safetensors"]
        yy, xx = np.mgrid[0:24, 0:32]
        stripes = ((xx + yy) // 3) % 2
        style = np.stack([stripes * 230, 40 + stripes * 150, 200 - stripes * 180], -1)
        Image.fromarray(style.astype(np.uint8)).save(root / "style.png")
        _TINY_STYLE.append((vgg, root / "style.png"))
    return _TINY_STYLE[0]


TINY_MODELS["style.fast"] = _WithTinyStyleFiles(  # type: ignore[assignment]
    {"width": 8, "residual_blocks": 1}
)
