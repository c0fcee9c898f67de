"""The metrics plot's controls and plot widgets: the bar above the plots (smoothing, what the lower
plot shows, the Log and Normalise switches, "Overlay runs…") and one pyqtgraph plot set up for
fast repaints.

The bar only reports what the user did (``smoothing_settled``, ``group_picked``,
``log_toggled``, ``normalise_toggled``, ``overlay_requested``); the plot (``plot.py``) decides what follows and tells the bar what to
show, so no widget reads another's state.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QPainter, QPicture
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGraphicsItem,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QWidget,
)

from studio.qt import plot_curves

SMOOTHING_DEBOUNCE_MS = 120  # a slider drag recomputes the smoothing once it pauses
# A repaint's cost is mostly stroking the curves and, when an axis changes, its grid lines
# (benchmarks/plot_points.py --paint; docs/performance.md). The grid keeps two tick levels:
# pyqtgraph's third adds ~40 near-invisible lines (alpha 5-12) per axis, most of an axis's
# redraw. The benchmark sets these constants back to compare.
GRID_TICK_LEVELS = 1  # pyqtgraph's maxTickLevel: 0 major, 1 minor, 2 the faint third level


def make_plot(title: str) -> pg.PlotWidget:
    """One plot of the metrics view: titled, gridded, a step axis, an (empty) legend."""
    widget = pg.PlotWidget()
    widget.setMinimumHeight(90)
    item = widget.getPlotItem()
    item.setTitle(title, size="9pt")
    if plot_curves.PYQTGRAPH_DECIMATION:  # (PlotItem.addItem hands these to every curve)
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
    item.showGrid(x=True, y=True, alpha=0.15)
    item.setLabel("bottom", "step")
    for axis in item.axes.values():
        # Axes change rarely (the view range is ours), but painting their grid lines and
        # text is the dearest part of a repaint; a pixmap cache replays it, invalidated on
        # change.
        axis["item"].setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        axis["item"].setStyle(maxTickLevel=GRID_TICK_LEVELS)
    measure_tick_text(item)
    # A translucent box, so the legend stays readable where it covers a curve.
    item.addLegend(
        offset=(-8, 8),
        labelTextSize="8pt",
        verSpacing=-6,
        brush=pg.mkBrush(20, 22, 26, 210),
        pen=pg.mkPen(60, 64, 72),
    )
    return widget


def measure_tick_text(item: pg.PlotItem) -> None:
    """Size the value axis of ``item`` for its tick labels now. pyqtgraph measures them when
    it paints the axis and, when their width changed (its first guess is 30 px), resizes the
    axis and repaints the whole plot a turn later, where that paint can land in the same turn
    as the other plot's. Measured before the paint (when built, and when the value range
    moves) and laid out at once, the plot paints once (this costs ~1 ms; a paint, 5-15 ms)."""
    axis = item.getAxis("left")
    picture = QPicture()
    painter = QPainter(picture)
    try:
        if axis.style["tickFont"]:
            painter.setFont(axis.style["tickFont"])
        axis.generateDrawSpecs(painter)  # (resizes the axis if the labels' width changed)
    finally:
        painter.end()
    item.layout.activate()


class PlotControls(QWidget):
    """Smoothing slider (debounced), the lower plot's group selector, Log and Normalise,
    "Overlay runs…"."""

    smoothing_settled = Signal(float)  # the slider came to rest at this weight
    group_picked = Signal(str)  # the user chose a group in the selector
    overlay_requested = Signal()
    log_toggled = Signal(bool)  # the Log switch: a logarithmic value axis
    normalise_toggled = Signal(bool)  # the Normalise switch: each curve over its median

    def __init__(self, weight: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._smooth_timer = QTimer(self)
        self._smooth_timer.setSingleShot(True)
        self._smooth_timer.setInterval(SMOOTHING_DEBOUNCE_MS)
        self._smooth_timer.timeout.connect(self._on_smoothing_rested)

        self.smoothing_slider = QSlider(Qt.Orientation.Horizontal)
        self.smoothing_slider.setRange(0, 99)
        self.smoothing_slider.setValue(round(weight * 100))
        self.smoothing_slider.setMaximumWidth(140)
        self.smoothing_slider.setToolTip(
            "Weight of the moving average drawn over the faint raw values (0: raw only)"
        )
        self.smoothing_label = QLabel(f"{weight:.2f}")
        self.smoothing_label.setMinimumWidth(30)
        self.smoothing_slider.valueChanged.connect(self._on_smoothing_moved)
        self.group_box = QComboBox()
        self.group_box.setToolTip("What the lower plot shows")
        self.group_box.setMinimumContentsLength(12)
        self.group_box.currentTextChanged.connect(self.group_picked)
        self.log_box = QCheckBox("Log")
        self.log_box.setToolTip("A logarithmic value axis (shows positive values only)")
        self.log_box.toggled.connect(self.log_toggled)
        self.normalise_box = QCheckBox("Normalise")
        self.normalise_box.setToolTip(
            "Draw each curve divided by its median, so curves of very different sizes (a "
            "reconstruction loss of 50,000 beside a KL of 10) share a plot; the legend's "
            "values are then relative"
        )
        self.normalise_box.toggled.connect(self.normalise_toggled)
        self.overlay_button = QPushButton("Overlay runs…")
        self.overlay_button.setToolTip("Draw other runs' metrics of the same names for comparison")
        self.overlay_button.clicked.connect(self.overlay_requested)
        bar = QHBoxLayout(self)
        bar.setContentsMargins(4, 0, 4, 0)
        bar.addWidget(QLabel("Smoothing"))
        bar.addWidget(self.smoothing_slider)
        bar.addWidget(self.smoothing_label)
        bar.addSpacing(12)
        bar.addWidget(QLabel("Below:"))
        bar.addWidget(self.group_box)
        bar.addSpacing(12)
        bar.addWidget(self.log_box)
        bar.addWidget(self.normalise_box)
        bar.addStretch(1)
        bar.addWidget(self.overlay_button)

    def set_smoothing(self, weight: float) -> None:
        """Move the slider to ``weight`` without a ``smoothing_settled`` (the caller applies it)."""
        self.smoothing_slider.setValue(round(weight * 100))  # label follows
        self._smooth_timer.stop()

    def show_switches(self, log: bool, normalised: bool) -> None:
        """Tick the Log and Normalise switches (no signals: the caller applies them)."""
        for box, on in ((self.log_box, log), (self.normalise_box, normalised)):
            box.blockSignals(True)
            box.setChecked(on)
            box.blockSignals(False)

    def show_groups(self, groups: list[str], current: str) -> None:
        """The selector's entries, ``current`` selected (no ``group_picked``)."""
        self.group_box.blockSignals(True)
        self.group_box.clear()
        self.group_box.addItems(groups)
        self.group_box.setCurrentText(current)
        self.group_box.blockSignals(False)
        self.group_box.setEnabled(bool(groups))

    def _on_smoothing_moved(self, value: int) -> None:
        self.smoothing_label.setText(f"{value / 100:.2f}")
        self._smooth_timer.start()

    def _on_smoothing_rested(self) -> None:
        self.smoothing_settled.emit(self.smoothing_slider.value() / 100)
