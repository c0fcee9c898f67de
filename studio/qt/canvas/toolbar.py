"""The canvas's tool strip (tools and whole-mask actions) and its options bar (brush sliders,
feather, overlay look).

Both bind to the :class:`~studio.qt.canvas.tools.ToolController` and the view in both
directions: a widget change sets the controller, a controller change (a ``]`` key, say) moves
the widget with its signals blocked, so no update loops back.
"""

from __future__ import annotations

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtGui import QAction, QColor, QKeySequence
from PySide6.QtWidgets import (
    QButtonGroup,
    QColorDialog,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider, QLabeledSlider

from studio.qt.canvas.tools import MAX_SIZE, MIN_SIZE, PressureTarget, Tool, ToolController
from studio.qt.canvas.view import CanvasView

TOOLS = (
    (Tool.BRUSH, "Brush", "B", "Paint the mask (X switches to the eraser)"),
    (Tool.ERASER, "Eraser", "E", "Erase the mask (X switches back to the brush)"),
    (Tool.FILL, "Fill", "G", "Fill the connected area under the click (Alt: clear it)"),
    (Tool.RECT, "Rectangle", "M", "Drag a rectangle into the mask (Alt: cut it out)"),
    (Tool.LASSO, "Lasso", "L", "Draw a freehand outline into the mask (Alt: cut it out)"),
)
MAX_FEATHER = 64


def _tool_button(text: str, tip: str, checkable: bool = False) -> QToolButton:
    button = QToolButton()
    button.setText(text)
    button.setToolTip(tip)
    button.setCheckable(checkable)
    button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
    button.setSizePolicy(
        button.sizePolicy().horizontalPolicy(), button.sizePolicy().verticalPolicy()
    )
    return button


class ToolStrip(QWidget):
    """A column of tool buttons, then Fill all, Clear and Invert."""

    def __init__(self, tools: ToolController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._tools = tools
        self.group = QButtonGroup(self)
        self.group.setExclusive(True)
        self.buttons: dict[Tool, QToolButton] = {}
        column = QVBoxLayout(self)
        column.setContentsMargins(4, 4, 4, 4)
        column.setSpacing(3)
        for tool, text, key, tip in TOOLS:
            button = _tool_button(text, f"{tip} ({key})", checkable=True)
            button.setMinimumWidth(84)
            self.group.addButton(button)
            self.buttons[tool] = button
            button.clicked.connect(lambda _=False, t=tool: tools.set_tool(t))
            column.addWidget(button)
        column.addSpacing(10)
        self.fill_all_button = _tool_button("Fill all", "Mask the whole image")
        self.clear_button = _tool_button("Clear", "Clear the whole mask")
        self.invert_button = _tool_button("Invert", "Swap masked and unmasked")
        self.fill_all_button.clicked.connect(tools.fill_all)
        self.clear_button.clicked.connect(tools.clear)
        self.invert_button.clicked.connect(tools.invert)
        for button in (self.fill_all_button, self.clear_button, self.invert_button):
            button.setMinimumWidth(84)
            column.addWidget(button)
        tools.tool_changed.connect(self._on_tool_changed)
        self._on_tool_changed(tools.tool.value)

    def _on_tool_changed(self, name: str) -> None:
        button = self.buttons[Tool(name)]
        with QSignalBlocker(button):
            button.setChecked(True)


class ToolOptions(QWidget):
    """Brush size, hardness, opacity and pressure; shape mode; feather (a row), and the
    overlay's visibility, colour and opacity (``overlay_box``, placed by the workspace).

    ``feather_changed(radius)`` when the feather radius is changed here.
    """

    feather_changed = Signal(float)

    def __init__(
        self, tools: ToolController, view: CanvasView, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._tools, self._view = tools, view
        self.size_slider = QLabeledSlider(Qt.Orientation.Horizontal)
        self.size_slider.setRange(int(MIN_SIZE), int(MAX_SIZE))
        self.size_slider.setToolTip("Brush diameter in image pixels ([ and ])")
        self.hardness_slider = self._unit_slider("Soft edge (0) to hard edge (1)")
        self.opacity_slider = self._unit_slider("How much one stroke adds to the mask")
        self.pressure_combo = QComboBox()
        self.pressure_combo.setToolTip("What tablet pressure controls (a mouse draws at full)")
        for target, text in (
            (PressureTarget.SIZE, "Pressure: size"),
            (PressureTarget.OPACITY, "Pressure: opacity"),
            (PressureTarget.NONE, "Pressure: off"),
        ):
            self.pressure_combo.addItem(text, target.value)
        self.subtract_button = _tool_button(
            "Subtract", "Fill, rectangle and lasso cut from the mask (Alt flips this)", True
        )
        self.feather_slider = QLabeledSlider(Qt.Orientation.Horizontal)
        self.feather_slider.setRange(0, MAX_FEATHER)
        self.feather_slider.setValue(8)
        self.feather_slider.setToolTip("Blend radius in pixels: how far the result fades in")
        self.feather_button = _tool_button(
            "Preview", "Show the feathered mask: how the result will blend in", True
        )
        self.colour_button = _tool_button("Colour", "The overlay colour")
        self.overlay_slider = self._unit_slider("Overlay opacity")
        self.overlay_slider.setValue(view.overlay_opacity)
        self.overlay_button = _tool_button("Mask", "Show the mask overlay", True)
        self.overlay_button.setChecked(True)

        row = QHBoxLayout(self)
        row.setContentsMargins(4, 2, 4, 2)
        for label, widget, width in (
            ("Size", self.size_slider, 130),
            ("Hardness", self.hardness_slider, 90),
            ("Opacity", self.opacity_slider, 90),
        ):
            widget.setMinimumWidth(width)
            row.addWidget(QLabel(label))
            row.addWidget(widget)
        row.addWidget(self.pressure_combo)
        row.addWidget(self.subtract_button)
        row.addWidget(_separator())
        row.addWidget(QLabel("Feather"))
        self.feather_slider.setMinimumWidth(90)
        row.addWidget(self.feather_slider)
        row.addWidget(self.feather_button)
        row.addStretch(1)

        # The overlay's look goes in a small box the workspace puts under the tool strip,
        # which keeps this bar narrow enough for a laptop screen.
        self.overlay_box = QWidget()
        box = QVBoxLayout(self.overlay_box)
        box.setContentsMargins(4, 4, 4, 4)
        box.setSpacing(3)
        caption = QLabel("Overlay")
        caption.setObjectName("hint")
        box.addWidget(caption)
        self.overlay_button.setMinimumWidth(84)
        self.colour_button.setMinimumWidth(84)
        self.overlay_slider.setFixedWidth(84)
        box.addWidget(self.overlay_button)
        box.addWidget(self.colour_button)
        box.addWidget(self.overlay_slider)

        self.size_slider.valueChanged.connect(lambda v: tools.set_brush(size=v))
        self.hardness_slider.valueChanged.connect(lambda v: tools.set_brush(hardness=v))
        self.opacity_slider.valueChanged.connect(lambda v: tools.set_brush(opacity=v))
        self.pressure_combo.currentIndexChanged.connect(self._on_pressure_chosen)
        self.subtract_button.toggled.connect(self._on_subtract_toggled)
        self.feather_slider.valueChanged.connect(self._on_feather_moved)
        self.feather_button.toggled.connect(self._on_feather_preview_toggled)
        self.colour_button.clicked.connect(self.choose_colour)
        self.overlay_slider.valueChanged.connect(view.set_overlay_opacity)
        self.overlay_button.toggled.connect(self._on_overlay_toggled)
        tools.settings_changed.connect(self._on_settings_changed)
        self._on_settings_changed()
        self._paint_colour_swatch()

    @staticmethod
    def _unit_slider(tip: str) -> QLabeledDoubleSlider:
        slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        slider.setRange(0.0, 1.0)
        slider.setDecimals(2)
        slider.setToolTip(tip)
        return slider

    @property
    def feather(self) -> float:
        return float(self.feather_slider.value())

    def set_feather(self, radius: float) -> None:
        """Follow a feather radius set elsewhere (the inpaint panel) without echoing it."""
        with QSignalBlocker(self.feather_slider):
            self.feather_slider.setValue(round(radius))
        if self.feather_button.isChecked():
            self._view.set_feather_preview(self.feather)

    def set_overlay_colour(self, colour: QColor) -> None:
        self._view.set_overlay_colour(colour)
        self._paint_colour_swatch()

    def choose_colour(self) -> None:
        colour = QColorDialog.getColor(self._view.overlay.colour, self, "Overlay colour")
        if colour.isValid():
            self.set_overlay_colour(colour)

    def _paint_colour_swatch(self) -> None:
        c = self._view.overlay.colour
        self.colour_button.setStyleSheet(f"QToolButton {{ border-left: 12px solid {c.name()}; }}")

    def _on_settings_changed(self) -> None:
        brush = self._tools.brush
        for widget, value in (
            (self.size_slider, round(brush.size)),
            (self.hardness_slider, brush.hardness),
            (self.opacity_slider, brush.opacity),
        ):
            with QSignalBlocker(widget):
                widget.setValue(value)
        with QSignalBlocker(self.pressure_combo):
            self.pressure_combo.setCurrentIndex(
                self.pressure_combo.findData(self._tools.pressure_target.value)
            )

    def _on_pressure_chosen(self, _index: int) -> None:
        self._tools.set_pressure_target(str(self.pressure_combo.currentData()))

    def _on_subtract_toggled(self, checked: bool) -> None:
        self._tools.subtract = checked

    def _on_feather_moved(self, value: int) -> None:
        if self.feather_button.isChecked():
            self._view.set_feather_preview(float(value))
        self.feather_changed.emit(float(value))

    def _on_feather_preview_toggled(self, checked: bool) -> None:
        self._view.set_feather_preview(self.feather if checked else 0.0)

    def _on_overlay_toggled(self, checked: bool) -> None:
        self._view.show_overlay = checked
        self._view.update()


def _separator() -> QFrame:
    line = QFrame()
    line.setFrameShape(QFrame.Shape.VLine)
    line.setFrameShadow(QFrame.Shadow.Sunken)
    return line


def action_button(action: QAction, text: str) -> QToolButton:
    """A button with a fixed short label for ``action``; the action's full text (which for
    Undo names the step) and shortcut go to the tooltip, so the bar never changes width."""
    button = QToolButton()
    button.setText(text)
    button.clicked.connect(action.trigger)

    def sync() -> None:
        button.setEnabled(action.isEnabled())
        keys = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        button.setToolTip(f"{action.text()} ({keys})" if keys else action.text())

    action.changed.connect(sync)
    sync()
    return button
