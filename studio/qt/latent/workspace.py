"""The Explore workspace: a run's latent space under sliders, with interpolation, encoding,
arithmetic and home-made sliders.

The latent being edited is ``base + Σ value_i · std_i · direction_i`` (plus the named sliders),
kept in a plain :class:`~studio.qt.latent.edit_state.EditState` the sliders show, computed in
numpy on every slider change and decoded on the window's engine thread: every decode and task is
a job there (:mod:`~studio.qt.latent.explore_jobs`), decodes on a latest-wins lane that runs
between training steps when a run trains, on a model loaded for this workspace alone and held
on the engine side (:class:`~studio.qt.latent.engine_side.SpaceHolder`).

While the open run trains in this window, everything that runs its model uses its current
weights instead: slider decodes and the tasks marked ``uses_model`` (directions, samples,
strips, arithmetic, encoding). The weights line under the picture says which weights the
newest result used; when the training ends the holder loads the run's newest saved weights.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QCoreApplication, Qt
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from studio.core.jobs import Outcome, Progress
from studio.core.paths import runs_dir
from studio.engine.live import is_live
from studio.qt.engine_thread import JobRunner
from studio.qt.latent import tasks
from studio.qt.latent.attribute_panel import AttributePanel
from studio.qt.latent.diffusion_panel import DiffusionSettings, set_diffusion
from studio.qt.latent.edit_state import EditState, layer_mask
from studio.qt.latent.encode_panel import EncodePanel
from studio.qt.latent.engine_side import DecodeResult, LiveArgs, needs_model
from studio.qt.latent.explore_jobs import ExploreJobs
from studio.qt.latent.header import RunHeader
from studio.qt.latent.items import ItemTray, LatentItem
from studio.qt.latent.live_weights import TrainingEnds, WeightsLine, live_args
from studio.qt.latent.mix_panel import MixPanel
from studio.qt.latent.panels import ArithmeticPanel, InterpolatePanel
from studio.qt.latent.sliders import SliderPanel
from studio.qt.latent.tools import GRID_TILES, ExploreTools, ToolViews
from studio.qt.settings import AppSettings
from studio.qt.widgets import Banner, ImageView

Done = Callable[[Any], None]


class LatentWorkspace(QWidget):
    """Explore a run's latent space. Call :meth:`shutdown` before the window closes.

    The tool tabs' actions (interpolate, arithmetic, encode, make a slider) live in
    :class:`~studio.qt.latent.tools.ExploreTools` (``self.tools``).
    """

    INTERPOLATE, ARITHMETIC, ENCODE, MAKE_SLIDER, MIX = range(5)

    def __init__(
        self, runner: JobRunner, settings: AppSettings, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._runner, self._settings = runner, settings
        # Latents analysed for the directions (None: the engine's default per family) and
        # how many directions; tests and the benchmark lower them.
        self.pca_samples: int | None = None
        self.pca_k = 10
        self.jobs = ExploreJobs(runner, self)  # every decode and task: engine-thread jobs
        self.loaded: tasks.Loaded | None = None
        self.edit = EditState()  # the latent being edited; the sliders show it
        self._pca: Any = None  # the principal directions, once found
        self._rng = np.random.default_rng()
        self.last_request = self.displayed_request = 0
        self.image: np.ndarray | None = None  # the image on show
        self.last_decode_ms = 0.0  # how long the engine took to decode it
        self._detail_seeds = itertools.count(1)  # lower levels drawn anew: one seed a picture
        self._build()
        self.weights_line = WeightsLine(self.weights_label, self._show_found_on)
        self.tools = ExploreTools(
            self,
            ToolViews(
                self.tray, self.tabs, self.caption, self.slider_panel, self.interpolate_panel,
                self.arithmetic_panel, self.encode_panel, self.attribute_panel,
                self.mix_panel,
            ),
            self._submit, lambda: self.loaded, self._set_origin, self._set_named,
        )  # fmt: skip
        self.training_ends = TrainingEnds(runner, self)
        self.training_ends.ended.connect(self._on_training_ended)
        app = QCoreApplication.instance()
        if app is not None:  # a safety net; the window should call shutdown() itself
            app.aboutToQuit.connect(self.shutdown)
        self.setAcceptDrops(True)
        self._set_enabled(False)

    # -- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        self.banner = Banner()
        self.header = RunHeader(self._settings)
        self.header.open_requested.connect(self.choose_run)
        self.header.run_chosen.connect(self.open_run)
        self.header.reload_requested.connect(self.reload)

        self.slider_panel = SliderPanel()
        sp = self.slider_panel
        sp.rows.values_changed.connect(self._on_sliders_moved)
        sp.named_rows.values_changed.connect(self._on_sliders_moved)
        sp.reset_button.clicked.connect(self.reset)
        sp.randomise_button.clicked.connect(self.randomise)
        sp.seed_spin.valueChanged.connect(self._on_seed_changed)
        sp.temperature_spin.valueChanged.connect(
            lambda _: self._on_seed_changed(sp.seed_spin.value())
        )
        sp.lock_seed.toggled.connect(lambda locked: sp.seed_spin.setEnabled(not locked))
        sp.raw_toggle.toggled.connect(self._on_raw_toggled)
        sp.class_combo.currentIndexChanged.connect(self._on_class_changed)
        sp.group_combo.currentIndexChanged.connect(self._on_group_changed)
        sp.details_combo.currentIndexChanged.connect(lambda _: self._request_decode())
        sp.new_details_button.clicked.connect(lambda _=False: self._request_decode())
        self.diffusion_settings = DiffusionSettings()  # shown for diffusion runs only
        self.diffusion_settings.settings_changed.connect(self._on_diffusion_settings)
        sp.layout().insertWidget(4, self.diffusion_settings)  # above the directions
        left = QScrollArea()
        left.setWidget(sp)
        left.setWidgetResizable(True)
        left.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        left.setFrameShape(QScrollArea.Shape.NoFrame)
        left.setMinimumWidth(300)

        self.image_view = ImageView("Open a run to see its latent space.")
        self.image_view.setMinimumSize(256, 256)
        self.caption = QLabel("")
        self.caption.setObjectName("caption")
        self.weights_label = QLabel("")  # which weights the newest picture or result used
        self.weights_label.setObjectName("caption")
        self.weights_label.setWordWrap(True)
        self.keep_button = QPushButton("Keep")
        self.keep_button.setToolTip("Keep this latent in the tray, to interpolate or combine it")
        self.keep_button.clicked.connect(self.keep_current)
        under = QHBoxLayout()
        under.addWidget(self.caption, 1)
        under.addWidget(self.keep_button)
        centre = QWidget()
        centre_layout = QVBoxLayout(centre)
        centre_layout.setContentsMargins(0, 0, 0, 0)
        centre_layout.addWidget(self.image_view, 1)
        centre_layout.addLayout(under)
        centre_layout.addWidget(self.weights_label)

        self.tray = ItemTray(self.edit.kept)  # shows the kept latents
        self._tray_run: tuple[Path, int] | None = None  # whose latents the tray holds
        self._kept_on_load: list[LatentItem] | None = None  # a project's tray, once loaded
        self.tray.item_activated.connect(self.edit_item)
        self.interpolate_panel = InterpolatePanel(self.tray)
        self.arithmetic_panel = ArithmeticPanel(self.tray)
        self.encode_panel = EncodePanel()
        self.attribute_panel = AttributePanel(GRID_TILES)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.interpolate_panel, "Interpolate")
        self.tabs.addTab(self.arithmetic_panel, "A − B + C")
        self.tabs.addTab(self.encode_panel, "Encode")
        self.tabs.addTab(self.attribute_panel, "Make a slider")
        self.mix_panel = MixPanel(self.tray)  # shown for a layered latent only
        self.tabs.addTab(self.mix_panel, "Mix")
        self.tabs.setTabToolTip(self.MIX, "Layout of one kept latent, colour of another")
        self.tabs.setTabToolTip(self.ARITHMETIC, "Latent arithmetic on three kept latents")
        self.tabs.setTabToolTip(self.ENCODE, "Encode your own image, then edit it")
        self.tabs.setMinimumWidth(360)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        for widget, stretch in ((left, 0), (centre, 1), (self.tabs, 0)):
            splitter.addWidget(widget)
            splitter.setStretchFactor(splitter.count() - 1, stretch)
        splitter.setSizes([320, 560, 400])
        splitter.setChildrenCollapsible(False)
        tray_caption = QLabel("Kept latents (double-click to edit)")
        tray_caption.setObjectName("caption")
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addWidget(self.header)
        layout.addWidget(splitter, 1)
        layout.addWidget(tray_caption)
        layout.addWidget(self.tray)

    def _set_enabled(self, on: bool) -> None:
        for widget in (self.slider_panel, self.keep_button, self.tabs, self.tray):
            widget.setEnabled(on)
        self.header.reload_button.setEnabled(self.loaded is not None)

    # The tools' actions, for scripts and tests.
    def make_strip(self) -> None:
        self.tools.make_strip()

    def export_strip(self, path: str | Path) -> None:
        self.tools.export_strip(path)

    def encode_file(self, source: str | Path | np.ndarray, name: str = "") -> None:
        self.tools.encode_file(source, name)

    def new_attribute_samples(self) -> None:
        self.tools.new_attribute_samples()

    def fit_slider(self) -> None:
        self.tools.fit_slider()

    # -- tasks -----------------------------------------------------------------------------
    def _submit(
        self,
        name: str,
        factory: Any,
        done: Done,
        progress: Callable[[Progress], None] | None = None,
        on_end: Callable[[Outcome[Any]], None] | None = None,
    ) -> Any:
        """Run a task as an engine job; when it runs the model and the run is training here,
        on its current weights, between steps. Returns its handle (None: shut down)."""
        live, on_done = self._live(), done
        if live is None and needs_model(factory):

            def on_done(result: Any) -> None:  # the holder's saved copy made it
                if self.loaded is not None:
                    self.weights_line.note(False, self.loaded.step)
                done(result)

        def failed(message: str) -> None:
            self.banner.show_message(f"{name}: {message}", "error")
            if self.loaded is None:  # the run did not open
                self.header.show_run("No run open", "Open a GAN, VAE, flow or diffusion run.")

        return self.jobs.submit(
            name, factory, on_done, failed, on_progress=progress, on_end=on_end,
            live=live if needs_model(factory) else None, on_weights=self.weights_line.note,
        )  # fmt: skip

    def _live(self) -> LiveArgs | None:
        """What a job on the live weights needs, when the open run trains here now."""
        if self.loaded is None or not is_live(self.loaded.path):
            return None
        device = self._settings.device_preference()
        return live_args(self.loaded, self.slider_panel, self.diffusion_settings, device)

    @property
    def weights(self) -> tuple[bool, int | None] | None:
        """(live, step) of the weights the newest result used."""
        return self.weights_line.weights

    # -- runs ------------------------------------------------------------------------------
    def choose_run(self) -> None:
        start = str(self.loaded.path.parent if self.loaded else runs_dir())
        folder = QFileDialog.getExistingDirectory(self, "Open a run to explore", start)
        if folder:
            self.open_run(folder)

    def open_run(self, path: str | Path, kept: list[LatentItem] | None = None) -> None:
        """Load a run for exploring (a job on the engine thread); a run that cannot be explored
        is shown with the reason. ``kept``: latents for the tray once loaded (a project's)."""
        self._kept_on_load = None if kept is None else list(kept)
        self.jobs.cancel_all()
        self.loaded, self._pca = None, None
        self.edit.set_directions(None)
        self.weights_line.clear()
        self.banner.clear()
        self._set_enabled(False)
        self.header.show_run(f"Opening {Path(path).name}…", "")
        self._submit(
            f"Open {Path(path).name}",
            tasks.load_run(
                Path(path), self._settings.device_preference(), self.slider_panel.seed_spin.value()
            ),
            self._on_loaded,
            lambda p: self.caption.setText(p.message or f"{p.step} / {p.total}"),
        )

    def set_run(self, path: str | Path) -> None:
        """Open ``path`` unless it is already open (for following the Train workspace)."""
        if self.loaded is None or Path(path) != self.loaded.path:
            self.open_run(path)

    def reload(self) -> None:
        if self.loaded is not None:
            self.open_run(self.loaded.path)

    def _on_loaded(self, result: tasks.Loaded) -> None:
        name = result.path.name
        self.caption.setText("")
        if result.reason is not None:
            self.header.show_run(name, f"{result.display_name}: cannot be explored")
            self.banner.show_message(result.reason, "info")
            self.image_view.set_image(None)
            self.image_view.set_placeholder(result.reason)
            return
        self.loaded = result
        self._settings.add_recent_run(result.path)
        self.header.show_run(
            name,
            f"{result.display_name} · {_latent_size(result)} · {result.resolution} px · "
            f"encodes by {result.encoder} · {result.device}",
        )
        sp = self.slider_panel
        sp.set_classes(result.num_classes)
        self.edit.set_group(None)  # no directions on the sliders yet: nothing to keep
        sp.set_layer_groups(result.layer_groups)
        self.mix_panel.set_layers(result.layers, result.layer_groups)
        self.tabs.setTabVisible(self.MIX, result.layers > 1)
        sp.set_temperature_option(result.temperature)
        sp.set_details_option(result.details)
        # Decodes are ODE runs (DDIM): steps and refinements to set, no raw dimensions.
        self.diffusion_settings.show_for(result.ode, result.steps, result.refine)
        sp.raw_toggle.setVisible(not result.ode)
        sp.raw_toggle.blockSignals(True)
        sp.raw_toggle.setChecked(False)
        sp.raw_toggle.blockSignals(False)
        self._pca = None
        self._show_directions(None)
        self._set_named(result.named, keep_edit=False)
        if self._tray_run != (result.path, result.dim):
            self.tray.clear_items()  # another run's latents mean nothing here; Reload keeps them
            self._tray_run = (result.path, result.dim)
        if self._kept_on_load is not None:  # a project's tray replaces the one shown
            self.tray.clear_items()
            for item in self._kept_on_load:  # a latent of another size means nothing here
                z = np.asarray(item.z, np.float32).reshape(-1)
                if result.layers > 1 and z.size == result.layer_dim:
                    z = np.tile(z, result.layers)  # kept before the space was layered
                if z.size == result.dim:
                    self.tray.add(replace(item, z=z))
            self._kept_on_load = None
        self.interpolate_panel.set_frames(None)
        self.encode_panel.set_method(result.can_encode, result.encoder)
        self.encode_panel.set_layered(result.layers > 1)
        self._set_origin(result.z, f"Seed {result.seed}")
        self._set_enabled(True)
        if is_live(result.path):
            self.weights_label.setText(
                "The run is training: pictures and tools use its current weights, between "
                "training steps."
            )
            if result.discrete:  # its prior is the codebook: draw from the live one
                self._on_seed_changed(result.seed)
        else:
            self.weights_line.note(False, result.step)
        self._find_directions()
        self.new_attribute_samples()

    def _find_directions(self) -> None:
        if self.loaded is not None:
            self._submit(
                "Find directions",
                tasks.find_directions(self.pca_samples, self.pca_k, self.loaded.seed),
                self._on_directions,
                lambda p: self.slider_panel.method_label.setText(
                    f"Finding the principal directions… {p.fraction or 0:.0%}"
                ),
            )

    def directions_ready(self) -> bool:
        """Whether the principal directions have been found for the open run."""
        return self._pca is not None

    def _on_directions(self, dirs: Any) -> None:
        self._pca = dirs
        self.weights_line.found_directions()  # on the weights its result was noted with
        if not self.slider_panel.raw_toggle.isChecked():
            self._show_directions(dirs)

    def _show_directions(self, dirs: Any) -> None:
        """Put ``dirs`` on the sliders, at 0; the current edit is kept in the base latent."""
        self.edit.set_directions(dirs)
        weights = self.weights_line.directions_text() if dirs is self._pca else ""
        self.slider_panel.show_directions(dirs, weights if dirs is not None else "")

    def _show_found_on(self) -> None:
        """The shown weights changed: say again which weights the directions were found on."""
        if self._pca is not None and self.edit.dirs is self._pca:
            self.slider_panel.show_found(self._pca, self.weights_line.directions_text())

    def _set_named(self, sliders: tuple[Any, ...], keep_edit: bool = True) -> None:
        dim = self.loaded.dim if self.loaded else 0
        self.edit.set_named(sliders, dim, keep_edit and self.loaded is not None)
        self.slider_panel.show_named(sliders)

    # -- the edited latent -------------------------------------------------------------------
    def current_z(self) -> np.ndarray:
        """The latent the sliders describe now."""
        if self.loaded is None:
            return self.edit.base.copy()
        return self.edit.current_z()

    def named_slider_names(self) -> list[str]:
        return self.edit.named_names()

    def _on_sliders_moved(self) -> None:
        sp = self.slider_panel
        self.edit.set_values(sp.rows.values(), sp.named_rows.values())
        self._request_decode()

    def _request_decode(self) -> None:
        if self.loaded is None or self.jobs.closed:
            return
        # Training right now: its current weights, between steps; else the holder's copy.
        seed = next(self._detail_seeds) if self.slider_panel.resampling_details() else None
        self.last_request = self.jobs.decode(
            self.current_z(), self._on_decoded, self._on_decode_failed, self._live(), seed
        )

    def _on_decode_failed(self, message: str) -> None:
        self.caption.setText(f"Could not decode this latent: {message}")

    def _on_decoded(self, result: DecodeResult) -> None:
        if result.request < self.displayed_request:
            return  # an older answer overtaken by a newer one
        self.displayed_request = result.request
        self.image, self.last_decode_ms = result.array, result.decode_ms
        self.image_view.set_image(result.image)
        self.caption.setText(f"{self.edit.origin_name} · decoded in {result.decode_ms:.1f} ms")
        if result.live:
            self.weights_line.note(True, result.step)
        elif self.loaded is not None and (self.weights is None or self.weights[0]):
            self.weights_line.note(False, self.loaded.step)  # back on the saved copy

    def _set_origin(self, z: np.ndarray, name: str) -> None:
        """Make ``z`` the latent the sliders start from, all sliders at 0."""
        self.edit.set_origin(z, name)
        self._show_zeroed_sliders()

    def _show_zeroed_sliders(self) -> None:
        sp = self.slider_panel
        sp.named_rows.blockSignals(True)
        sp.named_rows.set_values(np.zeros(len(sp.named_rows.sliders)))
        sp.named_rows.blockSignals(False)
        sp.rows.set_values(np.zeros(len(sp.rows.sliders)))  # emits once: one decode

    def reset(self) -> None:
        self.edit.reset()
        self._show_zeroed_sliders()

    def randomise(self) -> None:
        """A new sample (the next seed), or with the seed locked random slider positions."""
        sp = self.slider_panel
        if sp.lock_seed.isChecked():
            values = np.clip(self._rng.normal(size=len(sp.rows.sliders)), -2.5, 2.5)
            sp.rows.set_values(values)
        else:
            sp.seed_spin.setValue(sp.seed_spin.value() + 1)  # _on_seed_changed draws it

    def _on_seed_changed(self, seed: int) -> None:
        if self.loaded is not None:
            temperature = self.slider_panel.temperature()
            self._submit(
                "Sample",
                tasks.prior_sample(seed, temperature),
                lambda z: self._set_origin(z, f"Seed {seed}"),
            )

    def _on_raw_toggled(self, raw: bool) -> None:
        if self.loaded is None:
            return
        self._show_directions(self.loaded.raw if raw else self._pca)
        self._request_decode()

    def _on_group_changed(self, _index: int) -> None:
        """The sliders now move one layer group (or all): the edit stays, sliders at 0."""
        loaded = self.loaded
        if loaded is None:
            return
        group = self.slider_panel.group_index()
        mask = None
        if group is not None:
            mask = layer_mask(loaded.layer_groups, loaded.layers, loaded.layer_dim, group)
        self.edit.set_group(mask)
        self._show_zeroed_directions()

    def _show_zeroed_directions(self) -> None:
        rows = self.slider_panel.rows
        rows.set_values(np.zeros(len(rows.sliders)))  # emits once: one decode (same picture)

    def _on_class_changed(self, index: int) -> None:
        if self.loaded is not None and index >= 0:
            self._submit("Class", tasks.set_label(index), lambda _: self._request_decode())

    # -- the tray ----------------------------------------------------------------------------
    def keep_current(self) -> int:
        """Keep the latent on show in the tray; returns its index."""
        if self.loaded is None or self.image is None:
            return -1
        origin = self.edit.origin_name
        name = f"{origin} (edited)" if self.edit.edited() else origin
        return self.tray.add(LatentItem(name, self.current_z(), self.image))

    def edit_item(self, index: int) -> None:
        item = self.tray.item_at(index)
        if item is not None:
            self._set_origin(item.z, item.name)

    # -- the engine thread and closing ----------------------------------------------------------
    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Cancel and forget the workspace's jobs and free its model (on the engine thread);
        later slider moves are ignored. Explore has no thread of its own: always True."""
        self.jobs.shutdown()
        return True

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        self.shutdown()
        super().closeEvent(event)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        self.tools.drag_enter(event)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        self.tools.drop(event)

    # -- a run training in this window -------------------------------------------------------
    def _on_training_ended(self, trained: Path | None) -> None:
        if self.loaded is None:
            return
        if trained is not None and Path(trained).resolve() != Path(self.loaded.path).resolve():
            return  # another run's training ended: nothing new for the one on show
        self.header.reload_button.setEnabled(True)
        if self.weights_line.saw_live and not is_live(self.loaded.path):
            # The pictures showed the live weights; the holder's copy is older. Load the
            # newest saved ones (what training just wrote), keeping the edit on show.
            self.weights_line.saw_live = False
            path, device = self.loaded.path, self._settings.device_preference()
            self._submit("Load weights", tasks.refresh_weights(path, device), self._on_refreshed)
        else:
            self.caption.setText("Training finished: Reload for the newest weights")

    def _on_refreshed(self, step: int | None) -> None:
        if self.loaded is None:
            return
        self.loaded = replace(self.loaded, step=step)
        self.weights_line.note(False, step)
        if self.weights_line.stale():  # the directions came from the live weights: refit
            self.weights_line.refitting = True
            self._show_found_on()
            self._find_directions()
        self.caption.setText("Training finished: showing its newest saved weights")
        self._request_decode()

    def _on_diffusion_settings(self, steps: int, refine: int) -> None:
        if self.loaded is None or not self.loaded.ode:
            return

        def done(encoder: Any) -> None:
            self.encode_panel.set_method(True, str(encoder))
            self._request_decode()  # the same noise, decoded with the new steps

        self._submit("DDIM settings", set_diffusion(steps, refine), done)


def _latent_size(loaded: tasks.Loaded) -> str:
    """“128-number latent”, or for a layered one “8 layers x 128-number latent”."""
    if loaded.layers > 1:
        return f"{loaded.layers} layers × {loaded.layer_dim:,}-number latent"
    return f"{loaded.dim:,}-number latent"
