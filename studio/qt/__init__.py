"""The desktop window (PySide6). The only layer that imports Qt.

Importing this package is light: torch and the engine modules load lazily, on the engine
thread, so the window shows before torch has finished loading.
"""
