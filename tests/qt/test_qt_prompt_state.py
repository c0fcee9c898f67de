"""The Prompt workspace's request being edited is a plain object (issue 14): it round-trips a
GenerateRequest, the settings form shows it and writes edits back, and a recall sets it."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QLabel

from studio.engine.prompt.request import GenerateRequest
from studio.qt.prompt.params import ParamsForm
from studio.qt.prompt.recall import Recall
from studio.qt.prompt.state import PromptRequestState
from studio.qt.widgets import Banner


class _Models:
    """The model list as Recall sees it: which models it was asked to choose."""

    def __init__(self) -> None:
        self.selected: list[str] = []

    def select(self, key: str) -> bool:
        self.selected.append(key)
        return True


def test_the_state_round_trips_a_generate_request() -> None:
    request = GenerateRequest(
        model="/models/tiny-sd", mode="inpaint", prompt="a red circle", negative_prompt="blur",
        steps=12, guidance=5.5, scheduler="euler_a", seed=3_000_000_000, width=64, height=48,
        batch_count=3, strength=0.4, mask_blur=8, only_masked=True, only_masked_padding=16,
        memory="low", compile=True,
    )  # fmt: skip
    state = PromptRequestState.from_request(request)
    assert state.model == "/models/tiny-sd" and state.mode == "inpaint"
    again = state.to_request()
    assert again == request
    assert PromptRequestState.from_request(again).values() == state.values()

    state.set_seed_locked(True)
    assert state.seed_for_next_run() == 3_000_000_000  # locked: Generate redoes the image
    state.set_seed_locked(False)
    drawn = {state.seed_for_next_run() for _ in range(3)}
    assert len(drawn) > 1 and all(0 <= seed < 2**32 for seed in drawn)


def test_a_recall_sets_the_state_and_the_form_shows_it(qtbot) -> None:
    state = PromptRequestState()
    form = ParamsForm()
    qtbot.addWidget(form)
    form.bind(state)
    seen: list[dict[str, Any]] = []
    state.on_changed(lambda: seen.append(state.values()))

    form.set_values({"steps": 9})  # an edit in the form reaches the state
    form.prompt_edit.setPlainText("typed")
    assert state["steps"] == 9 and state["prompt"] == "typed" and seen

    banner, status = Banner(), QLabel()
    restored: list[tuple[str, list[str]]] = []
    models = _Models()
    recall = Recall(state, None, models, banner, status, lambda t, n: restored.append((t, n)))  # type: ignore[arg-type]
    metadata = {
        "model": "/models/tiny-sd", "prompt": "a green triangle", "negative_prompt": "blur",
        "steps": 7, "guidance": 5.5, "scheduler": "euler_a", "seed": 777, "width": 32,
        "height": 24, "batch_count": 2, "flux_capacitor": 1,
    }  # fmt: skip
    names = recall.recall(metadata, "a PNG")
    assert "flux_capacitor" not in names and "seed" in names and "prompt" in names
    wanted = {k: v for k, v in metadata.items() if k not in ("model", "flux_capacitor")}
    assert {k: state[k] for k in wanted} == wanted
    assert {k: form.values()[k] for k in wanted} == wanted  # the widgets show it
    assert state.seed_locked and form.lock_seed.isChecked()  # Generate redoes the image
    assert models.selected == ["/models/tiny-sd"]
    assert restored and restored[0][1] == names and "a PNG" in status.text()

    # A seed out of the form's range is refused, never clamped; the rest is restored.
    names = recall.recall({"seed": 2**64, "steps": 5}, "another PNG")
    assert names == ["steps"] and state["seed"] == 777 and form.values()["seed"] == 777
    assert form.values()["steps"] == 5 and "except seed" in banner.text()
