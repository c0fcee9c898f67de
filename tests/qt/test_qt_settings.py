"""AppSettings: files go where they are asked to, values survive a restart, lists stay ordered."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray

from studio.qt.settings import RECENT_LIMIT, AppSettings


def test_default_settings_file_is_in_the_redirected_folder(qapp, settings_dir: Path) -> None:
    settings = AppSettings()
    settings.add_recent_folder("/pictures/moths")
    settings.sync()
    expected = settings_dir / qapp.organizationName() / f"{qapp.applicationName()}.ini"
    assert settings.file_path == expected
    assert expected.is_file()
    assert "moths" in expected.read_text(encoding="utf-8")


def test_explicit_path_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "where-i-said.ini"
    settings = AppSettings.at_path(path)
    settings.set_last_resolution(64)
    settings.sync()
    assert path.is_file()
    assert AppSettings.at_path(path).last_resolution() == 64


def test_values_survive_a_new_instance(app_settings: AppSettings) -> None:
    app_settings.set_last_resolution(128)
    app_settings.set_device_preference("cpu")
    app_settings.set_window_geometry(QByteArray(b"\x01\x02geometry"))
    app_settings.add_recent_run("/runs/a")
    app_settings.sync()
    again = AppSettings()
    assert again.last_resolution() == 128
    assert again.device_preference() == "cpu"
    assert again.window_geometry() == QByteArray(b"\x01\x02geometry")
    assert again.recent_runs() == ["/runs/a"]  # a one-item list stays a list


def test_recent_lists_are_most_recent_first_unique_and_bounded(app_settings: AppSettings) -> None:
    for name in ("a", "b", "c", "a"):
        app_settings.add_recent_folder(f"/data/{name}")
    assert app_settings.recent_folders() == ["/data/a", "/data/c", "/data/b"]
    for i in range(RECENT_LIMIT + 5):
        app_settings.add_recent_run(f"/runs/{i}")
    runs = AppSettings().recent_runs()
    assert len(runs) == RECENT_LIMIT
    assert runs[0] == f"/runs/{RECENT_LIMIT + 4}"
    assert app_settings.recent_folders()[0] == "/data/a"  # the lists are separate


def test_bad_values_fall_back_to_defaults(tmp_path: Path) -> None:
    path = tmp_path / "odd.ini"
    path.write_text("[dataset]\nresolution=banana\n[train]\ndevice=tpu\n", encoding="utf-8")
    settings = AppSettings.at_path(path)
    assert settings.last_resolution() == 32
    assert settings.device_preference() == "auto"
    assert settings.window_geometry() is None
    assert settings.recent_folders() == []
