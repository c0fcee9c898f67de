"""The window as a whole: light import, workspaces, model picker, failures, screenshots."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication
from qt_steps import configure_tiny_dcgan, load_dataset

from studio.qt.engine_jobs import FamilySpec
from studio.qt.train_controls import ModelPicker, format_duration, format_status

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_app_does_not_load_torch() -> None:
    code = (
        "import sys, studio.qt.app, studio.qt.main_window; "
        "heavy = [m for m in ('torch', 'diffusers', 'studio.engine.train') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_app_starts_no_tqdm_monitor_thread() -> None:
    code = (
        "import threading, tqdm, studio.qt.app as a; a.create_application(); "
        "bar = tqdm.tqdm(range(3)); list(bar); "
        "names = [t.name for t in threading.enumerate()]; print(names); "
        "raise SystemExit(1 if tqdm.tqdm.monitor is not None else 0)"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_workspaces_and_menus(window) -> None:
    names = [window.nav.item(i).text() for i in range(window.nav.count())]
    assert names == ["Dataset", "Train", "Compare", "Explore", "Canvas", "Prompt"]
    for index, name in enumerate(names):
        window.show_workspace(index)
        assert window.stack.currentIndex() == index, name
    window.show_workspace(window.CANVAS)
    assert window.stack.currentWidget() is window.canvas
    window.show_workspace(window.TRAIN)
    assert window.stack.currentWidget() is window.train_panel
    assert "Choose a folder of images" in window.train_panel.hint_label.text()
    menus = [a.text() for a in window.menuBar().actions()]
    assert menus == ["&File", "&Canvas", "&Help"]
    file_menu = window.menuBar().actions()[0].menu()
    file_items = [a.text() for a in file_menu.actions() if a.text()]
    assert file_items == [
        "Open folder…",
        "Use demo dataset",
        "Open run…",
        "Recent runs",
        "New project…",
        "Open project…",
        "Save project",
        "Project canvases",
        "Recent projects",
        "Quit",
    ]


def test_geometry_is_saved_on_close(qtbot, window, app_settings) -> None:
    window.resize(900, 640)
    assert window.close()
    assert app_settings.window_geometry() is not None


@dataclass
class _Cfg:
    pass


def _spec(key: str, kind: str, name: str, title: str = "") -> FamilySpec:
    return FamilySpec(key, kind, name, f"{name}: a summary", _Cfg, group_title=title)


def test_model_picker_groups_by_kind(qtbot) -> None:
    picker = ModelPicker()
    qtbot.addWidget(picker)
    picker.set_families(
        [
            _spec("gan.wgan_gp", "gan", "WGAN-GP", "GANs"),
            _spec("vae.vae", "vae", "VAE", "Variational autoencoders"),
            _spec("gan.dcgan", "gan", "DCGAN", "GANs"),
            _spec("diffusion.ddpm", "diffusion", "DDPM", "Diffusion models"),
            _spec("odd.thing", "odd", "Thing"),  # a plug-in with no title: its kind
        ]
    )
    combo = picker.combo
    texts = [combo.itemText(i).strip() for i in range(combo.count())]
    assert [t for t in texts if t] == [
        "GANs",
        "WGAN-GP",
        "DCGAN",
        "Variational autoencoders",
        "VAE",
        "Diffusion models",
        "DDPM",
        "Odd",
        "Thing",
    ]  # groups titled by FamilyInfo, in the registry's order of first appearance
    headers = [i for i in range(combo.count()) if combo.itemText(i) == "GANs"]
    assert not combo.model().item(headers[0]).isEnabled()  # a header cannot be chosen
    assert picker.current_key() == "gan.wgan_gp"  # the first model, not a header
    assert picker.summary.text() == "WGAN-GP: a summary"
    with qtbot.waitSignal(picker.model_changed) as blocker:
        assert picker.set_current_key("vae.vae")
    assert blocker.args == ["vae.vae"]


def test_registry_models_are_listed(window) -> None:
    from studio.models.registry import FAMILIES

    listed = set(window.train_panel.picker.keys())
    broken = [line for line in window.train_panel.view.log_lines() if "unavailable" in line]
    assert "gan.dcgan" in listed
    assert len(listed) + len(broken) == len(FAMILIES)  # every family: listed, or said why not


def test_status_line_format() -> None:
    from studio.core.jobs import Progress

    info = {"images_per_s": 812.4, "eta_s": 83, "device": "CPU (8 threads)", "memory": 0}
    text = format_status(Progress("train", 1234, 5000, info=info))
    assert text == "Step 1,234 / 5,000 · 812 img/s · ETA 1:23 · CPU (8 threads)"
    grow = format_status(Progress("train", 3, 50, info={**info, "phase": "growing: 8 px stable"}))
    assert grow.startswith("Step 3 / 50 · growing: 8 px stable · 812 img/s")
    assert format_duration(3723) == "1:02:03"
    assert format_status(Progress("decode", 3, 10, message="Decoding images: 3/10")) == (
        "Decoding images: 3/10"
    )


def test_a_failed_job_shows_its_message_in_a_banner(qtbot, window, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "gone"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / f"{i}.png")
    assert load_dataset(qtbot, window, folder) == 4
    shutil.rmtree(folder)  # the folder disappears between the scan and the training
    window.show_workspace(window.TRAIN)
    configure_tiny_dcgan(window, steps=10)
    panel = window.train_panel
    with qtbot.waitSignal(window.runner.job_finished, timeout=60_000) as blocker:
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert not blocker.args[1].ok
    banner = panel.view.banner
    assert banner.isVisible() and banner.level() == "error"
    assert "does not exist" in banner.text() and "Traceback" not in banner.text()
    assert panel.start_button.isEnabled()


def test_screenshot_after_a_short_training(qtbot, app_settings, tmp_path) -> None:
    """Renders the themed window offscreen after training on a few demo shapes.

    With ``STUDIO_SCREENSHOT_DIR`` set it also writes the PNGs there (the docs use
    ``docs/images``), training longer so the samples show something.
    """
    import pyqtgraph as pg

    from studio.core.jobs import run_sync
    from studio.engine.demo import make_demo_dataset
    from studio.qt.main_window import MainWindow
    from studio.qt.theme import apply_theme

    docs_dir = os.environ.get("STUDIO_SCREENSHOT_DIR")
    data = run_sync(make_demo_dataset(tmp_path / "shapes", count=240, size=32)).result

    app = QApplication.instance()
    saved = (app.style().name(), QPalette(app.palette()), app.styleSheet(), dict(pg.CONFIG_OPTIONS))
    apply_theme(app)
    try:
        win = MainWindow(app_settings)
        qtbot.addWidget(win)
        win.resize(1360, 860)
        win.show()
        qtbot.waitUntil(win.train_panel.families_loaded, timeout=60_000)
        assert load_dataset(qtbot, win, data) == 240
        qtbot.wait(50)  # let the layout settle after the scan
        shots = {"dataset_panel.png": win.grab()}
        win.show_workspace(win.TRAIN)
        configure_tiny_dcgan(win, steps=1500 if docs_dir else 100, sample_every=50, log_every=5)
        if docs_dir:  # big enough to draw recognisable shapes after a minute or two
            win.train_panel.model_form.set_values({"latent_dim": 32, "width": 32})
            win.train_panel.options_form.set_values({"batch_size": 32})
        with qtbot.waitSignal(win.runner.job_finished, timeout=600_000):
            win.train_panel.start()
        qtbot.wait(100)  # one plot redraw
        shots["main_window.png"] = win.grab()
        out_dirs = [tmp_path]
        if docs_dir:
            out_dirs.append(Path(docs_dir))
        for out in out_dirs:
            out.mkdir(parents=True, exist_ok=True)
            for name, pixmap in shots.items():
                assert pixmap.save(str(out / name))
                assert (out / name).stat().st_size > 10_000
        win.close()
    finally:
        style, palette, sheet, options = saved
        app.setStyleSheet(sheet)
        app.setStyle(style)
        app.setPalette(palette)
        pg.setConfigOptions(**options)
