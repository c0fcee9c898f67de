"""A scrubber over a run's sample grids: drag back through training, "Live" follows the newest.

Grids come from two places: the training job hands each new one over in memory, and the run's
``samples/step_N.png`` files (listed by the run watcher). Decoded grids are kept in a small
cache (bounded in bytes); a grid not in it is decoded on the reader's worker thread, never in
a slot. While the slider is dragged only the newest wanted step is decoded next (latest wins),
so a fast drag never builds a backlog.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QToolButton, QVBoxLayout, QWidget

from studio.qt.imaging import numpy_to_qimage
from studio.qt.run_watch import BackgroundReader
from studio.qt.widgets import ImageView

CACHE_BYTES = 96 * 2**20


def decode_png(path: Path) -> QImage:
    """A sample grid file as a QImage (runs on the worker thread; QImage is not a widget)."""
    from studio.engine.images import open_checked

    # Only a regular PNG within the pixel limit, the bomb warning an error.
    with open_checked(path, formats=("PNG",)) as img:
        return numpy_to_qimage(np.asarray(img.convert("RGB"), dtype=np.uint8))


class SampleTimeline(QWidget):
    """Caption, the grid, and a slider over the steps that have one.

    ``step_shown(step)`` fires whenever a grid is put on screen.
    """

    step_shown = Signal(int)

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._steps: list[int] = []
        self._paths: dict[int, Path] = {}
        self._cache: OrderedDict[int, QImage] = OrderedDict()
        self._cache_bytes = 0
        self._wanted: int | None = None
        self._shown: int | None = None
        self._loading: tuple[int, int] | None = None  # (ticket, step) of the decode in flight
        self._live = True
        self.reader = BackgroundReader(self)
        self.reader.finished.connect(self._on_decoded)

        self.caption = QLabel("Samples")
        self.caption.setObjectName("caption")
        self.view = ImageView(placeholder)
        self.live_button = QToolButton()
        self.live_button.setText("Live")
        self.live_button.setCheckable(True)
        self.live_button.setChecked(True)
        self.live_button.setToolTip("Follow the newest sample grid as training goes on")
        self.live_button.toggled.connect(self.set_live)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setEnabled(False)
        self.slider.setToolTip("Scrub through the sample grids saved during training")
        self.slider.valueChanged.connect(self._on_slider)
        self.position_label = QLabel("")
        self.position_label.setObjectName("caption")
        self.position_label.setMinimumWidth(70)
        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.live_button)
        bar.addWidget(self.slider, 1)
        bar.addWidget(self.position_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addLayout(bar)  # right under the caption: the grid is drawn from the top
        layout.addWidget(self.view, 1)

    # -- inputs ----------------------------------------------------------------------------
    def clear(self) -> None:
        self._steps, self._paths = [], {}
        self._cache.clear()
        self._cache_bytes = 0
        self._wanted = self._shown = None
        self._loading = None  # an answer still on its way is dropped
        self._sync_slider()
        self.view.set_image(None)
        self.caption.setText("Samples")
        self.set_live(True)

    def set_samples(self, samples: list[tuple[int, Path]]) -> None:
        """The grids on disk (``(step, path)``); new steps join the slider."""
        added = False
        for step, path in samples:
            self._paths[step] = Path(path)
            added |= self._add_step(step)
        if added:
            self._after_new_steps()

    def add_image(self, step: int | None, image: np.ndarray | QImage) -> None:
        """A grid the training job has just made (already in memory)."""
        qimage = image.copy() if isinstance(image, QImage) else numpy_to_qimage(image)
        if step is None:  # a grid with no step: show it, outside the timeline
            self._shown = None
            self.view.set_image(qimage)
            self.caption.setText("Samples")
            return
        self._remember(step, qimage)
        self._add_step(step)
        self._after_new_steps(force=step == self._wanted)

    def set_live(self, live: bool) -> None:
        self._live = bool(live)
        if self.live_button.isChecked() != self._live:
            self.live_button.blockSignals(True)
            self.live_button.setChecked(self._live)
            self.live_button.blockSignals(False)
        if self._live and self._steps:
            self.show_step(self._steps[-1])

    def show_step(self, step: int) -> None:
        """Move the slider to ``step`` (the nearest step with a grid) and show its grid."""
        if not self._steps:
            return
        index = min(bisect.bisect_left(self._steps, step), len(self._steps) - 1)
        if self.slider.value() != index:
            self.slider.setValue(index)  # -> _on_slider
        else:
            self._want(self._steps[index])

    # -- reading ---------------------------------------------------------------------------
    def steps(self) -> list[int]:
        return list(self._steps)

    def current_step(self) -> int | None:
        """The step whose grid is on screen."""
        return self._shown

    def is_live(self) -> bool:
        return self._live

    def cached_steps(self) -> list[int]:
        return list(self._cache)

    # -- internals -------------------------------------------------------------------------
    def _add_step(self, step: int) -> bool:
        index = bisect.bisect_left(self._steps, step)
        if index < len(self._steps) and self._steps[index] == step:
            return False
        self._steps.insert(index, step)
        return True

    def _after_new_steps(self, force: bool = False) -> None:
        self._sync_slider()
        if self._live:
            self.show_step(self._steps[-1])
        elif self._wanted is not None:
            self.show_step(self._wanted)  # keep the chosen grid; only the slider moved
        if force and self._wanted is not None:
            self._want(self._wanted)

    def _sync_slider(self) -> None:
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, len(self._steps) - 1))
        if self._wanted is not None and self._wanted in self._steps:
            self.slider.setValue(self._steps.index(self._wanted))
        self.slider.blockSignals(False)
        self.slider.setEnabled(len(self._steps) > 1)
        self._update_position()

    def _update_position(self) -> None:
        if not self._steps:
            self.position_label.setText("")
            return
        self.position_label.setText(f"{self.slider.value() + 1} / {len(self._steps)}")

    def _on_slider(self, index: int) -> None:
        if not self._steps:
            return
        index = min(max(index, 0), len(self._steps) - 1)
        # Moving back leaves live mode; reaching the newest grid again re-enters it.
        live = index == len(self._steps) - 1
        if live != self._live:
            self._live = live
            self.live_button.blockSignals(True)
            self.live_button.setChecked(live)
            self.live_button.blockSignals(False)
        self._update_position()
        self._want(self._steps[index])

    def _want(self, step: int) -> None:
        self._wanted = step
        image = self._cache.get(step)
        if image is not None:
            self._cache.move_to_end(step)
            self._show(step, image)
            return
        self.caption.setText(f"Samples at step {step:,} (loading…)")
        self._load_next()

    def _load_next(self) -> None:
        step = self._wanted
        if self._loading is not None or step is None or step in self._cache:
            return
        path = self._paths.get(step)
        if path is None:
            self.caption.setText(f"Samples at step {step:,}: no file")
            return
        self._loading = (self.reader.submit(lambda: decode_png(path)), step)

    def _on_decoded(self, ticket: int, image: Any, error: BaseException | None) -> None:
        if self._loading is None or self._loading[0] != ticket:
            return
        step = self._loading[1]
        self._loading = None
        if error is not None or not isinstance(image, QImage):
            if step == self._wanted:
                self.caption.setText(f"Samples at step {step:,} could not be read: {error}")
        else:
            self._remember(step, image)
            if step == self._wanted:
                self._show(step, image)
        if self._wanted is not None and self._wanted not in self._cache and self._wanted != step:
            self._load_next()  # the slider moved on while this one decoded

    def _remember(self, step: int, image: QImage) -> None:
        old = self._cache.pop(step, None)
        if old is not None:
            self._cache_bytes -= old.sizeInBytes()
        self._cache[step] = image
        self._cache_bytes += image.sizeInBytes()
        while self._cache_bytes > CACHE_BYTES and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cache_bytes -= dropped.sizeInBytes()

    def _show(self, step: int, image: QImage) -> None:
        self.view.set_image(image)
        self._shown = step
        self.caption.setText(f"Samples at step {step:,}")
        self.step_shown.emit(step)
