"""The Explore workspace: a run's latent space under sliders, with interpolation, encoding,
arithmetic and home-made sliders.

The latent being edited is ``base + Σ value_i · std_i · direction_i`` (plus the named sliders),
computed here in numpy on every slider change and handed to the workspace's own
:class:`~studio.qt.latent.worker.LatentWorker`, which decodes latest-wins on a model loaded for
this workspace alone (the shared engine thread may be busy training for hours).

While the open run trains in this window, everything that runs its model goes to the engine
thread instead, between training steps, on its current weights: slider decodes
(:mod:`~studio.qt.latent.live_decode`) and the tasks marked ``uses_model`` (directions, samples,
strips, arithmetic, encoding; :mod:`~studio.qt.latent.live_tasks`). The weights line under the
picture says which weights the newest result used; when the training ends the worker loads the
run's newest saved weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QCoreApplication, Qt
from PySide6.QtGui import QCloseEvent
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

from studio.core.jobs import Outcome, Progress, Status
from studio.core.paths import runs_dir
from studio.engine.live import is_live
from studio.qt.engine_thread import JobRunner
from studio.qt.latent import tasks
from studio.qt.latent.attribute_panel import AttributePanel
from studio.qt.latent.diffusion_panel import DiffusionMixin, DiffusionSettings
from studio.qt.latent.encode_panel import EncodePanel
from studio.qt.latent.header import RunHeader
from studio.qt.latent.items import ItemTray, LatentItem
from studio.qt.latent.live_decode import LiveDecoder
from studio.qt.latent.live_tasks import LiveTasks, needs_model
from studio.qt.latent.live_weights import LiveWeightsMixin
from studio.qt.latent.panels import ArithmeticPanel, InterpolatePanel
from studio.qt.latent.sliders import SliderPanel
from studio.qt.latent.tools import GRID_TILES, LatentToolsMixin
from studio.qt.latent.worker import DecodeResult, LatentWorker
from studio.qt.settings import AppSettings
from studio.qt.widgets import Banner, ImageView

Done = Callable[[Any], None]


class LatentWorkspace(LatentToolsMixin, DiffusionMixin, LiveWeightsMixin, QWidget):
    """Explore a run's latent space. Call :meth:`shutdown` before the window closes.

    The tool tabs' actions (interpolate, arithmetic, encode, make a slider) live in
    :class:`~studio.qt.latent.tools.LatentToolsMixin`.
    """

    INTERPOLATE, ARITHMETIC, ENCODE, MAKE_SLIDER = range(4)

    def __init__(
        self, runner: JobRunner, settings: AppSettings, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._runner, self._settings = runner, settings
        # Latents analysed for the directions (None: the engine's default per family) and
        # how many directions; tests and the benchmark lower them.
        self.pca_samples: int | None = None
        self.pca_k = 10
        self.worker = LatentWorker(self)
        self.live_decoder = LiveDecoder(runner, self)  # decodes while the run trains here
        self.live_tasks = LiveTasks(runner, self)  # model tasks while the run trains here
        self.loaded: tasks.Loaded | None = None
        self._base = self._origin = np.zeros(0, np.float32)
        self._origin_name = ""
        self._dirs: Any = None  # the Directions on the sliders (PCA or raw)
        self._pca: Any = None  # the principal directions, once found
        self._named: tuple[Any, ...] = ()
        self._named_vecs = np.zeros((0, 0), np.float32)
        self._named_std = np.zeros(0, np.float32)
        # Keyed by handle (a worker TaskHandle or an engine JobHandle: their ids may clash).
        self._callbacks: dict[object, tuple[Done, Callable[[Progress], None] | None]] = {}
        self._saved_tasks: set[object] = set()  # model tasks the worker's saved copy runs
        self._encode_task: Any = None  # TaskHandle or JobHandle
        self.weights: tuple[bool, int | None] | None = None  # (live, step) of the newest result
        self._saw_live = False  # a result came from the live weights since the run opened
        self._pca_weights = ""
        self._grid_seed = 10_000
        self._rng = np.random.default_rng()
        self.last_request = self.displayed_request = 0
        self.image: np.ndarray | None = None  # the image on show
        self.last_decode_ms = 0.0  # how long the worker took to decode it
        self._build()
        queued = Qt.ConnectionType.QueuedConnection
        self.worker.decoded.connect(self._on_decoded, queued)
        self.live_decoder.decoded.connect(self._on_decoded)
        self.worker.task_progress.connect(self._on_task_progress, queued)
        self.worker.task_done.connect(self._on_task_done, queued)
        self.live_tasks.task_progress.connect(self._on_task_progress)
        self.live_tasks.task_done.connect(self._on_task_done)
        self.live_tasks.weights_used.connect(self._note_weights)
        runner.job_finished.connect(self._on_engine_job_finished)
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
        sp.rows.values_changed.connect(self._request_decode)
        sp.named_rows.values_changed.connect(self._request_decode)
        sp.named_rows.remove_requested.connect(self._on_remove_slider)
        sp.reset_button.clicked.connect(self.reset)
        sp.randomise_button.clicked.connect(self.randomise)
        sp.seed_spin.valueChanged.connect(self._on_seed_changed)
        sp.lock_seed.toggled.connect(lambda locked: sp.seed_spin.setEnabled(not locked))
        sp.raw_toggle.toggled.connect(self._on_raw_toggled)
        sp.class_combo.currentIndexChanged.connect(self._on_class_changed)
        self.diffusion_settings = DiffusionSettings()  # shown for diffusion runs only
        self.diffusion_settings.settings_changed.connect(self._on_diffusion_settings)
        sp.layout().insertWidget(3, self.diffusion_settings)  # above the directions
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

        self.tray = ItemTray()
        self._tray_run: tuple[Path, int] | None = None  # whose latents the tray holds
        self.tray.item_activated.connect(self.edit_item)
        self.interpolate_panel = InterpolatePanel(self.tray)
        self.interpolate_panel.make_requested.connect(self.make_strip)
        self.interpolate_panel.export_requested.connect(self._on_export_requested)
        self.arithmetic_panel = ArithmeticPanel(self.tray)
        self.arithmetic_panel.compute_requested.connect(self.compute_arithmetic)
        self.encode_panel = EncodePanel()
        self.encode_panel.open_requested.connect(self._on_open_image)
        self.encode_panel.cancel_requested.connect(self.cancel_encode)
        self.attribute_panel = AttributePanel(GRID_TILES)
        self.attribute_panel.samples_requested.connect(self.new_attribute_samples)
        self.attribute_panel.fit_requested.connect(self.fit_slider)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.interpolate_panel, "Interpolate")
        self.tabs.addTab(self.arithmetic_panel, "A − B + C")
        self.tabs.addTab(self.encode_panel, "Encode")
        self.tabs.addTab(self.attribute_panel, "Make a slider")
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

    # -- tasks -----------------------------------------------------------------------------
    def _submit(
        self,
        name: str,
        factory: Any,
        done: Done,
        progress: Callable[[Progress], None] | None = None,
    ) -> Any:
        """Run a task on the worker, or, when it runs the model and the run is training here,
        on the engine thread between steps with the current weights. Returns its handle."""
        handle: Any
        if needs_model(factory) and self.loaded is not None and is_live(self.loaded.path):
            label, options = self._live_settings()
            device = self._settings.device_preference()
            handle = self.live_tasks.submit(name, self.loaded.path, factory, label, options, device)
        else:
            handle = self.worker.submit(name, factory)
            if needs_model(factory):
                self._saved_tasks.add(handle)
        self._callbacks[handle] = (done, progress)
        return handle

    def _on_task_progress(self, handle: Any, report: Progress) -> None:
        callbacks = self._callbacks.get(handle)
        if callbacks is not None and callbacks[1] is not None:
            callbacks[1](report)

    def _on_task_done(self, handle: Any, outcome: Outcome[Any]) -> None:
        done, _ = self._callbacks.pop(handle, (None, None))
        if handle in self._saved_tasks:
            self._saved_tasks.discard(handle)
            if outcome.ok and self.loaded is not None:
                self._note_weights(False, self.loaded.step)
        if handle is self._encode_task:
            self._encode_task = None
            self.encode_panel.set_busy(False)
        if outcome.status is Status.FAILED:
            self.banner.show_message(f"{handle.name}: {outcome.error}", "error")
            if self.loaded is None:  # the run did not open
                self.header.show_run("No run open", "Open a GAN, VAE, flow or diffusion run.")
        elif outcome.ok and done is not None:
            done(outcome.result)

    # -- runs ------------------------------------------------------------------------------
    def choose_run(self) -> None:
        start = str(self.loaded.path.parent if self.loaded else runs_dir())
        folder = QFileDialog.getExistingDirectory(self, "Open a run to explore", start)
        if folder:
            self.open_run(folder)

    def open_run(self, path: str | Path) -> None:
        """Load a run for exploring (on the workspace's worker); a run that cannot be explored
        is shown with the reason."""
        self.worker.cancel_all()
        self.live_tasks.cancel_all()
        self.loaded, self._dirs, self._pca = None, None, None
        self.weights, self._saw_live = None, False
        self.weights_label.clear()
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
            f"{result.display_name} · {result.dim:,}-number latent · {result.resolution} px · "
            f"encodes by {result.encoder} · {result.device}",
        )
        sp = self.slider_panel
        sp.set_classes(result.num_classes)
        self._show_diffusion(result)
        sp.raw_toggle.blockSignals(True)
        sp.raw_toggle.setChecked(False)
        sp.raw_toggle.blockSignals(False)
        self._pca = None
        self._show_directions(None)
        self._set_named(result.named, keep_edit=False)
        if self._tray_run != (result.path, result.dim):
            self.tray.clear_items()  # another run's latents mean nothing here; Reload keeps them
            self._tray_run = (result.path, result.dim)
        self.interpolate_panel.set_frames(None)
        self.encode_panel.set_method(result.can_encode, result.encoder)
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
            self._note_weights(False, result.step)
        self._submit(
            "Find directions",
            tasks.find_directions(self.pca_samples, self.pca_k, result.seed),
            self._on_directions,
            lambda p: sp.method_label.setText(
                f"Finding the principal directions… {p.fraction or 0:.0%}"
            ),
        )
        self.new_attribute_samples()

    def directions_ready(self) -> bool:
        """Whether the principal directions have been found for the open run."""
        return self._pca is not None

    def _on_directions(self, dirs: Any) -> None:
        self._pca = dirs
        self._pca_weights = self.weights_label.text()
        if not self.slider_panel.raw_toggle.isChecked():
            self._show_directions(dirs)

    def _show_directions(self, dirs: Any) -> None:
        """Put ``dirs`` on the sliders, at 0; the current edit is kept in the base latent."""
        self._base = self._base + self._direction_offset()
        self._dirs = dirs
        if dirs is None:
            self.slider_panel.set_directions([], "Finding the principal directions…")
            return
        tips = []
        for i, name in enumerate(dirs.names):
            share = "" if dirs.explained is None else f" ({dirs.explained[i]:.0%} of the variance)"
            tips.append(f"{name}{share}; ±3 standard deviations ({dirs.std[i]:.2f} each)")
        found = f"Found by {dirs.method}."
        if dirs is self._pca and self._pca_weights:
            found += f" {self._pca_weights}."
        self.slider_panel.set_directions(dirs.names, found, tips)

    def _set_named(self, sliders: tuple[Any, ...], keep_edit: bool = True) -> None:
        if keep_edit and self.loaded is not None:
            self._base = self._base + self._named_offset()  # the picture stays; sliders at 0
        self._named = tuple(sliders)
        dim = self.loaded.dim if self.loaded else 0
        self._named_vecs = np.array([s.direction for s in sliders], np.float32).reshape(-1, dim)
        self._named_std = np.array([s.std for s in sliders], np.float32)
        tips = [
            f"Fitted on marked samples; training accuracy {s.accuracy:.0%}" if s.accuracy else ""
            for s in sliders
        ]
        self.slider_panel.set_named([s.name for s in sliders], tips)

    # -- the edited latent -------------------------------------------------------------------
    def current_z(self) -> np.ndarray:
        """The latent the sliders describe now."""
        if self.loaded is None:
            return self._base.copy()
        return (self._base + self._direction_offset() + self._named_offset()).astype(np.float32)

    def _direction_offset(self) -> np.ndarray | float:
        rows = self.slider_panel.rows
        if self._dirs is None or not rows.sliders:
            return 0.0
        return self._dirs.offset(rows.values())

    def _named_offset(self) -> np.ndarray | float:
        if not len(self._named):
            return 0.0
        values = self.slider_panel.named_rows.values()
        return (values * self._named_std) @ self._named_vecs

    def named_slider_names(self) -> list[str]:
        return [s.name for s in self._named]

    def _request_decode(self) -> None:
        if self.loaded is None:
            return
        if is_live(self.loaded.path):  # training right now: its current weights, between steps
            label, options = self._live_settings()
            self.last_request = self.live_decoder.request(
                self.worker.next_request_id(), self.loaded.path, self.current_z(), label,
                self._settings.device_preference(), options,
            )  # fmt: skip
        else:
            self.last_request = self.worker.request_decode(self.current_z())

    def _on_decoded(self, result: DecodeResult) -> None:
        if result.request < self.displayed_request:
            return  # an older answer overtaken by a newer one
        self.displayed_request = result.request
        self.image, self.last_decode_ms = result.array, result.decode_ms
        self.image_view.set_image(result.image)
        self.caption.setText(f"{self._origin_name} · decoded in {result.decode_ms:.1f} ms")
        if result.live:
            self._note_weights(True, result.step)
        elif self.loaded is not None and (self.weights is None or self.weights[0]):
            self._note_weights(False, self.loaded.step)  # back on the saved copy

    def _set_origin(self, z: np.ndarray, name: str) -> None:
        """Make ``z`` the latent the sliders start from, all sliders at 0."""
        self._origin = self._base = np.asarray(z, np.float32).copy()
        self._origin_name = name
        self._zero_sliders()

    def _zero_sliders(self) -> None:
        sp = self.slider_panel
        sp.named_rows.blockSignals(True)
        sp.named_rows.set_values(np.zeros(len(sp.named_rows.sliders)))
        sp.named_rows.blockSignals(False)
        sp.rows.set_values(np.zeros(len(sp.rows.sliders)))  # emits once: one decode

    def reset(self) -> None:
        self._base = self._origin.copy()
        self._zero_sliders()

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
            self._submit(
                "Sample", tasks.prior_sample(seed), lambda z: self._set_origin(z, f"Seed {seed}")
            )

    def _on_raw_toggled(self, raw: bool) -> None:
        if self.loaded is None:
            return
        self._show_directions(self.loaded.raw if raw else self._pca)
        self._request_decode()

    def _on_class_changed(self, index: int) -> None:
        if self.loaded is not None and index >= 0:
            self._submit("Class", tasks.set_label(index), lambda _: self._request_decode())

    # -- the tray ----------------------------------------------------------------------------
    def keep_current(self) -> int:
        """Keep the latent on show in the tray; returns its index."""
        if self.loaded is None or self.image is None:
            return -1
        edited = bool(np.any(self.slider_panel.rows.values())) or bool(
            np.any(self.slider_panel.named_rows.values())
        )
        name = f"{self._origin_name} (edited)" if edited else self._origin_name
        return self.tray.add(LatentItem(name, self.current_z(), self.image))

    def edit_item(self, index: int) -> None:
        item = self.tray.item_at(index)
        if item is not None:
            self._set_origin(item.z, item.name)

    # -- the engine thread and closing ----------------------------------------------------------
    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Stop the workspace's worker thread (cancels its tasks); True once it has stopped."""
        self._callbacks.clear()
        self.live_decoder.shutdown()
        self.live_tasks.cancel_all()
        return self.worker.shutdown(timeout_ms)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        self.shutdown()
        super().closeEvent(event)
