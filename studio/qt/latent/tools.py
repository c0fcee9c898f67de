"""The actions of the explorer's tool tabs: interpolate, combine, encode, make a slider.

:class:`ExploreTools` is the workspace's helper for its tabs, kept apart so each file stays
readable. It turns the tabs' requests into Explore jobs and their results into views; it is
given the widgets it drives (:class:`ToolViews`) and the workspace's few operations it needs
(submit a job, the open run, set the edited latent's origin, replace the named sliders).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QFileDialog, QLabel, QTabWidget, QWidget

from studio.core.jobs import Progress
from studio.qt.latent import tasks
from studio.qt.latent.attribute_panel import AttributePanel
from studio.qt.latent.encode_panel import EncodePanel, fit_note
from studio.qt.latent.items import ItemTray, LatentItem
from studio.qt.latent.mix_panel import MixPanel
from studio.qt.latent.panels import ArithmeticPanel, InterpolatePanel
from studio.qt.latent.sliders import SliderPanel

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
GRID_TILES = 16
MAX_MIXED = 12  # kept latents in a mixing grid (studio.engine.latent_layers.MAX_LATENTS)
ENCODE_TAB = 2


@dataclass(frozen=True)
class ToolViews:
    """The widgets the tools read and fill."""

    tray: ItemTray
    tabs: QTabWidget
    caption: QLabel
    slider_panel: SliderPanel
    interpolate_panel: InterpolatePanel
    arithmetic_panel: ArithmeticPanel
    encode_panel: EncodePanel
    attribute_panel: AttributePanel
    mix_panel: MixPanel


class ExploreTools:
    """Interpolation, arithmetic, encoding and slider making (see the module notes).

    ``submit(name, factory, done, progress=None, on_end=None)`` runs a task (returns its
    handle); ``loaded()`` is the open run (None: none)."""

    def __init__(
        self,
        parent: QWidget,
        views: ToolViews,
        submit: Callable[..., Any],
        loaded: Callable[[], tasks.Loaded | None],
        set_origin: Callable[[np.ndarray, str], None],
        set_named: Callable[..., None],
    ) -> None:
        self._parent, self._views = parent, views
        self._submit, self._loaded = submit, loaded
        self._set_origin, self._set_named = set_origin, set_named
        self._encode_task: Any = None  # the running encode's JobHandle
        self._grid_seed = 10_000
        self._mix_name = "Mix"
        views.slider_panel.named_rows.remove_requested.connect(self.remove_slider)
        views.interpolate_panel.make_requested.connect(self.make_strip)
        views.interpolate_panel.export_requested.connect(self.ask_export)
        views.arithmetic_panel.compute_requested.connect(self.compute_arithmetic)
        views.encode_panel.open_requested.connect(self.ask_image)
        views.encode_panel.cancel_requested.connect(self.cancel_encode)
        views.attribute_panel.samples_requested.connect(self.new_attribute_samples)
        views.attribute_panel.fit_requested.connect(self.fit_slider)
        views.mix_panel.mix_requested.connect(self.mix)
        views.mix_panel.edit_requested.connect(self.edit_mix)
        views.mix_panel.export_requested.connect(self.ask_mix_grid)

    # -- interpolation and arithmetic -----------------------------------------------------------
    def make_strip(self) -> None:
        panel = self._views.interpolate_panel
        a, b = panel.pick_a.selected(), panel.pick_b.selected()
        if a is None or b is None:
            return
        n, mode = panel.frames_spin.value(), panel.mode()
        caption = f"{n} frames, {a.name} → {b.name}, {mode}; left to right, then down"
        factory = tasks.interpolation_strip(a.z, b.z, n, mode)
        self._submit("Interpolate", factory, lambda r: panel.set_frames(r[1], caption))

    def export_strip(self, path: str | Path) -> None:
        """Save the strip on show: ``.png`` a strip, ``.gif``/``.webp`` an animation."""
        frames = self._views.interpolate_panel.frames
        if frames is not None:
            self._submit(
                "Export",
                tasks.export_frames(frames, Path(path)),
                lambda p: self._views.caption.setText(f"Saved {p}"),
            )

    def ask_export(self, fmt: str) -> None:
        filters = "PNG strip (*.png)" if fmt == "png" else "GIF (*.gif);;WebP (*.webp)"
        path, chosen = QFileDialog.getSaveFileName(
            self._parent, "Save the interpolation", "", filters
        )
        if path:
            if not Path(path).suffix:
                path += ".png" if fmt == "png" else (".webp" if "WebP" in chosen else ".gif")
            self.export_strip(path)

    def compute_arithmetic(self) -> None:
        panel = self._views.arithmetic_panel
        a, b, c = panel.pick_a.selected(), panel.pick_b.selected(), panel.pick_c.selected()
        if a is None or b is None or c is None:
            return
        name = f"{a.name} − {b.name} + {c.name}"

        def done(result: tuple[np.ndarray, np.ndarray]) -> None:
            z, image = result
            panel.result_view.set_image(image)
            self._views.tray.add(LatentItem(name, z, image))
            self._set_origin(z, name)

        self._submit("Arithmetic", tasks.combine(a.z, b.z, c.z), done)

    # -- style mixing (a layered latent) --------------------------------------------------------
    def mix(self) -> None:
        panel = self._views.mix_panel
        a, b = panel.pick_a.selected(), panel.pick_b.selected()
        if a is None or b is None or self._loaded() is None:
            return
        crossover = panel.crossover.value()
        caption = f"Layout of {a.name}, colour of {b.name} (crossover {crossover})"
        self._mix_name = f"{a.name} × {b.name} @ {crossover}"
        factory = tasks.mix(a.z, b.z, crossover)
        self._submit("Mix", factory, lambda r: panel.set_result(r, caption))

    def edit_mix(self) -> None:
        mixed = self._views.mix_panel.mixed
        if mixed is not None:
            self._set_origin(mixed[0], self._mix_name)

    def ask_mix_grid(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self._parent, "Save the mixing grid", "", "PNG image (*.png)"
        )
        if path:  # the dialog asked before choosing an existing file
            self.export_mix_grid(path, overwrite=True)

    def export_mix_grid(self, path: str | Path, overwrite: bool = False) -> None:
        """Save the grid of every kept latent's mixes at the crossover as a PNG (rows: the
        layout's latent, columns: the colour's; see studio.engine.latent_layers)."""
        panel, items = self._views.mix_panel, self._views.tray.items()
        if self._loaded() is None or len(items) < 2:
            return
        crossover, target = panel.crossover.value(), Path(path)

        def save(grid: np.ndarray) -> None:
            n = min(len(items), MAX_MIXED)
            panel.set_result(panel.mixed, f"{n} x {n} mixes at crossover {crossover}")
            panel.result_view.set_image(grid)
            self._submit(
                "Save grid",
                tasks.save_image(grid, target, overwrite),
                lambda p: self._views.caption.setText(f"Saved {p}"),
            )

        zs = [item.z for item in items[:MAX_MIXED]]
        self._submit("Mixing grid", tasks.mix_grid(zs, crossover), save)

    # -- encoding your own image ---------------------------------------------------------------
    def ask_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self._parent,
            "Encode an image",
            "",
            "Images (*.png *.jpg *.jpeg *.webp *.bmp *.gif *.tif *.tiff)",
        )
        if path:
            self.encode_file(path)

    def encode_file(self, source: str | Path | np.ndarray, name: str = "") -> None:
        """Encode, invert or project an image file (or H x W x 3 array) into the latent."""
        loaded = self._loaded()
        if loaded is None:
            return
        self.cancel_encode()
        name = name or (Path(source).name if not isinstance(source, np.ndarray) else "image")
        panel = self._views.encode_panel
        steps = panel.steps_spin.value()
        panel.set_busy(True, None if loaded.can_encode else steps)
        self._views.tabs.setCurrentIndex(ENCODE_TAB)

        def progress(p: Progress) -> None:
            panel.set_progress(p.step, p.total, p.metrics.get("mse"))
            if p.image is not None:
                panel.recon_view.set_image(p.image)

        def done(result: tasks.Encoded) -> None:
            panel.show_result(
                result.target,
                result.reconstruction,
                result.error,
                result.method,
                fit_note(result.source_shape, result.target.shape[0]),
            )
            self._views.tray.add(
                LatentItem(f"Encoded {result.name}", result.z, result.reconstruction)
            )
            self._set_origin(result.z, f"Encoded {result.name}")

        factory = tasks.encode_image(
            source, name, steps, self._views.slider_panel.seed_spin.value(), panel.per_layer()
        )

        def end(_outcome: Any) -> None:
            if self._encode_task is handle:
                self._encode_task = None
                panel.set_busy(False)

        handle = self._submit(f"Encode {name}", factory, done, progress, end)
        self._encode_task = handle

    def cancel_encode(self) -> None:
        if self._encode_task is not None:
            self._encode_task.token.cancel()

    def drag_enter(self, event: QDragEnterEvent) -> None:
        if self._loaded() is not None and self._dropped_image(event) is not None:
            event.acceptProposedAction()

    def drop(self, event: QDropEvent) -> None:
        path = self._dropped_image(event)
        if path is not None:
            event.acceptProposedAction()
            self.encode_file(path)

    @staticmethod
    def _dropped_image(event: QDragEnterEvent | QDropEvent) -> Path | None:
        for url in event.mimeData().urls():
            path = Path(url.toLocalFile())
            if url.isLocalFile() and path.suffix.lower() in IMAGE_SUFFIXES:
                return path
        return None

    # -- making a slider -------------------------------------------------------------------------
    def new_attribute_samples(self) -> None:
        self._grid_seed += 1
        self._submit(
            "Samples",
            tasks.sample_grid(GRID_TILES, self._grid_seed),
            lambda r: self._views.attribute_panel.set_samples(*r),
        )

    def fit_slider(self) -> None:
        panel, loaded = self._views.attribute_panel, self._loaded()
        name = panel.slider_name()
        if loaded is None or not name:
            return
        pos, neg = panel.positives(), panel.negatives()
        label = self._views.slider_panel.class_combo.currentIndex() if loaded.num_classes else None

        def done(result: tuple[Any, tuple[Any, ...]]) -> None:
            fit, sliders = result
            self._set_named(sliders)
            panel.clear_marks()
            panel.result_label.setText(
                f"“{name}”: training accuracy {fit.accuracy:.0%} on {fit.n_pos} + / "
                f"{fit.n_neg} −. Saved with the run."
            )

        factory = tasks.fit_slider(loaded.path, name, pos, neg, loaded.family, label)
        self._submit(f"Fit {name}", factory, done)

    def remove_slider(self, name: str) -> None:
        loaded = self._loaded()
        if loaded is not None:
            factory = tasks.remove_slider(loaded.path, name, loaded.family)
            self._submit("Delete slider", factory, self._set_named)
