"""A ``QUndoStack`` in step with the document's own :class:`studio.core.canvas.History`.

The core records every edit *after* applying it (a stroke is painted live), so the Qt command
skips the first ``redo()`` that ``QUndoStack.push`` makes. Undo and redo go through the
document (``doc.undo()`` / ``doc.redo()``), which keeps the core history, its memory budget
and the document's revision counter right; the Qt stack only mirrors it for menus, labels
and shortcuts. When the core history dropped its oldest commands to stay within budget, the
matching Qt commands find nothing to undo and mark themselves obsolete, which removes them.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QKeySequence, QUndoCommand, QUndoStack

from studio.core.canvas import CanvasDocument, Command


class _Mirror(QUndoCommand):
    def __init__(self, doc: CanvasDocument, command: Command) -> None:
        super().__init__(command.text)
        self._doc = doc
        self._applied = True  # the core applied it before it was recorded

    def redo(self) -> None:
        if self._applied:
            self._applied = False  # only the push; every later redo is real
            return
        if not self._doc.redo():
            self.setObsolete(True)

    def undo(self) -> None:
        if not self._doc.undo():
            self.setObsolete(True)


class UndoBridge(QObject):
    """Mirrors one document's history into a QUndoStack; ``record`` each core command.

    ``history_changed`` fires after every push, undo and redo (the workspace refreshes
    labels and the autosave state from it).
    """

    history_changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.stack = QUndoStack(self)
        self._doc: CanvasDocument | None = None
        self.stack.indexChanged.connect(self._on_index_changed)

    def _on_index_changed(self, _index: int) -> None:
        self.history_changed.emit()

    def set_document(self, doc: CanvasDocument | None) -> None:
        """Start over with ``doc`` (its own history, if any, has no Qt mirror: start empty)."""
        self._doc = doc
        if doc is not None:
            doc.end_stroke()
            doc.history.clear()
        self.stack.clear()
        self.history_changed.emit()

    def record(self, command: Command | None) -> None:
        """Mirror a command the document has just applied and recorded (None: no change)."""
        if command is None or self._doc is None:
            return
        self.stack.push(_Mirror(self._doc, command))

    def undo(self) -> None:
        self.commit_stroke()
        self.stack.undo()

    def redo(self) -> None:
        self.commit_stroke()
        self.stack.redo()

    def commit_stroke(self) -> None:
        """Record a stroke still in progress as a command of its own (as the core does)."""
        if self._doc is not None and self._doc.stroking:
            self.record(self._doc.end_stroke())

    def make_actions(self, parent: QObject) -> tuple[QAction, QAction]:
        """Undo and redo actions labelled with the command they act on (Ctrl+Z; Ctrl+Shift+Z
        and Ctrl+Y). Our own actions rather than ``createUndoAction``'s, so that a stroke in
        progress is committed before the stack moves."""
        undo, redo = QAction("Undo", parent), QAction("Redo", parent)
        undo.setShortcuts([QKeySequence("Ctrl+Z")])
        redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        undo.triggered.connect(self.undo)
        redo.triggered.connect(self.redo)

        def refresh() -> None:
            s = self.stack
            undo.setEnabled(s.canUndo())
            redo.setEnabled(s.canRedo())
            undo.setText(f"Undo {s.undoText()}".rstrip())
            redo.setText(f"Redo {s.redoText()}".rstrip())

        self.history_changed.connect(refresh)
        refresh()
        return undo, redo
