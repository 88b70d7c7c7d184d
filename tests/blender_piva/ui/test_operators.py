"""What the UI's modal path shows while the backend runs (the modal loop itself needs a window)."""

from __future__ import annotations

import pytest

bpy = pytest.importorskip("bpy")

import blender_piva  # noqa: E402
from blender_piva import contract  # noqa: E402
from blender_piva.ui import status as ui_status  # noqa: E402


@pytest.fixture
def status(fresh_bpy):
    blender_piva.register()
    yield bpy.context.window_manager.piva_status
    blender_piva.unregister()


def test_events_drive_the_progress_bar_preview_and_errors(status, tmp_path):
    ui_status.update_status(status, contract.Event(type="stage", stage="edit", total=200))
    ui_status.update_status(status, contract.Event(type="progress", stage="edit", step=50, total=200, losses={"grad_norm": 1.5}))
    assert status.stage == "edit" and status.step == 50 and status.total == 200
    assert status.progress == pytest.approx(0.25)
    assert status.eta_s >= 0.0 and "grad_norm 1.5" in status.message
    preview = tmp_path / "edit_000050.png"
    ui_status.update_status(status, contract.Event(type="preview", stage="edit", step=50, preview=str(preview)))
    assert status.preview_path == str(preview)
    ui_status.update_status(status, contract.Event(type="error", message="out of memory", hint="lower the resolution"))
    assert status.error == "out of memory" and status.hint == "lower the resolution"


def test_request_comes_from_the_panel_settings(status):
    settings = bpy.context.scene.piva
    settings.source_prompt, settings.target_prompt = "a red cube", "a blue torus"
    settings.method, settings.steps, settings.seed, settings.lambda_identity = "ssd", 0, 7, 0.3
    request = ui_status.request_from_panel(bpy.context, "Cube")
    assert (request.source_prompt, request.target_prompt, request.method) == ("a red cube", "a blue torus", "ssd")
    assert request.steps is None  # 0 in the panel = the preset's
    assert request.seed == 7 and request.lambda_identity == pytest.approx(0.3) and request.preset == "preview"


def test_an_untouched_lambda_leaves_pivas_own_default(status):
    settings = bpy.context.scene.piva
    settings.source_prompt, settings.target_prompt = "a red cube", "a blue torus"
    assert ui_status.request_from_panel(bpy.context, "Cube").lambda_identity is None
    settings.lambda_identity = 0.4  # set by the user, even to the displayed value: sent as given
    assert ui_status.request_from_panel(bpy.context, "Cube").lambda_identity == pytest.approx(0.4)
