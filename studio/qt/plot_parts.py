"""Pieces of the live plots: metric colours and groups (the view ranges: ``plot_view.py``).

Names decide where a metric goes: losses share the top plot, anything else joins a group of
the lower plot (diagnostics, gradient norm, learning rate, images/s, memory, ...). Known names
prefer a fixed colour, so a loss looks the same across runs and families, but no two curves of
one plot share a colour (``pick_colour``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable

from PySide6.QtCore import Qt

# Fixed colours for the names we know, so a loss keeps its colour across runs and families.
KNOWN_COLOURS: dict[str, str] = {
    "loss_d": "#e8704a",
    "loss_g": "#4aa3e8",
    "loss": "#4aa3e8",
    "recon": "#5cc97a",
    "kl": "#d9b84a",
    "nll": "#b77fe0",
    "bpd": "#b77fe0",
    "r1": "#a0a0a0",
    "diversity": "#5cc97a",
    "d_real": "#e8c14a",
    "d_fake": "#c77fe0",
    "grad_norm_d": "#e89a8a",
    "grad_norm_g": "#8ac4e8",
    "lr": "#d9b84a",
    "images_per_s": "#4ad9d0",
    "memory_mb": "#e87ab4",
}
PALETTE = ("#4aa3e8", "#e8704a", "#5cc97a", "#d9b84a", "#b77fe0", "#4ad9d0", "#e87ab4", "#c0c0c0")
RUN_PALETTE = ("#f2f2f2", "#ffd166", "#9be37b", "#ff7fbf", "#8fb8ff", "#c9a0ff")
# An overlaid run has one colour; its metrics in one plot differ by dash pattern.
RUN_DASHES = (Qt.PenStyle.DashLine, Qt.PenStyle.DotLine, Qt.PenStyle.DashDotLine)
LOSSES = ""  # the group key of the top plot
DIAGNOSTICS_GROUP = "Diagnostics"
DIAGNOSTICS = frozenset({"diversity", "d_real", "d_fake", "usage"})
# Prefix -> lower-plot group; any name not listed here and not a diagnostic is a loss.
GROUP_PREFIXES = (
    ("grad_norm", "Gradient norm"),
    ("lr", "Learning rate"),
    ("images_per_s", "Images/s"),
    ("memory", "Memory (MiB)"),
    ("kl_dim_", "KL per dimension"),
    ("perplexity", "Codebook perplexity"),
    ("restarts", "Codebook restarts"),
    ("logdet", "Log-determinant"),
    ("resolution", "Growing: resolution (px)"),  # a GAN's progressive growing
    ("alpha", "Growing: fade-in alpha"),
    # A continual run's held-out metrics, one curve per folder (studio.engine.monitor)
    ("folder_nearest", "Held-out: nearest-sample distance per folder"),
    ("folder_bpd", "Held-out: bits/dim per folder"),
    ("ewc_penalty", "EWC penalty"),
    # A single-folder image-to-image run's held-out quality, each beside its baseline's
    # (heldout_psnr with heldout_psnr_bicubic) in one plot.
    ("heldout_psnr", "Held-out PSNR (dB)"),
    ("heldout_ssim", "Held-out SSIM"),
    # An autoencoder's reconstructions and the statistics of its latent grid.
    ("recon_psnr", "Reconstruction PSNR (dB)"),
    ("latent_mean", "Latent mean and std"),
    ("latent_std", "Latent mean and std"),
)


def colour_for(name: str) -> str:
    """The preferred colour of a metric: fixed for known names, hashed (stable) for the rest.
    A plot gives a curve this colour only if no other curve of the plot has it
    (:func:`pick_colour`)."""
    return KNOWN_COLOURS.get(name) or PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


def pick_colour(name: str, taken: Iterable[str]) -> str:
    """The colour of a new curve in a plot whose curves already have ``taken``: the metric's
    own (:func:`colour_for`) when free, else the first palette colour no curve has (or, with
    more curves than colours, the least used), so no two curves of a plot share one."""
    used = [t.lower() for t in taken]
    own = colour_for(name)
    if own.lower() not in used:
        return own
    return min(PALETTE, key=lambda c: (used.count(c.lower()), PALETTE.index(c)))


# A plot whose curves' typical magnitudes differ by more than this factor says so in its
# title and points to the Normalise and Log switches (a 50k reconstruction flattens a KL of
# 10 into a line at zero).
SPREAD_HINT = 100.0


def plot_title(base: str, normalised: bool, scales: Iterable[float], log: bool = False) -> str:
    """A plot's title: what it shows, and how its curves are scaled or what would help (no
    hint on a log axis: it shows them all already)."""
    if normalised:
        return base + " · each curve ÷ its median"
    return base if log else base + scale_hint(scales)


def scale_hint(scales: Iterable[float]) -> str:
    """`` · scales differ 5,000×: Normalise or Log shows them all``, or "" (one scale)."""
    mags = [abs(v) for v in scales if v and math.isfinite(v)]
    if len(mags) < 2 or max(mags) <= SPREAD_HINT * min(mags):
        return ""
    return f" · scales differ {max(mags) / min(mags):,.0f}×: Normalise or Log shows them all"


def group_of(name: str) -> str:
    """Which plot a metric goes to: ``LOSSES`` (top) or the name of a lower-plot group."""
    if name in DIAGNOSTICS:
        return DIAGNOSTICS_GROUP
    for prefix, group in GROUP_PREFIXES:
        if name.startswith(prefix):
            if prefix == "lr" and name != "lr" and not name.startswith("lr_"):
                continue  # "lrelu_loss" is not a learning rate
            return group
    return LOSSES


def is_diagnostic(name: str) -> bool:
    return group_of(name) != LOSSES
