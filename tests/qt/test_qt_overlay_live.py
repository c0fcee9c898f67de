"""Overlaid runs are followed live: their curves grow with their metrics.jsonl (issue #7)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
from qt_steps import make_metrics_run

from studio.core import atomic
from studio.qt.run_view import RunView

FAST_MS = 30


def _loss(step: int, lr_d: float = 1.0) -> float:
    return float(2.0 * np.exp(-step / (60.0 * lr_d)) + 0.3 + 0.05 * np.sin(step / 3.0))


def _fast_view(qtbot) -> RunView:
    view = RunView()
    qtbot.addWidget(view)
    view.watcher.set_interval(FAST_MS)
    view.set_overlay_interval(FAST_MS)
    return view


def _steps(view: RunView, run: str, name: str = "loss_d") -> list[float]:
    return view.plot.series(name, run)[0].tolist()


def test_an_overlaid_run_that_grows_shows_its_new_points(qtbot, tmp_path: Path) -> None:
    mine = make_metrics_run(tmp_path / "mine", records=5)
    other = make_metrics_run(tmp_path / "other", records=10)
    view = _fast_view(qtbot)
    view.watch(mine.path)
    view.apply_overlays([other.path])
    qtbot.waitUntil(lambda: view.plot.overlay_runs() == ["other"], timeout=5000)
    assert _steps(view, "other") == [float(s) for s in range(1, 11)]
    assert view.overlays_followed() == ["other"]

    def writer() -> None:  # a training process elsewhere, appending line by line
        for s in range(11, 61):
            other.append_metrics([{"step": s, "time": 0.0, "loss_d": float(s), "lr": 0.01}])
            time.sleep(0.003)

    thread = threading.Thread(target=writer)
    thread.start()
    qtbot.waitUntil(lambda: len(_steps(view, "other")) == 60, timeout=10_000)
    thread.join()
    x, y = view.plot.series("loss_d", "other")
    assert x.tolist() == [float(s) for s in range(1, 61)]  # every line once, in order
    assert y.tolist() == [float(s) for s in range(1, 61)]
    assert _steps(view, "other", "lr") == [float(s) for s in range(11, 61)]  # a new name
    assert view.plot.series("loss_d")[0].size == 5  # this run's own curve is untouched
    # ... and the curve item on the plot holds them (redrawn on the plot's timer).
    qtbot.waitUntil(
        lambda: (
            view.plot.displayed("loss_d", "other")[0].size > 0
            and view.plot.displayed("loss_d", "other")[0].max() == 60.0
        ),
        timeout=5000,
    )
    # This run's own tail still works beside the overlay's.
    mine.append_metrics([{"step": 6, "loss_d": 6.0}])
    qtbot.waitUntil(lambda: view.plot.series("loss_d")[0].size == 6, timeout=5000)
    assert len(_steps(view, "other")) == 60


def test_removing_an_overlay_stops_following_it(qtbot, tmp_path: Path) -> None:
    a = make_metrics_run(tmp_path / "a", records=4)
    b = make_metrics_run(tmp_path / "b", records=4)
    view = _fast_view(qtbot)
    view.apply_overlays([a.path, b.path])
    qtbot.waitUntil(lambda: sorted(view.plot.overlay_runs()) == ["a", "b"], timeout=5000)
    watcher_a = view._overlay_watchers["a"]

    view.apply_overlays([b.path])
    assert view.plot.overlay_runs() == ["b"] and view.overlays_followed() == ["b"]
    assert not watcher_a.is_watching()
    polls = watcher_a.polls
    a.append_metrics([{"step": s, "loss_d": 0.0} for s in range(5, 9)])
    b.append_metrics([{"step": s, "loss_d": 0.0} for s in range(5, 9)])
    qtbot.waitUntil(lambda: len(_steps(view, "b")) == 8, timeout=5000)
    qtbot.wait(5 * FAST_MS)  # several more ticks: nothing may come back for "a"
    assert _steps(view, "a") == [] and "a" not in view.plot.overlay_runs()
    assert watcher_a.polls <= polls + 1  # at most the read already in flight, then ignored

    view.apply_overlays([b.path, a.path])  # ticked again: its whole history, new lines too
    qtbot.waitUntil(lambda: len(_steps(view, "a")) == 8, timeout=5000)
    assert len(_steps(view, "b")) == 8  # b was not reloaded (no duplicates)
    view.apply_overlays([])
    assert view.overlays_followed() == [] and view.overlaid() == {}


def test_a_rewritten_truncated_or_deleted_overlay_is_rebuilt_or_cleared(
    qtbot, tmp_path: Path
) -> None:
    first = make_metrics_run(tmp_path / "first", records=3)
    run = make_metrics_run(tmp_path / "other", records=20)
    view = _fast_view(qtbot)
    view.apply_overlays([first.path])
    qtbot.waitUntil(lambda: view.plot.overlay_runs() == ["first"], timeout=5000)
    view.apply_overlays([first.path, run.path])
    qtbot.waitUntil(lambda: len(_steps(view, "other")) == 20, timeout=5000)
    assert view.plot.overlay_runs() == ["first", "other"]

    # A resume elsewhere rewrites the file (a new inode) without the lines after its checkpoint.
    atomic.write_text(
        run.metrics_path,
        "".join(json.dumps({"step": s, "loss_d": -1.0}) + "\n" for s in range(1, 6)),
    )
    qtbot.waitUntil(lambda: len(_steps(view, "other")) == 5, timeout=5000)
    assert view.plot.series("loss_d", "other")[1].tolist() == [-1.0] * 5
    assert view.plot.overlay_runs() == ["first", "other"]  # same place, so the same colour
    assert any("other: metrics.jsonl was rewritten" in line for line in view.log_lines())

    # Truncated in place (same inode, shorter), then written on.
    with open(run.metrics_path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"step": 1, "loss_d": 9.0}) + "\n")
    qtbot.waitUntil(lambda: _steps(view, "other") == [1.0], timeout=5000)
    run.append_metrics([{"step": 2, "loss_d": 8.0}])
    qtbot.waitUntil(lambda: _steps(view, "other") == [1.0, 2.0], timeout=5000)
    assert view.plot.series("loss_d", "other")[1].tolist() == [9.0, 8.0]

    # Deleted: its curves are cleared, the overlay (and its colour) stays and keeps looking.
    view.log.clear()
    os.remove(run.metrics_path)
    qtbot.waitUntil(lambda: view.plot.series("loss_d", "other")[0].size == 0, timeout=5000)
    assert view.plot.overlay_runs() == ["first", "other"]
    assert any("other: metrics.jsonl was emptied or removed" in line for line in view.log_lines())
    shutil.rmtree(run.path)  # the whole folder: polls go on without an error
    polls = view._overlay_watchers["other"].polls
    qtbot.waitUntil(lambda: view._overlay_watchers["other"].polls >= polls + 3, timeout=5000)
    assert _steps(view, "first") == [1.0, 2.0, 3.0]

    make_metrics_run(run.path, records=7)  # it comes back (synced again)
    qtbot.waitUntil(lambda: len(_steps(view, "other")) == 7, timeout=5000)
    assert view.banner.isHidden()  # nothing of this was an error for the user


def test_a_run_with_no_metrics_yet_is_overlaid_and_fills_in(qtbot, tmp_path: Path) -> None:
    run = make_metrics_run(tmp_path / "fresh", records=0)
    view = _fast_view(qtbot)
    view.apply_overlays([run.path])
    qtbot.waitUntil(lambda: view.plot.overlay_runs() == ["fresh"], timeout=5000)
    assert any("no metrics yet" in line for line in view.log_lines())
    run.append_metrics([{"step": s, "loss_d": 1.0, "diversity": 0.5} for s in (1, 2, 3)])
    qtbot.waitUntil(lambda: len(_steps(view, "fresh")) == 3, timeout=5000)
    assert _steps(view, "fresh", "diversity") == [1.0, 2.0, 3.0]
    assert "Diagnostics" in view.plot.groups()


def test_overlay_watchers_stop_when_the_view_closes(qtbot, tmp_path: Path) -> None:
    mine = make_metrics_run(tmp_path / "mine", records=2)
    run = make_metrics_run(tmp_path / "other", records=2)
    view = _fast_view(qtbot)
    view.watch(mine.path)
    view.apply_overlays([run.path])
    qtbot.waitUntil(lambda: len(_steps(view, "other")) == 2, timeout=5000)
    view.close()
    assert view.overlays_followed() == [] and not view.watcher.is_watching()
    # No read is running any more (shutdown waited for the one in flight, if any).
    assert view.overlay_reader.wait(0) and view.watcher.reader.wait(0)
    run.append_metrics([{"step": 3, "loss_d": 0.0}])
    qtbot.wait(6 * FAST_MS)
    assert len(_steps(view, "other")) == 2


def test_train_workspace_with_a_live_overlay_renders(qtbot, window, tmp_path: Path) -> None:
    """The Train workspace shows a run with a growing overlay; the grab goes to a PNG.

    With ``STUDIO_SCREENSHOT_DIR`` set the PNG is written there (``train_overlay_live.png``).
    """
    from PySide6.QtGui import QColor

    from studio.qt.imaging import qimage_to_numpy
    from studio.qt.plot_parts import RUN_PALETTE

    shown = make_metrics_run(tmp_path / "base_run", steps=300)
    shown.append_metrics([{"step": s, "loss_d": _loss(s)} for s in range(1, 301)])
    other = make_metrics_run(tmp_path / "faster_lr", steps=300)
    other.append_metrics([{"step": s, "loss_d": _loss(s, 0.5)} for s in range(1, 61)])
    window.resize(1280, 800)
    window.show_workspace(window.TRAIN)
    panel = window.train_panel
    with qtbot.waitSignal(window.runner.job_finished, timeout=30_000) as blocker:
        panel.open_run(shown.path)
    assert blocker.args[1].ok, blocker.args[1].error
    view = panel.view
    view.set_overlay_interval(FAST_MS)
    view.apply_overlays([other.path])
    qtbot.waitUntil(lambda: len(_steps(view, "faster_lr")) == 60, timeout=10_000)

    colour = QColor(RUN_PALETTE[0])
    want = np.array([colour.red(), colour.green(), colour.blue()])

    def overlay_pixels() -> int:
        qtbot.wait(150)  # the plot's redraw timer
        pixels = qimage_to_numpy(view.plot.loss_plot.grab().toImage())[..., :3].astype(int)
        return int((np.abs(pixels - want).sum(axis=2) < 60).sum())

    before = overlay_pixels()
    other.append_metrics([{"step": s, "loss_d": _loss(s, 0.5)} for s in range(61, 241)])
    qtbot.waitUntil(lambda: len(_steps(view, "faster_lr")) == 240, timeout=10_000)
    after = overlay_pixels()
    assert after > before * 1.5, (before, after)  # the dashed curve got longer on screen

    shot = window.grab()
    assert not shot.isNull()
    out = Path(os.environ.get("STUDIO_SCREENSHOT_DIR") or tmp_path)
    assert shot.save(str(out / "train_overlay_live.png"))
    assert (out / "train_overlay_live.png").stat().st_size > 0
