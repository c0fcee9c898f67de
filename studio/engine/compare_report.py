"""Writing a comparison: ``report.json``, ``report.csv`` and ``sheet.png``; the memorisation
view. Pure numpy and Pillow, shared by the CLI and the GUI so both write the same files."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from studio.core import atomic

if TYPE_CHECKING:  # the dataclasses live in compare.py, which imports this module
    from studio.engine.compare import CompareReport, PanelResult

REPORT_JSON = "report.json"
REPORT_CSV = "report.csv"
SHEET_PNG = "sheet.png"
REPORT_VERSION = 1

# Column order of report.csv and of the printed table.
CSV_FIELDS = (
    "panel", "run", "family", "step", "sampler", "steps", "n_samples", "n_reference", "fd",
    "kid_mean", "kid_std", "precision", "recall", "memorisation_share",
    "memorisation_rank_share", "bits_per_dim", "seconds_per_image", "l1", "psnr", "ssim",
    "l1_bicubic", "psnr_bicubic", "ssim_bicubic",
)  # fmt: skip
# Runs that translate images with targets (paired runs) add these: how close the
# translations of the held-out inputs are to their targets (studio.engine.metrics).
PAIRED_COLUMNS = (("L1", "l1"), ("PSNR", "psnr"), ("SSIM", "ssim"))
# Runs that restore their own degraded inputs (super-resolution) add bicubic upsampling's
# scores on the same inputs: the baseline they must beat.
BICUBIC_COLUMNS = (("PSNR bicubic", "psnr_bicubic"), ("SSIM bicubic", "ssim_bicubic"))


@dataclass(frozen=True)
class PanelDone:
    """The payload of the compare job's ``"panel"`` report: panel ``index`` is finished.

    ``result`` is its :class:`studio.engine.compare.PanelResult`, ``extractor`` describes the
    feature extractor that scored it. Defined here (numpy only), so the GUI can check for it
    without importing torch; :mod:`studio.engine.compare` re-exports it.
    """

    index: int
    result: PanelResult
    extractor: str


def _finite(value: Any) -> Any:
    """NaN and infinities become None: strict JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def report_dict(report: CompareReport) -> dict[str, Any]:
    """Everything needed to reproduce the comparison, JSON-able (no image arrays)."""
    panels = []
    for i, p in enumerate(report.panels):
        panels.append({"panel": i, **p.summary()})
    return _finite(
        {
            "report_version": REPORT_VERSION,
            "created": report.created,
            "settings": report.settings,
            "dataset": report.dataset,
            "resolution": report.resolution,
            "n": report.n,
            "n_reference": report.n_reference,
            "seed": report.settings.get("seed"),
            "extractor": report.extractor,
            "extractor_meta": report.extractor_meta,
            "panels": panels,
            "notes": list(report.notes),
            "versions": report.versions,
            "machine": report.machine,
        }
    )


def csv_rows(report: CompareReport) -> list[dict[str, Any]]:
    """One row per panel, keyed by :data:`CSV_FIELDS`."""
    rows = []
    for i, p in enumerate(report.panels):
        s = p.summary()
        row = {k: s.get(k) for k in CSV_FIELDS}
        row.update(
            panel=i,
            run=p.name,
            sampler=p.conditions.get("sampler", ""),
            steps=p.conditions.get("steps", ""),
        )
        rows.append(row)
    return rows


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def report_table(report: CompareReport) -> str:
    """A plain-text table of the panels (what ``studio compare`` prints)."""
    cols = (
        ("run", "run"), ("family", "family"), ("n", "n_samples"), ("FD", "fd"),
        ("KID", "kid_mean"), ("prec", "precision"), ("recall", "recall"),
        ("memo", "memorisation_share"), ("bits/dim", "bits_per_dim"),
        ("s/img", "seconds_per_image"),
    )  # fmt: skip
    table = csv_rows(report)
    if any(row.get("psnr") is not None for row in table):
        paired = PAIRED_COLUMNS
        if any(row.get("psnr_bicubic") is not None for row in table):
            paired = (*paired, *BICUBIC_COLUMNS)
        cols = (*cols[:3], *paired, *cols[3:])
    rows = [[h for h, _ in cols]]
    for row in table:
        rows.append([_fmt(row[k]) for _, k in cols])
    widths = [max(len(r[c]) for r in rows) for c in range(len(cols))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    footer = [f"extractor: {report.extractor}", f"reference: {report.n_reference} held-out images"]
    return "\n".join(lines + footer + list(report.notes))


def panel_lines(panel: PanelResult) -> list[str]:
    """The numbers shown under a panel, each naming n where it depends on it."""
    q = panel.quality
    n, ref = q["n_samples"], q["n_reference"]
    lines = [
        f"FD {_fmt(q['fd'])}  (n={n} vs {ref} held-out)",
        f"KID {_fmt(q['kid_mean'])} ± {_fmt(q['kid_std'], 2)}",
        f"precision {q['precision']:.2f}  recall {q['recall']:.2f}",
        f"memorisation {q['memorisation_share']:.2f}  (0.5 healthy, 1 copies)",
    ]
    if q.get("psnr") is not None:
        lines.insert(0, f"L1 {q['l1']:.3f}  PSNR {q['psnr']:.1f} dB  SSIM {q['ssim']:.3f}")
    if q.get("psnr_bicubic") is not None:
        lines.insert(
            1,
            f"bicubic: L1 {q['l1_bicubic']:.3f}  PSNR {q['psnr_bicubic']:.1f} dB  "
            f"SSIM {q['ssim_bicubic']:.3f}",
        )
    if panel.bits_per_dim is not None:
        lines.append(f"bits/dim {panel.bits_per_dim:.3f} on {ref} held-out images")
    conditions = dict(panel.conditions)  # the family's declared sampling options
    if "sampler" in conditions and "steps" in conditions:
        lines.append(f"{conditions.pop('sampler')}, {conditions.pop('steps')} steps")
    if conditions:
        lines.append(
            ", ".join(
                f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"
                for name, value in conditions.items()
            )
        )
    lines.append(f"{panel.seconds_per_image * 1000:.1f} ms/image, step {panel.step}")
    return lines


def render_sheet(report: CompareReport, min_grid: int = 256) -> np.ndarray:
    """The panels side by side as one ``H x W x 3`` uint8 image.

    Each column: title (run name + family), the sample grid enlarged by a whole factor (pixels
    stay sharp) to at least ``min_grid`` wide, then its numbers; a footer names the extractor,
    the seed and the FD caveat.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    line_h, pad = 14, 10
    grids = []
    for p in report.panels:
        g = p.grid
        scale = max(1, math.ceil(min_grid / max(1, g.shape[1])))
        grids.append(np.repeat(np.repeat(g, scale, axis=0), scale, axis=1))
    col_w = max([min_grid] + [g.shape[1] for g in grids]) + 2 * pad
    texts = [panel_lines(p) for p in report.panels]
    grid_h = max([g.shape[0] for g in grids], default=0)
    rows = max([len(t) for t in texts], default=0)
    footer = [
        f"{report.dataset.get('path', '')} ({report.resolution} px), "
        f"seed {report.settings.get('seed')}, n={report.n}, "
        f"reference {report.n_reference} held-out images",
        f"features: {report.extractor}",
        "FD is biased upwards at small n: compare it only at the same n.",
    ]
    width = max(1, len(report.panels)) * col_w
    height = pad + 2 * line_h + grid_h + pad + rows * line_h + pad + len(footer) * line_h + pad
    sheet = Image.new("RGB", (width, height), (32, 32, 36))
    draw = ImageDraw.Draw(sheet)
    for i, (p, g, lines) in enumerate(zip(report.panels, grids, texts)):
        x = i * col_w + pad
        draw.text((x, pad), _clip(p.name, col_w), fill=(240, 240, 240), font=font)
        draw.text((x, pad + line_h), _clip(p.display_name, col_w), fill=(170, 170, 180), font=font)
        top = pad + 2 * line_h
        sheet.paste(Image.fromarray(g), (x, top))
        y = top + grid_h + pad
        for line in lines:
            draw.text((x, y), _clip(line, col_w), fill=(220, 220, 220), font=font)
            y += line_h
    y = height - pad - len(footer) * line_h
    for line in footer:
        draw.text((pad, y), line, fill=(150, 150, 160), font=font)
        y += line_h
    return np.asarray(sheet, dtype=np.uint8).copy()


def _clip(text: str, col_w: int) -> str:
    """Cut text to the column (the default bitmap font is ~6 px per character)."""
    limit = max(8, (col_w - 20) // 6)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def write_report(report: CompareReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.csv`` and ``sheet.png`` into ``out_dir`` (atomically
    each); returns their paths by kind."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / REPORT_JSON, "csv": out / REPORT_CSV, "sheet": out / SHEET_PNG}
    atomic.write_json(paths["json"], report_dict(report))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(report):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic.write_text(paths["csv"], buf.getvalue())
    with atomic.atomic_path(paths["sheet"]) as tmp:
        Image.fromarray(render_sheet(report)).save(tmp, format="PNG")
    return paths


@dataclass(frozen=True)
class NearestPair:
    """A sample and the training image nearest to it (RMS pixel distance on a 0..1 scale)."""

    sample_index: int
    dataset_index: int
    distance: float
    mirrored: bool
    sample: np.ndarray
    training_image: np.ndarray


def nearest_training_images(report: CompareReport, panel: int, k: int = 8) -> list[NearestPair]:
    """The ``k`` samples of ``panel`` that come closest to a training image, closest first,
    each with that image: what to look at when the memorisation share is high."""
    if not 0 <= panel < len(report.panels):
        raise IndexError(f"panel {panel} is out of range (0..{len(report.panels) - 1})")
    p = report.panels[panel]
    order = np.argsort(p.nearest_distance, kind="stable")[: max(0, k)]
    return [
        NearestPair(
            sample_index=int(i),
            dataset_index=int(p.nearest_index[i]),
            distance=float(p.nearest_distance[i]),
            mirrored=bool(p.nearest_mirrored[i]),
            sample=p.samples[i],
            training_image=p.nearest_images[i],
        )
        for i in order
    ]


def versions() -> dict[str, str]:
    """Library versions, for the report."""
    import platform

    import PIL
    import torch

    from studio import __version__

    return {
        "studio": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }


def machine(device: Any) -> dict[str, str]:
    """The machine and device the timings were taken on."""
    import os
    import platform

    import torch

    from studio.engine.device import device_name

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": str(os.cpu_count()),
        "device": device_name(device),
        "torch_threads": str(torch.get_num_threads()),
    }
