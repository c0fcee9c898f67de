"""SettingsForm: widgets from metadata, main fields first, round trips, learning-rate boxes."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import QCheckBox, QComboBox, QLineEdit, QSpinBox

from studio.qt.forms import FloatSpinBox, SettingsForm, format_number


def opt(default, **meta):
    meta.setdefault("help", "")
    return field(default=default, metadata=meta)


@dataclass
class Example:
    resolution: int = opt(32, label="Resolution", choices=(32, 64), main=True)
    width: int = opt(64, label="Width", minimum=8, maximum=256)
    lr: float = opt(2e-4, label="Learning rate", minimum=1e-6, maximum=1e-2, main=True)
    beta: float = opt(0.5, label="Beta", minimum=0.0, maximum=0.999)
    sn: bool = opt(False, label="Spectral norm", help="steadier")
    mode: str = opt("hinge", label="Loss", choices=("hinge", "bce"), main=True)
    name: str = opt("run", label="Name")
    internal: int = 3  # no metadata: not a setting


def test_widgets_follow_the_metadata(qtbot) -> None:
    form = SettingsForm(Example)
    qtbot.addWidget(form)
    assert form.names() == ["lr", "mode", "width", "beta", "sn", "name"]  # main first
    assert "resolution" not in form.names()  # comes from the dataset
    assert "internal" not in form.names()
    assert isinstance(form.widget("mode"), QComboBox)
    assert isinstance(form.widget("sn"), QCheckBox)
    assert isinstance(form.widget("width"), QSpinBox)
    assert isinstance(form.widget("name"), QLineEdit)
    width = form.widget("width")
    assert (width.minimum(), width.maximum()) == (8, 256)
    assert form.widget("sn").toolTip() == "steadier"
    lr = form.widget("lr")
    assert isinstance(lr, FloatSpinBox)
    assert lr.text() == "2e-4"


def test_values_round_trip(qtbot) -> None:
    form = SettingsForm(Example)
    qtbot.addWidget(form)
    assert form.values() == {
        "lr": 2e-4,
        "mode": "hinge",
        "width": 64,
        "beta": 0.5,
        "sn": False,
        "name": "run",
    }
    new = {"lr": 3.5e-5, "mode": "bce", "width": 96, "beta": 0.9, "sn": True, "name": "x"}
    with qtbot.waitSignal(form.values_changed):
        form.set_values({**new, "unknown": 1, "resolution": 128})
    assert form.values() == new
    form.reset()
    assert form.values()["lr"] == 2e-4


def test_edits_emit_values_changed(qtbot) -> None:
    form = SettingsForm(Example)
    qtbot.addWidget(form)
    with qtbot.waitSignal(form.values_changed):
        form.widget("sn").setChecked(True)
    assert form.values()["sn"] is True


def test_out_of_range_values_are_clamped(qtbot) -> None:
    form = SettingsForm(Example)
    qtbot.addWidget(form)
    form.set_values({"width": 10_000, "lr": 5.0})
    assert form.values()["width"] == 256
    assert form.values()["lr"] == 1e-2


def test_learning_rate_box_steps_on_a_1_2_5_ladder(qtbot) -> None:
    box = FloatSpinBox(1e-6, 1e-2, log_steps=True)
    qtbot.addWidget(box)
    box.setValue(2e-4)
    box.stepBy(1)
    assert box.value() == pytest.approx(5e-4)
    box.stepBy(2)
    assert box.value() == pytest.approx(2e-3)
    box.stepBy(-3)
    assert box.value() == pytest.approx(2e-4)  # three rungs down: 1e-3, 5e-4, 2e-4
    box.setValue(3e-4)  # between rungs
    box.stepBy(-1)
    assert box.value() == pytest.approx(2e-4)
    box.setValue(1e-2)
    box.stepBy(5)
    assert box.value() == pytest.approx(1e-2)  # clamped at the maximum


def test_float_box_parses_what_people_type(qtbot) -> None:
    box = FloatSpinBox(1e-6, 1e-2, log_steps=True)
    qtbot.addWidget(box)
    assert box.validate("3e-5", 0)[0] == QValidator.State.Acceptable
    assert box.validate("3e-", 0)[0] == QValidator.State.Intermediate
    assert box.validate("abc", 0)[0] == QValidator.State.Invalid
    assert box.validate("5", 0)[0] == QValidator.State.Intermediate  # out of range
    assert box.valueFromText("1.5e-4") == pytest.approx(1.5e-4)
    assert format_number(0.0002) == "2e-4"
    assert format_number(1.25e-5) == "1.25e-5"
    assert format_number(0.5) == "0.5"
    assert format_number(1e5) == "1e5" and format_number(12345.5) == "12345.5"
    assert format_number(0) == "0"


def test_form_for_a_real_model_config(qtbot) -> None:
    from studio.models.gan.dcgan import DCGANConfig

    form = SettingsForm(DCGANConfig)
    qtbot.addWidget(form)
    names = form.names()
    assert not {"resolution", "channels", "num_classes"} & set(names)
    assert names[:3] == ["latent_dim", "lr_g", "lr_d"]  # the main settings lead
    assert not form.more.isHidden()  # width, betas, spectral norm, R1 sit under "More"
    assert form.values()["lr_g"] == pytest.approx(2e-4)
    DCGANConfig.from_dict(form.values())  # everything the form returns is accepted


def _registry_keys() -> list[str]:
    from studio.models.registry import FAMILIES

    return list(FAMILIES)


@pytest.mark.parametrize("key", _registry_keys())
def test_every_registered_family_gets_a_working_form(qtbot, key: str) -> None:
    from studio.models.registry import get_family

    try:
        family = get_family(key)
    except Exception as err:  # a family being written elsewhere may not import yet
        pytest.skip(f"{key} does not import: {err}")
    form = SettingsForm(family.Config)
    qtbot.addWidget(form)
    assert form.names(), f"{key} shows no settings"
    values = form.values()
    config = family.Config.from_dict(values)  # every value the form returns is accepted
    defaults = family.Config()
    for name, value in values.items():  # the form starts at the defaults
        default = getattr(defaults, name)
        assert value == (pytest.approx(default) if isinstance(value, float) else default), name
    assert isinstance(config, family.Config)


def test_the_run_a_family_builds_on_comes_first_even_when_a_subclass_declares_it(qtbot):
    """diffusion.latent_text declares its autoencoder after TextDiffusion's fields; the form
    still shows it first (nothing else means much until it is chosen)."""
    from PySide6.QtWidgets import QFormLayout

    from studio.models.registry import get_family

    form = SettingsForm(get_family("diffusion.latent_text").Config)
    qtbot.addWidget(form)
    main = form.findChildren(QFormLayout)[0]
    first = main.itemAt(0, QFormLayout.ItemRole.FieldRole).widget()
    assert first.objectName() == "setting_autoencoder"


def test_a_float_box_has_room_for_values_between_its_ends(qtbot):
    box = FloatSpinBox(0.0, 0.5)
    qtbot.addWidget(box)
    box.setValue(0.15)
    box.resize(box.sizeHint())  # what a form gives it
    box.show()
    qtbot.waitExposed(box)
    assert box.text() == "0.15"
    assert box.lineEdit().width() >= box.fontMetrics().horizontalAdvance("0.15") + 4
