"""A quiet dark theme: Fusion, a dark palette, and a few named widgets styled.

Dark because the sample grids and plots are the point of the window and read best on it.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

ACCENT = "#4aa3e8"
PLOT_BACKGROUND = "#16181c"
PLOT_FOREGROUND = "#c8ccd4"

STYLESHEET = f"""
QListWidget#nav {{
    background: #1a1c20; border: none; border-right: 1px solid #2b2f36;
    font-size: 11pt; padding-top: 8px; outline: 0;
}}
QListWidget#nav::item {{ padding: 10px 16px; color: #aeb3bc; }}
QListWidget#nav::item:hover {{ background: #23262c; }}
QListWidget#nav::item:selected {{
    background: #2a303b; color: #ffffff; border-left: 3px solid {ACCENT};
}}
QLabel#headline {{ font-size: 12pt; font-weight: 600; }}
QLabel#hint, QLabel#caption {{ color: #9aa0aa; }}
QLabel#status {{ color: #d6dae0; padding: 2px 0; }}
QLabel#folderLabel {{ color: #9aa0aa; padding-left: 8px; }}
QGroupBox {{
    font-weight: 600; border: 1px solid #2f333a; border-radius: 6px;
    margin-top: 14px; padding: 8px 6px 6px 6px;
}}
QGroupBox::title {{ subcontrol-origin: margin; left: 10px; padding: 0 4px; }}
QPushButton {{ padding: 5px 12px; }}
QToolButton {{ padding: 4px 10px; }}
QToolButton::menu-indicator {{ image: none; width: 0; }}
QPushButton#primary {{ background: #2f6fb0; color: white; font-weight: 600; border-radius: 4px; }}
QPushButton#primary:hover {{ background: #3a80c6; }}
QPushButton#primary:disabled {{ background: #2a2f38; color: #6b717b; }}
QFrame#banner {{ border-radius: 5px; }}
QFrame#banner[level="error"] {{ background: #4f2226; border: 1px solid #a8444a; }}
QFrame#banner[level="warning"] {{ background: #4d4020; border: 1px solid #a8893a; }}
QFrame#banner[level="info"] {{ background: #1f3a52; border: 1px solid #3f6f96; }}
QPlainTextEdit#log {{ font-family: monospace; font-size: 9pt; }}
"""


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
