"""Explore's tools and Compare's Regenerate on a run that is training: they run between its
steps, on its current weights, and say which step's weights they used; training goes on."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_tiny_dataset, train_tiny_run
from qt_steps import small_latent_workspace

from studio.core.jobs import CancelToken, Progress, Status, run_sync
from studio.engine import live
from studio.qt import engine_jobs
from studio.qt.engine_thread import JobHandle, JobRunner


class Training:
    """A run resumed on ``runner`` for ever; follows its reported steps."""

    def __init__(self, qtbot, runner: JobRunner, run) -> None:
        self.qtbot, self.runner, self.run = qtbot, runner, run
        self.step = 0
        self.paused_at: int | None = None
        self.outcome = None
        runner.job_progress.connect(self._on_progress)
        runner.job_finished.connect(self._on_finished)
        self.handle = runner.submit("Resume", engine_jobs.train_resume(run, 100_000, "cpu"))

    def _on_progress(self, handle: JobHandle, p: Progress, _image, _points) -> None:
        if handle is self.handle:
            self.step = max(self.step, p.step)
            if p.stage == "paused":
                self.paused_at = p.step

    def _on_finished(self, handle: JobHandle, outcome) -> None:
        if handle is self.handle:
            self.outcome = outcome

    def wait_steps(self, n: int) -> None:
        target = self.step + n
        self.qtbot.waitUntil(lambda: self.step >= target, timeout=60_000)

    def pause(self) -> int:
        self.handle.token.pause()
        self.qtbot.waitUntil(lambda: self.paused_at is not None, timeout=30_000)
        return int(self.paused_at)

    def resume(self) -> None:
        self.paused_at = None
        self.handle.token.resume()

    def stop(self) -> None:
        self.handle.token.stop()
        self.qtbot.waitUntil(lambda: self.outcome is not None, timeout=60_000)
        assert self.outcome.status is Status.FINISHED


def on_engine(qtbot, runner: JobRunner, factory):
    """Run ``factory`` as an interactive job (between training steps); return its result."""
    done: dict[str, object] = {}
    handle = runner.submit("probe", factory, interactive=True)
    runner.job_finished.connect(lambda h, o: done.setdefault("o", o) if h is handle else None)
    qtbot.waitUntil(lambda: "o" in done, timeout=30_000)
    assert done["o"].ok, done["o"].error
    return done["o"].result


@pytest.fixture
def data(tmp_path):
    return make_tiny_dataset(tmp_path / "data", n=24, size=16, classes=2)


def test_explore_tools_use_the_live_weights_while_paused(qtbot, app_settings, tmp_path, data):
    from studio.engine.latent import open_latent_space
    from studio.engine.peek import latent_peek

    run = train_tiny_run(tmp_path / "run", "vae.conv", data)
    runner = JobRunner()
    ws = small_latent_workspace(qtbot, app_settings, runner)
    picture = np.zeros((16, 16, 3), np.uint8)
    picture[:, 8:] = (200, 60, 30)
    try:
        ws.open_run(run)
        qtbot.waitUntil(lambda: ws.directions_ready() and ws.image is not None, timeout=30_000)
        assert "Saved weights: checkpoint of step 2" in ws.weights_label.text()
        assert "Live" not in ws.slider_panel.method_label.text()

        training = Training(qtbot, runner, run)
        qtbot.waitUntil(lambda: live.is_live(run), timeout=30_000)
        training.wait_steps(8)
        step = training.pause()
        assert step > 2

        # Encoding an image: the posterior mean of the live encoder, not the saved one.
        ws.encode_file(picture, "halves.png")
        qtbot.waitUntil(lambda: len(ws.tray.items()) == 1, timeout=30_000)
        z_live = ws.tray.items()[0].z

        def encode_live(token: CancelToken):
            def task(space):
                yield Progress("encode")
                return space.encode(picture)

            return (yield from latent_peek(run, task))

        probe = on_engine(qtbot, runner, encode_live)
        assert probe.weights.live and probe.weights.step == step
        np.testing.assert_allclose(z_live, probe.value, rtol=1e-5, atol=1e-6)
        z_saved = open_latent_space(run).encode(picture)  # this thread: the run's files
        assert not np.allclose(z_live, z_saved, atol=1e-4)
        assert (
            ws.weights_label.text() == f"Live weights: training step {step} (the run is training)"
        )

        # Samples for a home-made slider and the principal directions (Reload finds them anew).
        count = ws.jobs.live_count
        ws.new_attribute_samples()
        qtbot.waitUntil(lambda: ws.jobs.live_count == count + 1, timeout=30_000)
        ws.reload()
        qtbot.waitUntil(lambda: ws.directions_ready() and ws.loaded is not None, timeout=30_000)
        found = f"Found on the live weights of training step {step}."
        assert found in ws.slider_panel.method_label.text()
        assert ws.jobs.live_count >= count + 2
        assert training.handle.token.paused and training.outcome is None  # still paused

        training.resume()
        training.wait_steps(3)  # training goes on afterwards
        training.stop()
        # Training over: Explore loads what it saved, and says so.
        final = training.step
        qtbot.waitUntil(lambda: ws.weights == (False, final), timeout=30_000)
        assert ws.weights_label.text() == f"Saved weights: checkpoint of step {final}"
        # The directions found on step {step}'s live weights are refitted on the saved ones;
        # the directions line never says "live" beside a picture of the saved weights.
        qtbot.waitUntil(
            lambda: (
                f"saved weights: checkpoint of step {final}." in ws.slider_panel.method_label.text()
            ),
            timeout=30_000,
        )
        assert ws.weights_line.directions == (False, final)
        qtbot.waitUntil(
            lambda: not ws.jobs.is_busy() and ws.displayed_request == ws.last_request,
            timeout=30_000,
        )
        newest = open_latent_space(run).decode(ws.current_z())  # the final saved weights
        np.testing.assert_array_equal(ws.image, newest)
    finally:
        ws.shutdown()
        runner.shutdown(10_000)


def test_compare_regenerates_a_training_run_between_its_steps(qtbot, app_settings, tmp_path, data):
    from studio.engine.peek import sample_peek
    from studio.qt.compare import CompareWorkspace

    gan = train_tiny_run(tmp_path / "runs" / "gan", "gan.dcgan", data, holdout_fraction=0.25)
    vae = train_tiny_run(tmp_path / "runs" / "vae", "vae.conv", data, holdout_fraction=0.25)
    app_settings.set_device_preference("cpu")
    runner = JobRunner()
    ws = CompareWorkspace(runner, app_settings)
    ws.extractor_steps = 10
    qtbot.addWidget(ws)
    try:
        assert ws.add_run(gan) and ws.add_run(vae)
        ws.n.setValue(4)
        ws.seed.setValue(5)
        training = Training(qtbot, runner, vae)
        qtbot.waitUntil(lambda: live.is_live(vae), timeout=30_000)
        training.wait_steps(5)

        with qtbot.waitSignal(ws.report_ready, timeout=90_000) as blocker:
            ws.regenerate()
            assert ws.cancel_button.isEnabled() and not ws.regenerate_button.isEnabled()
        report = blocker.args[0]
        assert training.outcome is None and runner.engine.running_job() is training.handle
        gan_panel, vae_panel = ws.panels
        live_result = report.panels[1]
        assert 2 < live_result.step <= training.step
        assert vae_panel.live and not gan_panel.live
        assert vae_panel.weights_label.text() == (
            f"Live weights: training step {live_result.step} (the run is training)"
        )
        assert gan_panel.weights_label.text() == "Saved weights: checkpoint of step 2"
        assert report.panels[0].step == 2
        assert any("current weights at training step" in note for note in report.notes)
        saved = run_sync(sample_peek(vae, 4, seed=5)).result  # this thread: the saved model
        assert not saved.live and not np.array_equal(saved.images, live_result.samples)
        assert ws.regenerate_button.isEnabled()

        at = training.step
        training.wait_steps(3)  # training went on
        assert training.step > at

        # Paused: the panel is exactly what a peek of the live weights draws.
        step = training.pause()
        with qtbot.waitSignal(ws.report_ready, timeout=90_000) as blocker:
            ws.regenerate()
        paused = blocker.args[0].panels[1]
        assert paused.step == step
        probe = on_engine(qtbot, runner, lambda token: sample_peek(vae, 4, seed=5))
        assert probe.live and probe.step == step
        np.testing.assert_array_equal(paused.samples, probe.images)
        training.resume()
        training.stop()
    finally:
        runner.shutdown(20_000, grace_ms=5_000)


def test_directions_found_on_live_weights_go_stale_when_training_ends(qtbot) -> None:
    """One object says which weights Explore shows; the directions line read a copy of the
    picture's line once and kept saying 'Live weights: training step 30' after training
    ended while the picture said 'Saved weights: checkpoint of step 300'."""
    from PySide6.QtWidgets import QLabel

    from studio.qt.latent.live_weights import WeightsLine

    label = QLabel()
    qtbot.addWidget(label)
    seen: list[str] = []
    line = WeightsLine(label, lambda: seen.append(line.directions_text()))
    line.note(True, 30)
    line.found_directions()
    assert line.directions_text() == "Found on the live weights of training step 30."
    line.note(True, 31)  # training goes on: the directions are still from the live run
    assert not line.stale()
    line.note(False, 300)  # training ended; the picture shows the saved weights
    assert label.text() == "Saved weights: checkpoint of step 300"
    assert line.stale()
    assert seen[-1] == "Found on training step 30; training ended since: refit (Reload)."
    line.refitting = True
    assert "refitting on the saved weights" in line.directions_text()
    line.found_directions()  # refitted on the saved weights
    assert not line.stale()
    assert seen[-1] == "Found on the saved weights: checkpoint of step 300."
    line.clear()
    assert seen[-1] == "" and line.directions is None
