"""Stylize… on the Canvas: repaint the image (or its masked region) in the style of another
image, with neural style transfer (:mod:`studio.engine.stylize`).

:class:`StylizeDialog` asks for the style image, the VGG-19 weights file (remembered in the
app settings; the dialog says where to download it), the weights, the steps, the size and the
area. :class:`StylizePanel` submits the job to the engine thread, shows its live preview and
progress, and hands the finished image to the staging strip like an inpainting variation, so
Accept is one undoable step and Discard leaves the canvas as it was. Cancel drops the job's
work; Finish now keeps the image so far and stages it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PySide6.QtCore import Qt, SignalInstance
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from studio.core.canvas import CanvasDocument
from studio.core.jobs import CancelToken, Progress
from studio.core.stylize import INITS, MAX_SIZE, MAX_STEPS, MIN_SIZE, WEIGHTS_URL, StyleSettings
from studio.qt.canvas.files import IMAGE_FILTER
from studio.qt.canvas.job_panel import CanvasJobPanel
from studio.qt.canvas.jobs import thumbnail
from studio.qt.engine_thread import JobRunner
from studio.qt.settings import AppSettings
from studio.qt.widgets import ImageView

VGG_FILTER = "VGG-19 weights (*.pth *.safetensors);;All files (*)"
VGG_KEY, STYLE_KEY, SETTINGS_KEY = "stylize/vgg", "stylize/style", "stylize/settings"
AREAS = (("whole", "Whole image"), ("masked", "Masked region only (feathered)"))
INIT_LABELS = {"content": "The image itself", "noise": "Random noise"}


@dataclass(frozen=True)
class StylizeChoice:
    """What the dialog asked for: the two files, the settings and whether only the mask."""

    style_path: str
    vgg_path: str
    settings: StyleSettings
    masked: bool


@dataclass(frozen=True)
class StylizedImage:
    """A finished style transfer for the staging strip (the fields the Stager reads)."""

    accept_text: ClassVar[str] = "Accept style transfer"
    images: list[np.ndarray]
    thumbnails: list[np.ndarray]
    seed: int | None
    weights_text: str


def stylize(
    image: np.ndarray,
    mask: np.ndarray | None,
    feather: float,
    choice: StylizeChoice,
    device: str = "auto",
) -> Callable[[CancelToken], Generator[Progress, None, StylizedImage]]:
    """A factory for one job (runs on the engine thread): read the style image, stylise a
    private copy of ``image`` whole (``mask`` None) or the window around the mask, blended
    through the feathered mask."""

    def factory(token: CancelToken) -> Generator[Progress, None, StylizedImage]:
        from studio.core.errors import StudioError
        from studio.engine.images import ImageRejected, open_image
        from studio.engine.stylize import cached_vgg, stylize_canvas_job

        try:
            style = np.asarray(open_image(choice.style_path), dtype=np.uint8)
        except ImageRejected as err:
            raise StudioError(f"Cannot read the style image: {err}") from None
        yield Progress("load", message="Loading VGG-19…")
        vgg = cached_vgg(choice.vgg_path, device)
        job = stylize_canvas_job(image, mask, feather, style, choice.settings, vgg, device, token)
        out, result = yield from job
        token.check()
        h, w = out.shape[:2]
        s = choice.settings
        done = f"stopped at {result.steps_done}" if result.stopped_early else f"{s.steps}"
        text = f"Style transfer: {done} iterations at {s.size} px, style weight {s.style_weight:g}"
        seed = s.seed if s.init == "noise" else None
        return StylizedImage([out], [thumbnail(out, (0, h, 0, w))], seed, text)

    return factory


class StylizeDialog(QDialog):
    """Asks for a style transfer's files and settings; remembers them in ``settings``."""

    def __init__(
        self, settings: AppSettings, has_mask: bool, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Stylize")
        self._settings = settings
        last = _last_settings(settings)
        self.style_edit = QLineEdit(str(settings.value(STYLE_KEY, "") or ""))
        self.style_edit.setPlaceholderText("The image whose style to take")
        self.vgg_edit = QLineEdit(str(settings.value(VGG_KEY, "") or ""))
        self.vgg_edit.setPlaceholderText("vgg19-dcbb9e9d.pth")
        where = QLabel(
            f"VGG-19 weights: torchvision's file, downloaded once by you from "
            f'<a href="{WEIGHTS_URL}">{WEIGHTS_URL}</a> (548 MB), or a .safetensors copy. '
            "Studio downloads nothing; a .pth is read in restricted weights-only mode, which "
            "refuses anything but tensors."
        )
        where.setObjectName("hint")
        where.setWordWrap(True)
        where.setOpenExternalLinks(True)
        where.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.steps_spin = _spin(1, MAX_STEPS, last.steps)
        self.size_spin = _spin(MIN_SIZE, MAX_SIZE, last.size, " px")
        self.size_spin.setToolTip("Working size (longer side); larger is slower and needs memory")
        self.content_spin = _weight(last.content_weight)
        self.style_spin = _weight(last.style_weight)
        self.tv_spin = _weight(last.tv_weight)
        self.tv_spin.setToolTip("Total variation: higher is smoother")
        self.init_combo = QComboBox()
        for key in INITS:
            self.init_combo.addItem(INIT_LABELS.get(key, key), key)
        self.init_combo.setCurrentIndex(max(0, self.init_combo.findData(last.init)))
        self.area_combo = QComboBox()
        for key, text in AREAS:
            self.area_combo.addItem(text, key)
        if has_mask:
            self.area_combo.setCurrentIndex(1)
        else:  # nothing painted: the masked area would be empty
            self.area_combo.model().item(1).setEnabled(False)
        self.problem = QLabel()
        self.problem.setObjectName("status")
        self.problem.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Style image", _with_browse(self.style_edit, self._browse_style))
        form.addRow("VGG-19 file", _with_browse(self.vgg_edit, self._browse_vgg))
        form.addRow(where)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Size", self.size_spin)
        form.addRow("Content weight", self.content_spin)
        form.addRow("Style weight", self.style_spin)
        form.addRow("TV weight", self.tv_spin)
        form.addRow("Start", self.init_combo)
        form.addRow("Area", self.area_combo)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Stylize")
        self.buttons.accepted.connect(self._on_ok)
        self.buttons.rejected.connect(self.reject)
        column = QVBoxLayout(self)
        column.addLayout(form)
        column.addWidget(self.problem)
        column.addWidget(self.buttons)
        self.setMinimumWidth(480)

    def choice(self) -> StylizeChoice:
        return StylizeChoice(
            self.style_edit.text().strip(),
            self.vgg_edit.text().strip(),
            StyleSettings(
                steps=self.steps_spin.value(),
                content_weight=self.content_spin.value(),
                style_weight=self.style_spin.value(),
                tv_weight=self.tv_spin.value(),
                size=self.size_spin.value(),
                init=str(self.init_combo.currentData()),
            ),
            self.area_combo.currentData() == "masked",
        )

    def check(self) -> str:
        """What is wrong with the choice ("" when nothing): said in the dialog, before a job."""
        from studio.core.errors import StudioError

        c = self.choice()
        if not c.style_path or not Path(c.style_path).is_file():
            return "Choose the style image (an image file)."
        if not c.vgg_path or not Path(c.vgg_path).expanduser().is_file():
            return f"Choose the VGG-19 weights file; download it once from {WEIGHTS_URL}."
        try:
            c.settings.check()
        except StudioError as err:
            return str(err)
        return ""

    def _on_ok(self) -> None:
        problem = self.check()
        self.problem.setText(problem)
        if problem:
            return
        c = self.choice()
        self._settings.set_value(STYLE_KEY, c.style_path)
        self._settings.set_value(VGG_KEY, c.vgg_path)
        self._settings.set_value(SETTINGS_KEY, json.dumps(asdict(c.settings)))
        self.accept()

    def _browse_style(self) -> None:
        start = str(Path(self.style_edit.text()).parent) if self.style_edit.text() else ""
        path, _ = QFileDialog.getOpenFileName(self, "Choose the style image", start, IMAGE_FILTER)
        if path:
            self.style_edit.setText(path)

    def _browse_vgg(self) -> None:
        start = str(Path(self.vgg_edit.text()).parent) if self.vgg_edit.text() else ""
        path, _ = QFileDialog.getOpenFileName(self, "Choose the VGG-19 weights", start, VGG_FILTER)
        if path:
            self.vgg_edit.setText(path)


def _last_settings(settings: AppSettings) -> StyleSettings:
    """The settings last used (defaults for anything missing or unreadable)."""
    try:
        saved = json.loads(str(settings.value(SETTINGS_KEY, "") or "{}"))
    except ValueError:
        saved = None
    if not isinstance(saved, dict):
        return StyleSettings()
    defaults = asdict(StyleSettings())
    values = {}
    for key, default in defaults.items():
        try:
            values[key] = type(default)(saved.get(key, default))
        except (TypeError, ValueError):
            values[key] = default
    try:
        result = StyleSettings(**values)
        result.check()
    except Exception:  # noqa: BLE001 - stale settings fall back to the defaults
        return StyleSettings()
    return result


def _spin(low: int, high: int, value: int, suffix: str = "") -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setSuffix(suffix)
    return spin


def _weight(value: float) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setDecimals(4)
    spin.setRange(0.0, 1e12)
    spin.setValue(value)
    return spin


def _with_browse(edit: QLineEdit, browse: Callable[[], None]) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit, 1)
    button = QPushButton("Browse…")
    button.clicked.connect(browse)
    layout.addWidget(button)
    return row


class StylizePanel(CanvasJobPanel):
    """The Stylize… button, the running job's progress and live preview, Finish now, Cancel
    (the job's handling is :class:`~studio.qt.canvas.job_panel.CanvasJobPanel`'s).

    ``stylized(result, doc, image_revision)`` (``finished``): a job finished (or was finished
    early) for ``doc`` as it was then.
    """

    failed_message = "Style transfer failed."

    def __init__(
        self,
        runner: JobRunner,
        settings: AppSettings,
        document: Callable[[], CanvasDocument | None],
        feather: Callable[[], float],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Style transfer", runner, settings, document, feather, parent)
        self.stylize_button = QPushButton("Stylize…")
        self.stylize_button.setToolTip(
            "Repaint the image, or its masked region, in the style of another image"
        )
        self.stylize_button.clicked.connect(self.open_dialog)
        self.finish_button = QPushButton("Finish now")
        self.finish_button.setToolTip("Stop after this iteration and stage the image so far")
        self.finish_button.clicked.connect(self.finish_now)
        buttons = self.job_controls(self.stylize_button, self.finish_button)
        self.preview = ImageView("The image appears here while it is stylized")
        self.preview.setMinimumSize(160, 120)
        self.preview.setMaximumHeight(240)
        column = QVBoxLayout(self)
        column.addWidget(self.banner)
        column.addLayout(buttons)
        column.addWidget(self.progress)
        column.addWidget(self.status_label)
        column.addWidget(self.preview)
        self._update_controls()

    @property
    def stylized(self) -> SignalInstance:
        """``finished`` under the name the workspace connects."""
        return self.finished

    def open_dialog(self) -> bool:
        """Ask for the settings (modal) and start; False when nothing was started."""
        doc = self._document()
        if self._job is not None:
            return False
        if doc is None:
            self.banner.show_message("Open an image on the canvas first.")
            return False
        dialog = StylizeDialog(self._settings, bool((doc.mask > 0).any()), self)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return False
        return self.start(dialog.choice())

    def start(self, choice: StylizeChoice) -> bool:
        """Submit a style transfer of the current document; False (with a banner) if not."""
        doc = self._document()
        if self._job is not None or doc is None:
            return False
        mask = doc.mask.copy() if choice.masked else None
        if mask is not None and not (mask > 0).any():
            self.banner.show_message("No mask painted: paint the region to stylize first.")
            return False
        self.banner.clear()
        device = self._settings.device_preference()
        factory = stylize(doc.image.copy(), mask, self._feather(), choice, device)
        self.preview.set_image(None)
        self.submit(doc, f"Stylize after {Path(choice.style_path).name}", factory)
        return True

    def finish_now(self) -> None:
        if self._job is not None:
            self._job.token.stop()
            self.status_label.setText("Finishing after this iteration…")

    def progress_text(self, progress: Progress) -> str:
        loss = progress.metrics.get("total")
        loss_text = f", loss {loss:.4g}" if loss is not None else ""
        return f"Stylizing: iteration {progress.step:,} / {progress.total:,}{loss_text}"

    def _on_progress(self, progress: Progress, image: Any, points: Any) -> None:
        super()._on_progress(progress, image, points)
        if image is not None and self._job_doc is self._document():
            self.preview.set_image(image)

    def _update_controls(self, *_: Any) -> None:
        super()._update_controls()
        running = self._job is not None
        self.stylize_button.setEnabled(not running)
        self.finish_button.setEnabled(running)
