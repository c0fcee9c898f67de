"""The TensorBoard mirror: events written beside metrics.jsonl, read back; off when unavailable."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_tiny_dataset, train_tiny_run

from studio.engine import tensorboard, tfevents
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
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
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


def test_crc32c_check_values() -> None:
    assert tfevents.crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert tfevents.crc32c(b"") == 0
    assert tfevents.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4 test vectors
    assert tfevents.crc32c(b"\xff" * 32) == 0x62A8AB43
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    for data in (b"", b"123456789", bytes(range(256)) * 3):
        assert tfevents.masked_crc32c(data) == masked_crc32c(data)  # tensorboard's own


def test_records_match_tensorboards_own_framing_and_protobuf() -> None:
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    class Sink:
        data = b""

        def write(self, b: bytes) -> None:
            self.data += b

    sink = Sink()
    RecordWriter(sink).write(b"any payload")
    assert tfevents.record(b"any payload") == sink.data
    values = [tfevents.scalar_value("loss/\u00e9", -2.5), tfevents.scalar_value("lr", 0.125)]
    parsed = event_pb2.Event.FromString(tfevents.event(12.5, 2**40, values=values))
    assert (parsed.wall_time, parsed.step) == (12.5, 2**40)
    assert [(v.tag, v.simple_value) for v in parsed.summary.value] == [
        ("loss/\u00e9", -2.5), ("lr", 0.125)
    ]  # fmt: skip
    start = event_pb2.Event.FromString(tfevents.event(1.0, 3, session_status=1))
    assert (start.step, start.session_log.status) == (3, event_pb2.SessionLog.START)
    head = event_pb2.Event.FromString(tfevents.event(1.0, file_version="brain.Event:2"))
    assert (head.step, head.file_version) == (0, "brain.Event:2")
    with pytest.raises(ValueError):  # a oneof in event.proto: one would be lost
        tfevents.event(1.0, 3, values=values, session_status=1)
    big = event_pb2.Event.FromString(
        tfevents.event(0.0, values=[tfevents.scalar_value("x", 1e300)])
    )
    assert big.summary.value[0].simple_value == math.inf  # clamped like a float32 field


def test_purge_step_event_is_written_and_honoured(tmp_path: Path) -> None:
    from tensorboard.compat.proto import event_pb2

    folder = tmp_path / "tb"
    old = tfevents.EventFileWriter(folder)
    old.write([tfevents.event(1.0, s, values=[tfevents.scalar_value("x", s)]) for s in (1, 2, 3)])
    old.close()
    new = tfevents.EventFileWriter(folder, purge_step=2)
    new.write([tfevents.event(2.0, 2, values=[tfevents.scalar_value("x", 20.0)])])
    new.close()
    files = sorted(folder.iterdir())
    assert len(files) == 2 and files[-1] == new.path  # the new file sorts last: read last
    assert all(f.name.startswith("events.out.tfevents.") for f in files)
    events, data = [], files[-1].read_bytes()
    while data:
        (length,) = struct.unpack("<Q", data[:8])
        events.append(event_pb2.Event.FromString(data[12 : 12 + length]))
        data = data[16 + length :]
    assert events[0].file_version == "brain.Event:2"
    assert (events[1].step, events[1].session_log.status) == (2, event_pb2.SessionLog.START)
    assert _scalars(folder)["x"] == [(1, 1.0), (2, 20.0)]  # step 3 of the old file is gone


def test_training_with_the_mirror_does_not_import_tensorboard(tmp_path: Path) -> None:
    # A fresh interpreter: this one already imported tensorboard to read events back.
    script = (
        "import sys; from pathlib import Path\n"
        "from helpers import make_tiny_dataset, train_tiny_run\n"
        "tmp = Path(sys.argv[1])\n"
        "data = make_tiny_dataset(tmp / 'data', n=8, size=16)\n"
        "run = train_tiny_run(tmp / 'run', 'gan.dcgan', data, steps=2, log_every=1)\n"
        "assert list((run / 'tensorboard').glob('events.out.tfevents.*'))\n"
        "heavy = ('tensorboard', 'tensorboard.', 'torch.utils.tensorboard')\n"
        "print(sorted(m for m in sys.modules if m == 'tensorboard' or m.startswith(heavy)))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STUDIO_HOME": str(tmp_path / "home")}
    env.pop("STUDIO_TENSORBOARD", None)
    tests = Path(__file__).parent
    env["PYTHONPATH"] = os.pathsep.join([str(tests), str(tests.parent)])
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
