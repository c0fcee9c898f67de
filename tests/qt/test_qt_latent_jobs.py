"""Explore's decodes are jobs on the window's engine thread: latest-wins, and between the
training steps of another run."""

from __future__ import annotations

import threading
from collections.abc import Generator

import numpy as np
from helpers import make_tiny_dataset, train_tiny_run
from test_qt_latent import make_run, open_and_wait, settle, workspace  # noqa: F401
from test_qt_live_tools import Training

from studio.core.jobs import CancelToken, Progress
from studio.engine import live
from studio.qt.engine_thread import JobRunner
from studio.qt.latent import LatentWorkspace


def test_a_burst_of_slider_moves_runs_only_the_newest_decode(qtbot, workspace, tmp_path):  # noqa: F811
    ws = workspace
    open_and_wait(qtbot, ws, make_run(tmp_path, "gan.dcgan"))
    runner: JobRunner = ws.jobs.calls.runner
    gate = threading.Event()

    def hold(token: CancelToken) -> Generator[Progress, None, None]:
        gate.wait(10)  # someone else's job holds the engine; decodes wait for its next yield
        yield Progress("hold")

    held = runner.submit("Hold", hold)
    qtbot.waitUntil(lambda: runner.engine.running_job() is held, timeout=10_000)
    decodes, requests = ws.jobs.decode_count, ws.jobs.requested_count
    slider = ws.slider_panel.sliders[0]
    for value in range(-200, 100, 10):  # 30 moves while no decode can run
        slider.setValue(value)
        qtbot.wait(1)
    assert ws.jobs.requested_count - requests == 30
    assert len(ws.jobs.calls.active("decode")) >= 1
    gate.set()
    settle(qtbot, ws)
    assert ws.jobs.decode_count - decodes == 1  # only the newest ran; 29 were cancelled
    assert np.array_equal(ws.image, ws.jobs.holder.space.decode(ws.current_z()))


def test_explore_works_while_another_run_trains(qtbot, app_settings, tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n=16, size=16)
    trained = train_tiny_run(tmp_path / "training", "vae.conv", data)
    explored = make_run(tmp_path, "vae.conv", seed=1)  # another run, not training
    app_settings.set_device_preference("cpu")
    runner = JobRunner()
    ws = LatentWorkspace(runner, app_settings)
    ws.pca_samples, ws.pca_k = 32, 2
    qtbot.addWidget(ws)
    try:
        training = Training(qtbot, runner, trained)
        qtbot.waitUntil(lambda: live.is_live(trained), timeout=30_000)
        # Opening, finding directions and decoding all run between the training's steps.
        open_and_wait(qtbot, ws, explored)
        assert not live.is_live(explored) and "Saved weights" in ws.weights_label.text()
        decodes, step = ws.jobs.decode_count, training.step
        for value in (100, 200, -150):
            ws.slider_panel.sliders[0].setValue(value)
            settle(qtbot, ws)
            training.wait_steps(1)
        assert ws.jobs.decode_count - decodes == 3
        assert np.array_equal(ws.image, ws.jobs.holder.space.decode(ws.current_z()))
        assert runner.engine.running_job() is training.handle and training.outcome is None
        assert training.step > step  # training went on between the decodes
        training.stop()
    finally:
        ws.shutdown()
        runner.shutdown(10_000)
