"""The TensorBoard mirror: events written beside metrics.jsonl, read back; off when unavailable."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from helpers import make_tiny_dataset, train_tiny_run

from studio.engine import tensorboard
from studio.engine.runs import RunFolder

pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_metrics_are_mirrored_as_scalars(tmp_path: Path) -> None:
    run = tensorboard.mirror(RunFolder(tmp_path / "run"))
    run.path.mkdir()
    assert isinstance(run, tensorboard.MirroredRunFolder)
    assert not (run.path / "tensorboard").exists()  # nothing logged yet, no empty folder
    run.append_metrics([{"step": s, "time": 1000.0 + s, "loss": 1.0 / s} for s in range(1, 6)])
    run.append_metrics([{"step": 5, "time": 1005.5, "diversity": 0.25, "note": "text", "ok": True}])
    # Flushed at every append: a live reader sees the events before the run ends.
    seen = _scalars(run.path / "tensorboard")
    assert set(seen) == {"loss", "diversity"}  # no step/time/text/bool tags
    assert [s for s, _ in seen["loss"]] == [1, 2, 3, 4, 5]
    assert all(math.isclose(v, 1.0 / s, rel_tol=1e-6) for s, v in seen["loss"])
    assert seen["diversity"] == [(5, 0.25)]
    records, _ = RunFolder(run.path).read_metrics()
    assert len(records) == 6  # metrics.jsonl is still written first
    run.close_events()


def test_resume_purges_the_stale_steps(tmp_path: Path) -> None:
    first = tensorboard.mirror(RunFolder(tmp_path / "run"))
    first.path.mkdir()
    first.append_metrics([{"step": s, "loss": 9.0} for s in range(1, 11)])
    first.close_events()
    # A resume from the step-6 checkpoint re-logs steps 7..: the old 7..10 must go.
    again = tensorboard.mirror(RunFolder(tmp_path / "run"))
    again.append_metrics([{"step": s, "loss": 1.0} for s in range(7, 9)])
    again.close_events()
    loss = dict(_scalars(tmp_path / "run" / "tensorboard")["loss"])
    assert sorted(loss) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert loss[6] == 9.0 and loss[7] == 1.0 and loss[8] == 1.0


def test_off_without_tensorboard_or_when_switched_off(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STUDIO_TENSORBOARD", "0")
    run = RunFolder(tmp_path)
    assert tensorboard.mirror(run) is run
    monkeypatch.delenv("STUDIO_TENSORBOARD")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    assert not tensorboard.enabled()
    assert tensorboard.mirror(run) is run


def test_a_failing_writer_never_stops_the_metrics(tmp_path: Path, monkeypatch) -> None:
    run = tensorboard.mirror(RunFolder(tmp_path))

    def broken(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(tensorboard.EventLog, "_write_one", broken)
    run.append_metrics([{"step": 1, "loss": 1.0}])
    run.append_metrics([{"step": 2, "loss": 2.0}])
    assert run.events.failed
    assert [r["step"] for r in RunFolder(tmp_path).read_metrics()[0]] == [1, 2]


def test_training_writes_events_with_every_logged_metric(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", n=16, size=16)
    run = train_tiny_run(tmp_path / "run", "gan.dcgan", data, steps=4, log_every=2)
    seen = _scalars(run / "tensorboard")
    records, _ = RunFolder(run).read_metrics()
    logged = {k for r in records for k in r} - {"step", "time"}
    assert {"loss_d", "loss_g", "images_per_s", "memory_mb"} <= set(seen)
    assert set(seen) == logged  # every metric in the file, and nothing else
    file_loss = [(r["step"], r["loss_d"]) for r in records if "loss_d" in r]
    assert [s for s, _ in seen["loss_d"]] == [s for s, _ in file_loss] == [2, 4]
    assert all(
        math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(seen["loss_d"], file_loss)
    )
