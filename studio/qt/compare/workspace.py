"""The Compare workspace: up to six runs of one dataset side by side.

Regenerate submits :func:`studio.engine.compare.compare_job` to the engine thread; each panel
fills in as its run finishes (the job's ``"panel"`` reports, each with a
:class:`~studio.engine.compare.PanelDone` payload, are kept, not coalesced), and the report from
the finished job is what Export writes. Every job goes through :class:`JobCalls`, with the
callbacks of its kind (the comparison, a step of a live chain, the export, finding runs). Nothing here samples or scores: the GUI
thread only shows what the engine measured.

When a run in the comparison is training in this window, waiting for the engine would mean
waiting for the training to end. Regenerate then runs the comparison as a chain of short
interactive jobs between training steps instead (:class:`_LiveChain`): prepare (dataset and
feature extractor), one job per panel (a training run sampled with its current weights,
:func:`studio.engine.peek.compare_panel_peek`, the others from their files), then the report.
Each panel says which step's weights it shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from studio.core.jobs import Progress, Stage
from studio.engine.compare_report import PanelDone  # numpy only: the finished-panel payload
from studio.engine.live import is_live  # no torch: which runs train in this process
from studio.qt.compare import jobs
from studio.qt.compare.panel import ComparePanel, NearestDialog
from studio.qt.engine_jobs import known_family
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.job_calls import JobCalls
from studio.qt.settings import AppSettings
from studio.qt.widgets import Banner

MAX_PANELS = 6


@dataclass
class _LiveChain:
    """A comparison run as interactive jobs: its prep, then the panels done so far."""

    settings: dict[str, Any]
    prep: Any = None  # studio.engine.compare.ComparePrep once prepared
    panels: list[Any] = field(default_factory=list)  # PanelResults, in order
    notes: list[str] = field(default_factory=list)
    reported: bool = False


class CompareWorkspace(QWidget):
    """Panels, one seed, Regenerate / Cancel with a progress bar, Export."""

    report_ready = Signal(object)  # the CompareReport of a finished Regenerate
    exported = Signal(str)  # the folder written

    def __init__(
        self, runner: JobRunner, settings: AppSettings, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._runner, self._settings = runner, settings
        self._calls = JobCalls(runner, self, kind="Compare")
        self._job: JobHandle | None = None  # the comparison's (or export's) job, one at a time
        self._cancellable = False  # a comparison can be cancelled, an export cannot
        self._chain: _LiveChain | None = None  # a comparison run between training steps
        self.report: Any = None  # the last CompareReport
        self.panels: list[ComparePanel] = []
        self.extractor_steps = 600  # tests lower it; the extractor is cached per dataset
        # Set by the main window: right-click a panel's samples to send one to the canvas.
        self.send_to_canvas: Any = None
        # The runs "Find runs" has offered so far (None: it never ran) and where it looked.
        # Showing the workspace again adds only runs it had not offered (finished since), so
        # a panel the user removed does not come back.
        self._offered: set[Path] | None = None
        self._runs_base: Path | None = None

        self.banner = Banner()
        self.add_button = QPushButton("Add run…")
        self.add_button.clicked.connect(self._choose_run)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("One seed for every panel: the same seed gives the same samples")
        self.n = QSpinBox()
        self.n.setRange(2, 10_000)
        self.n.setValue(64)
        self.n.setToolTip("Samples per run, the same for every panel (FD is biased at small n)")
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.clicked.connect(self.regenerate)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button = QPushButton("Export sheet + report…")
        self.export_button.clicked.connect(self._choose_export)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.status = QLabel("")
        self.extractor_label = QLabel("")
        self.extractor_label.setWordWrap(True)

        bar = QHBoxLayout()
        bar.addWidget(self.add_button)
        bar.addWidget(QLabel("Seed"))
        bar.addWidget(self.seed)
        bar.addWidget(QLabel("n"))
        bar.addWidget(self.n)
        bar.addWidget(self.regenerate_button)
        bar.addWidget(self.cancel_button)
        bar.addWidget(self.progress, 1)
        bar.addWidget(self.export_button)

        self._panel_row = QHBoxLayout()
        self._panel_row.addStretch(1)
        holder = QWidget()
        holder.setLayout(self._panel_row)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(holder)

        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addLayout(bar)
        layout.addWidget(self.status)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.extractor_label)

        self._update_controls()

    # -- runs ----------------------------------------------------------------------------------
    def load_default_runs(self, base: Path | None = None) -> None:
        """Fill empty panels with the newest GAN, VAE, flow and diffusion runs (one dataset)."""
        self._runs_base = base
        # Interactive: listing run folders is short, so it need not wait for a training run.
        self._calls.submit(
            "Find runs", jobs.default_runs(base), on_done=self._add_default_runs, interactive=True
        )

    def _add_default_runs(self, found: list[Path]) -> None:
        first = self._offered is None
        offered = self._offered or set()
        added = []
        for run in found:
            new = first or run not in offered
            if new and not any(p.run == run for p in self.panels) and self.add_run(run):
                added.append(run.name)
        self._offered = offered | set(found)
        if added and not first:
            self.status.setText("Added runs made since: " + ", ".join(added))

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        # Runs finished since the last look join the comparison (a listing job, off the GUI
        # thread); the first look is the window's, on first show.
        if self._offered is not None and self._job is None:
            self.load_default_runs(self._runs_base)
        super().showEvent(event)

    def runs(self) -> list[Path]:
        return [p.run for p in self.panels]

    def add_run(self, run: str | Path) -> bool:
        """Add a panel for ``run``; refuses (with a banner) a seventh run, a duplicate, a
        folder that is no run, and a run trained on another dataset than the first panel's."""
        from studio.core.errors import StudioError
        from studio.engine.runs import RunFolder  # json only: no torch

        run = Path(run)
        if len(self.panels) >= MAX_PANELS:
            return self._refuse(f"Compare at most {MAX_PANELS} runs at a time.")
        if any(p.run.resolve() == run.resolve() for p in self.panels):
            return self._refuse(f"{run.name} is already in the comparison.")
        try:
            config = RunFolder(run).read_config()
        except StudioError as err:
            return self._refuse(str(err))
        fingerprint = config.get("dataset", {}).get("fingerprint")
        if self.panels and fingerprint != jobs.read_fingerprint(self.panels[0].run):
            return self._refuse(
                f"{run.name} was trained on a different dataset than {self.panels[0].run.name}: "
                "compare runs trained on the same images."
            )
        family = str(config.get("family", ""))
        spec = known_family(family)  # the family's declared sampling options, once listed
        panel = ComparePanel(
            run,
            family,
            options=spec.sampling_options if spec else (),
            kind=spec.kind if spec else "",
        )
        panel.remove_requested.connect(self.remove_panel)
        panel.nearest_requested.connect(self.show_nearest)
        if self.send_to_canvas is not None:
            from studio.qt.canvas.send import install_send_to_canvas

            install_send_to_canvas(panel.view, self.send_to_canvas)
        self._panel_row.insertWidget(len(self.panels), panel, 1)
        self.panels.append(panel)
        self._settings.add_recent_run(run)
        self._update_controls()
        return True

    def remove_panel(self, panel: ComparePanel) -> None:
        if self._job is not None or panel not in self.panels:
            return
        self.panels.remove(panel)
        self._panel_row.removeWidget(panel)
        panel.deleteLater()
        self.report = None  # its panels no longer match what is shown
        self._update_controls()

    def _refuse(self, text: str) -> bool:
        self.banner.show_message(text, "warning")
        return False

    def _choose_run(self) -> None:
        from studio.core.paths import runs_dir

        folder = QFileDialog.getExistingDirectory(self, "Add a run to compare", str(runs_dir()))
        if folder:
            self.add_run(folder)

    # -- regenerate --------------------------------------------------------------------------
    def compare_settings(self) -> dict[str, Any]:
        """The :class:`studio.engine.compare.CompareSettings` fields the controls describe."""
        return {
            "runs": self.runs(),
            "n": self.n.value(),
            "seed": self.seed.value(),
            "overrides": {str(p.run): p.sampling() for p in self.panels if p.sampling()},
            "device": self._settings.device_preference(),
            "extractor_steps": self.extractor_steps,
        }

    def regenerate(self) -> None:
        if self._job is not None or not self.panels:
            return
        self.banner.clear()
        self.report = None
        for panel in self.panels:
            panel.clear_result()
            panel.set_status("Waiting…")
        self.progress.setValue(0)
        settings = self.compare_settings()
        if any(is_live(run) for run in settings["runs"]):
            # Waiting for the engine would wait for the training: run between its steps.
            self._chain = _LiveChain(settings)
            self.status.setText("Preparing the comparison between training steps…")
            self._submit_live("Compare runs: prepare", jobs.prepare(settings))
        else:
            self._submit(
                "Compare runs",
                jobs.compare(settings),
                self._on_compared,
                cancellable=True,
                on_progress=self._on_compare_progress,
                on_events=self._on_panels_done,
                keep=jobs.keep_panels,
            )

    def cancel(self) -> None:
        if self._job is not None:
            self._job.token.cancel()
            self.status.setText("Cancelling…")

    def _submit(
        self, name: str, factory: Any, on_done: Any, *, cancellable: bool, **more: Any
    ) -> None:
        """Submit this workspace's one job; ``more`` are further :meth:`JobCalls.submit`
        arguments. Every ending clears ``_job`` first (a chain's next job may follow)."""
        self._cancellable = cancellable
        self._job = self._calls.submit(
            name,
            factory,
            on_done=on_done,
            on_failed=self._on_failed,
            on_cancelled=self._on_cancelled,
            on_end=lambda _outcome: self._update_controls(),
            **more,
        )
        self._update_controls()

    def _submit_live(self, name: str, factory: Any) -> None:
        """One short job of a comparison run between a training run's steps."""
        self._submit(
            name,
            factory,
            self._on_live_step,
            cancellable=True,
            on_progress=self._on_compare_progress,
            interactive=True,
        )

    def is_busy(self) -> bool:
        return self._job is not None

    # -- export and the memorisation view -----------------------------------------------------
    def _choose_export(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export the comparison to")
        if folder:
            self.export(folder)

    def export(self, folder: str | Path) -> None:
        """Write report.json, report.csv and sheet.png (on the engine thread)."""
        if self.report is None or self._job is not None:
            return
        report, out = self.report, Path(folder)

        def factory(token: Any):
            from studio.engine.compare import write_report

            yield Progress("export", message=f"Writing {out}")
            write_report(report, out)
            return str(out)

        self._submit("Export comparison", factory, self._on_exported, cancellable=False)

    def show_nearest(self, panel: ComparePanel, k: int = 8) -> NearestDialog | None:
        """Open the memorisation view of ``panel`` (closest samples beside training images)."""
        if self.report is None or panel.result is None:
            return None
        from studio.engine.compare_report import nearest_training_images  # numpy only

        index = self.panels.index(panel)
        dialog = NearestDialog(panel.run.name, nearest_training_images(self.report, index, k), self)
        dialog.show()
        return dialog

    # -- the jobs' callbacks (JobCalls: each hears only its own job) -------------------------
    def _on_compare_progress(self, progress: Progress, _image: Any, _points: Any) -> None:
        info = progress.info
        panels = int(info.get("panels") or max(1, len(self.panels)))
        i = info.get("panel")
        done = (i or 0) + (1.0 if progress.stage is Stage.PANEL else 0.0)
        if progress.stage is Stage.SAMPLE and progress.fraction is not None and i is not None:
            done = i + 0.8 * progress.fraction  # scoring is the last fifth of a panel
        if progress.stage is Stage.FEATURES and progress.fraction is not None:
            # Before any panel: the feature extractor's first training fills the bar itself.
            self.progress.setValue(int(1000 * min(1.0, progress.fraction)))
        else:
            self.progress.setValue(int(1000 * min(1.0, done / panels)))
        if progress.message:
            self.status.setText(progress.message)
        if i is not None and i < len(self.panels) and progress.stage in (Stage.SAMPLE, Stage.SCORE):
            self.panels[i].set_status(progress.stage.value.capitalize() + "…")

    def _on_panels_done(self, reports: list[Progress]) -> None:
        for report in reports:  # one per finished panel, in order
            done = report.payload
            if isinstance(done, PanelDone) and done.index < len(self.panels):
                self.panels[done.index].set_result(done.result, done.extractor)

    def _on_compared(self, report: Any) -> None:
        self._job = None
        self._show_report(report)

    def _on_live_step(self, result: Any) -> None:
        self._job = None
        if not self._next_live(result):
            self._chain = None  # the report is shown: the chain is over

    def _on_exported(self, folder: str) -> None:
        self._job = None
        self.status.setText(f"Exported to {folder}")
        self.exported.emit(str(folder))

    def _on_failed(self, message: str) -> None:
        self._job, self._chain = None, None
        self.banner.show_message(message or "The comparison failed.")
        self.status.setText("")

    def _on_cancelled(self) -> None:
        self._job, self._chain = None, None
        self.status.setText("Cancelled.")
        for panel in self.panels:
            if panel.result is None:
                panel.set_status("Cancelled")

    def _next_live(self, result: Any) -> bool:
        """Take a chain job's result and submit the next job; False when the chain is done."""
        chain = self._chain
        if chain is None:
            return False
        if chain.reported:  # the report: the chain is over
            self._show_report(result)
            return False
        if chain.prep is None:
            chain.prep = result
        else:  # a peek.PanelPeek
            i = len(chain.panels)
            chain.panels.append(result.panel)
            panel = self.panels[i] if i < len(self.panels) else None
            if panel is not None:
                panel.set_live(result.weights.live)
                panel.set_result(result.panel, chain.prep.extractor.describe())
            if result.weights.live:
                chain.notes.append(
                    f"{result.panel.name} was sampled with its current weights at training "
                    f"step {result.weights.step} while it trained (not a saved checkpoint)."
                )
        i = len(chain.panels)
        runs = chain.settings["runs"]
        if i < len(runs):
            name = Path(runs[i]).name
            self.panels[i].set_status("Waiting for a training step…" if is_live(runs[i]) else "")
            self._submit_live(f"Compare runs: {name}", jobs.panel(chain.prep, i))
        else:
            chain.reported = True
            self._submit_live(
                "Compare runs: report", jobs.report(chain.prep, chain.panels, chain.notes)
            )
        return True

    def _show_report(self, report: Any) -> None:
        self.report = report
        self.progress.setValue(1000)
        for panel, result in zip(self.panels, report.panels):
            panel.set_result(result, report.extractor)
        self.extractor_label.setText(
            f"Features: {report.extractor}. n={report.n} samples per run against "
            f"{report.n_reference} held-out images, seed {report.settings['seed']}. "
            + " ".join(report.notes)
        )
        self.status.setText("Done.")
        self.report_ready.emit(report)

    def _update_controls(self) -> None:
        busy = self._job is not None
        self.regenerate_button.setEnabled(not busy and bool(self.panels))
        self.cancel_button.setEnabled(busy and self._cancellable)
        self.add_button.setEnabled(not busy and len(self.panels) < MAX_PANELS)
        self.export_button.setEnabled(not busy and self.report is not None)
        self.seed.setEnabled(not busy)
        self.n.setEnabled(not busy)
        for panel in self.panels:
            panel.remove_button.setEnabled(not busy)
            panel.sampling_row.setEnabled(not busy)
