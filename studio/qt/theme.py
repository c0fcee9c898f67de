"""A quiet dark theme: Fusion, a dark palette, and a few named widgets styled.

Dark because the sample grids and plots are the point of the window and read best on it.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

from studio import resources

ACCENT = "#4aa3e8"
PLOT_BACKGROUND = "#16181c"
PLOT_FOREGROUND = "#c8ccd4"

# The style sheet lives in resources/theme.qss (package data: studio.resources) with the other
# static files; "@accent" in it is ACCENT.
STYLESHEET = resources.text("theme.qss").replace("@accent", ACCENT)


def dark_palette() -> QPalette:
    p = QPalette()
    base, window, text = QColor("#1e2126"), QColor("#25282e"), QColor("#dde1e7")
    roles = {
        QPalette.ColorRole.Window: window,
        QPalette.ColorRole.WindowText: text,
        QPalette.ColorRole.Base: base,
        QPalette.ColorRole.AlternateBase: QColor("#2a2e35"),
        QPalette.ColorRole.ToolTipBase: QColor("#31353c"),
        QPalette.ColorRole.ToolTipText: text,
        QPalette.ColorRole.Text: text,
        QPalette.ColorRole.Button: QColor("#2d3138"),
        QPalette.ColorRole.ButtonText: text,
        QPalette.ColorRole.BrightText: QColor("#ff6b6b"),
        QPalette.ColorRole.Highlight: QColor(ACCENT),
        QPalette.ColorRole.HighlightedText: QColor("#0d1117"),
        QPalette.ColorRole.Link: QColor(ACCENT),
        QPalette.ColorRole.PlaceholderText: QColor("#7d838d"),
    }
    for role, colour in roles.items():
        p.setColor(role, colour)
    disabled = QColor("#6b717b")
    for role in (
        QPalette.ColorRole.WindowText,
        QPalette.ColorRole.Text,
        QPalette.ColorRole.ButtonText,
    ):
        p.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    return p


def apply_theme(app: QApplication) -> None:
    """Style ``app``; call before the first plot is created (pyqtgraph reads its options then)."""
    import pyqtgraph as pg

    pg.setConfigOptions(background=PLOT_BACKGROUND, foreground=PLOT_FOREGROUND, antialias=False)
    app.setStyle("Fusion")
    app.setPalette(dark_palette())
    app.setStyleSheet(STYLESHEET)
