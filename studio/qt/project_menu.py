"""File → New project…, Open project…, Save project, Recent projects: the window's projects.

A project (:mod:`studio.core.project`) is a folder with a ``studio-project.json``. Saving
gathers what each workspace shows (the dataset folder and its scan's fingerprint, the Train
run, the canvas document, the Prompt settings, the Compare board, Explore's run and kept
latents) on the GUI thread, which only reads widgets, and writes on the engine thread (an
interactive job, so a training run does not hold it back). Opening reads the manifest and
checks every file it names in a job too, then applies the project to each workspace through
its public methods; what is missing on this computer is named in one message and the rest
opens.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox, QWidget

from studio.core.project import (
    CANVAS_DIR,
    MANIFEST,
    CompareBoard,
    Project,
    ProjectError,
    check_save_target,
    missing_message,
    project_folder,
)
from studio.qt.job_calls import JobCalls

PROJECT_FILTER = f"Studio project ({MANIFEST})"
CANVAS_SUFFIX = ".studio-canvas"


def _canvas_file_name(name: str, folder: Path) -> Path:
    """A new ``.studio-canvas`` path in ``folder`` for a document called ``name``."""
    stem = re.sub(r"[^\w\- ]+", "_", Path(name).stem).strip() or "canvas"
    path, n = folder / f"{stem}{CANVAS_SUFFIX}", 2
    while path.exists():
        path, n = folder / f"{stem} ({n}){CANVAS_SUFFIX}", n + 1
    return path


class ProjectMenu(QObject):
    """The project actions of a :class:`~studio.qt.main_window.MainWindow`'s File menu."""

    def __init__(self, window: Any, menu: QMenu) -> None:
        super().__init__(window)
        self.window = window
        self.project: Project | None = None
        self.message = ""  # the newest thing told the user (for the status bar and tests)
        self._calls = JobCalls(window.runner, self)
        self._canvas_path: Path | None = None  # the .studio-canvas the canvas document is
        self._fingerprint_pending: tuple[str, str] | None = None
        self._box: QMessageBox | None = None
        self.new_action = menu.addAction("New project…")
        self.new_action.triggered.connect(self.new_project)
        self.open_action = menu.addAction("Open project…")
        self.open_action.triggered.connect(self.choose_and_open)
        self.save_action = menu.addAction("Save project")
        self.save_action.triggered.connect(self.save)
        self.canvases_menu = menu.addMenu("Project canvases")
        self.canvases_menu.aboutToShow.connect(self._fill_canvases)
        self.recent_menu = menu.addMenu("Recent projects")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        canvas = window.canvas
        canvas.document_changed.connect(self._on_canvas_document)
        canvas.files.opened.connect(self._on_canvas_read)  # (after document_changed)
        canvas.document_saved.connect(lambda path: setattr(self, "_canvas_path", Path(path)))
        window.dataset_panel.dataset_changed.connect(self._on_dataset_scanned)
        # Explore's run is opened when Explore is first shown (loading a model is no small job).
        self._explore_pending: tuple[Path, list[Any]] | None = None
        window.nav.currentRowChanged.connect(self._on_workspace_shown)

    # -- actions ---------------------------------------------------------------------------
    def new_project(self) -> None:
        """Ask for a new (empty) folder and save what the window shows there as a project."""
        start = str(Path.home() / "Studio projects" / "Untitled project")
        path, _ = QFileDialog.getSaveFileName(self.window, "New project folder", start)
        if not path:
            return
        try:
            folder = check_save_target(path)
        except ProjectError as err:
            self._tell(str(err), warning=True)
            return
        from studio.engine.project_files import save_project_job

        # The folder is claimed by an empty manifest first, so the canvas file written into
        # it next is the project's, then the whole project is saved.
        self._calls.submit(
            f"New project {folder.name}",
            save_project_job(Project(folder=folder), []),
            on_done=lambda _path: self.save_as(folder),
            on_failed=lambda message: self._tell(message, warning=True),
            interactive=True,
        )

    def choose_and_open(self) -> None:
        start = str(self.project.folder.parent if self.project else Path.home())
        path, _ = QFileDialog.getOpenFileName(self.window, "Open a project", start, PROJECT_FILTER)
        if path:
            self.open(path)

    def save(self) -> None:
        """Save into the open project; with none open this is New project."""
        if self.project is None:
            self.new_project()
        else:
            self.save_as(self.project.folder)

    def save_as(self, folder: Path) -> None:
        from studio.engine.project_files import save_project_job

        project, kept = self.gather(folder)
        self._calls.submit(
            f"Save project {folder.name}",
            save_project_job(project, kept),
            on_done=lambda _path: self._saved(project),
            on_failed=lambda message: self._tell(message, warning=True),
            interactive=True,  # a short write: it need not wait for a training run
        )

    def open(self, path: str | Path) -> None:
        """Read the project at ``path`` (its folder or manifest) in a job, then show it."""
        from studio.engine.project_files import open_project_job

        folder = project_folder(path)
        self._status(f"Opening the project {folder.name}…")
        self._calls.submit(
            f"Open project {folder.name}",
            open_project_job(folder),
            on_done=self.apply,
            on_failed=lambda message: self._tell(message, warning=True),
            interactive=True,
        )

    # -- gathering and applying --------------------------------------------------------------
    def gather(self, folder: Path) -> tuple[Project, list[tuple[str, Any, Any]]]:
        """The project the window shows now, to be saved in ``folder``, and the kept latents.

        A canvas document with unsaved edits (or never saved) is saved first: into its own
        file, or a new one in the project's ``canvas`` folder."""
        w = self.window
        old = self.project if self.project is not None else Project(folder=folder)
        # What a workspace does not show (a missing run, say) keeps the project's old value.
        dataset = Path(w.dataset_panel.folder) if w.dataset_panel.folder else old.dataset
        scan = w.dataset_panel.scan_result
        fingerprint = str(getattr(scan, "fingerprint", "") or "")
        if not fingerprint and dataset is not None and dataset == old.dataset:
            fingerprint = old.fingerprint  # a scan still running: the one it was saved with
        explore = w.latent_workspace
        loaded = explore.loaded
        kept = [(i.name, i.z, i.image) for i in explore.edit.kept.items()] if loaded else []
        if self._explore_pending is not None:  # an opened project's, Explore not shown yet
            loaded = None
            kept = [(i.name, i.z, i.image) for i in self._explore_pending[1]]
        state = w.prompt.state
        canvas_docs = [p for p in old.canvas]
        canvas_open = self._save_canvas(folder) or old.canvas_open
        if canvas_open is not None and canvas_open not in canvas_docs:
            canvas_docs.append(canvas_open)
        from studio.engine.prompt.history import history_root

        project = Project(
            folder=folder,
            name=folder.name,
            dataset=dataset,
            fingerprint=fingerprint if dataset is not None else "",
            runs=list(old.runs),
            train_run=w.train_panel.run_path or old.train_run,
            canvas=canvas_docs,
            canvas_open=canvas_open,
            prompt_model=state.model,
            prompt_settings=state.values(),
            prompt_history=history_root(),
            compare=CompareBoard(
                runs=[Path(r) for r in w.compare_panel.runs()] or old.compare.runs,
                seed=w.compare_panel.seed.value(),
                n=w.compare_panel.n.value(),
            ),
            explore_run=loaded.path if loaded is not None else old.explore_run,
            explore_sliders=(
                explore.named_slider_names() if loaded is not None else old.explore_sliders
            ),
            kept_names=[] if loaded is not None or kept else old.kept_names,  # the file stays
        )
        return project, kept

    def _save_canvas(self, folder: Path) -> Path | None:
        canvas = self.window.canvas
        doc = canvas.document
        if doc is None:
            return None
        target = self._canvas_path
        if target is None:
            (folder / CANVAS_DIR).mkdir(parents=True, exist_ok=True)
            target = _canvas_file_name(doc.name, folder / CANVAS_DIR)
        if canvas.has_unsaved_changes() or not target.is_file():
            canvas.save(target)  # written on the canvas's worker; the title marks it clean
            self._canvas_path = target
        return target

    def apply(self, opened: Any) -> None:
        """Show an opened project (a :class:`~studio.engine.project_files.OpenedProject`)."""
        p: Project = opened.project
        missing = {m.path for m in opened.missing}

        def here(path: Path | None) -> bool:
            return path is not None and path not in missing

        w = self.window
        self.project = p
        w.settings.add_recent_project(p.folder)
        w.setWindowTitle(f"{p.name} — Studio")
        if here(p.dataset) and p.dataset != Path(w.dataset_panel.folder or "."):
            self._fingerprint_pending = (str(p.dataset), p.fingerprint)
            w.dataset_panel.set_folder(p.dataset)
        if here(p.train_run) and not w.train_panel.is_training():
            w.train_panel.open_run(p.train_run)
        if here(p.canvas_open):
            w.canvas.open_image(p.canvas_open)
        self._apply_prompt(p)
        self._apply_compare(p.compare, missing)
        self._explore_pending = None
        if here(p.explore_run):
            from studio.qt.latent.edit_state import LatentItem

            items = [LatentItem(name, z, image) for name, z, image in opened.kept]
            self._explore_pending = (p.explore_run, items)
            if w.stack.currentWidget() is w.latent_workspace:
                self._on_workspace_shown(w.EXPLORE)
        text = missing_message(opened.missing)
        if text:
            lines = [f"• {item.kind}: {item.path}" for item in opened.missing]
            self._tell(text, warning=True, box_text=f"{p.name} opened without:", details=lines)
        else:
            self._status(f"Opened the project {p.name}")

    def _apply_prompt(self, p: Project) -> None:
        state = self.window.prompt.state
        if p.prompt_settings:
            state.update(p.prompt_settings)
        if p.prompt_model:
            state.set_model(p.prompt_model)

    def _apply_compare(self, board: CompareBoard, missing: set[Path]) -> None:
        compare = self.window.compare_panel
        if not board.runs or compare.is_busy():
            return
        self.window.keep_compare_board()  # no "newest runs" added on first show
        for panel in list(compare.panels):
            compare.remove_panel(panel)
        for run in board.runs:
            if run not in missing:
                compare.add_run(run)
        if board.seed:
            compare.seed.setValue(board.seed)
        if board.n:
            compare.n.setValue(board.n)

    # -- signals -------------------------------------------------------------------------------
    def _on_canvas_document(self, _doc: Any) -> None:
        self._canvas_path = None  # a new document: a .studio-canvas read says so next

    def _on_canvas_read(self, doc: Any, source: str, _image: Any) -> None:
        """The canvas read ``doc`` from ``source`` (a ``.studio-canvas``, "" for an image)."""
        from studio.engine.canvas_io import autosave_dir

        path = Path(source) if source else None
        if path is not None and path.parent == autosave_dir():
            path = None  # a recovered autosave is no file of the user's or the project's
        if doc is self.window.canvas.document:
            self._canvas_path = path

    def _on_workspace_shown(self, index: int) -> None:
        pending = self._explore_pending
        if index == self.window.EXPLORE and pending is not None:
            self._explore_pending = None
            self.window.latent_workspace.open_run(pending[0], kept=pending[1])

    def _on_dataset_scanned(self, folder: str, _n_images: int) -> None:
        pending, self._fingerprint_pending = self._fingerprint_pending, None
        scan = self.window.dataset_panel.scan_result
        if pending is None or scan is None or pending[0] != folder or not pending[1]:
            return
        if scan.fingerprint != pending[1]:
            self._tell(
                f"The images in {folder} changed since the project was saved (files added, "
                "removed or edited): its runs were trained on the earlier set.",
                warning=False,
            )

    def _saved(self, project: Project) -> None:
        self.project = project
        self.window.settings.add_recent_project(project.folder)
        self.window.setWindowTitle(f"{project.name} — Studio")
        self._status(f"Saved the project {project.name} ({project.folder})")

    def _fill_canvases(self) -> None:
        """The open project's canvas documents: choosing one opens it on the Canvas."""
        self.canvases_menu.clear()
        docs = list(self.project.canvas) if self.project is not None else []
        if not docs:
            self.canvases_menu.addAction("No canvases in the project").setEnabled(False)
        for doc in docs:
            action = self.canvases_menu.addAction(doc.name)
            action.setToolTip(str(doc))
            action.triggered.connect(lambda _=False, d=doc: self.open_canvas(d))

    def open_canvas(self, path: Path) -> None:
        self.window.show_workspace(self.window.CANVAS)
        self.window.canvas.open_image(path)  # a missing file: the canvas's banner says so

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        items = self.window.settings.recent_projects()
        if not items:
            self.recent_menu.addAction("No recent projects").setEnabled(False)
        for item in items:
            action = self.recent_menu.addAction(item)
            action.triggered.connect(lambda _=False, f=item: self.open(f))

    # -- telling the user ----------------------------------------------------------------------
    def _status(self, text: str) -> None:
        self.message = text
        self.window.statusBar().showMessage(text, 10_000)

    def _tell(
        self, text: str, warning: bool, box_text: str = "", details: list[str] | None = None
    ) -> None:
        """A message box that does not block (the window keeps working), and the status bar;
        ``details`` are listed one a line under ``box_text`` in the box."""
        self._status(text)
        if self._box is not None:
            self._box.close()
        icon = QMessageBox.Icon.Warning if warning else QMessageBox.Icon.Information
        parent: QWidget = self.window
        ok = QMessageBox.StandardButton.Ok
        self._box = QMessageBox(icon, "Project", box_text or text, ok, parent)
        if details:
            self._box.setInformativeText(
                "\n".join(details) + "\n\nThe rest of the project is open; "
                "copy what is missing back, or keep working without it."
            )
        self._box.open()
