"""The panel's negative prompt and memory mode reach the request; the estimate line reads."""

from __future__ import annotations

import pytest

bpy = pytest.importorskip("bpy")



def test_panel_settings_flow_into_the_request(registered):
    from blender_piva.contract.layout import MEMORY_MODES
    from blender_piva.ui.status import request_from_panel

    settings = bpy.context.scene.piva
    items = tuple(i.identifier for i in settings.bl_rna.properties["memory"].enum_items)
    assert items == MEMORY_MODES and settings.memory == "balanced" and settings.negative_prompt == ""
    settings.source_prompt, settings.target_prompt = "a red cube", "a blue cube"
    settings.negative_prompt, settings.memory = "blurry", "low"
    request = request_from_panel(bpy.context, "Cube")
    assert request.negative_prompt == "blurry" and request.model.memory == "low"


def test_the_estimate_line_follows_the_method_and_mode(registered):
    from blender_piva.ui.panels import _memory_line

    settings = bpy.context.scene.piva
    settings.method, settings.memory = "piva", "fast"
    fast = _memory_line(bpy.context, settings)
    settings.memory = "low"
    low = _memory_line(bpy.context, settings)
    assert fast.startswith("≈ ") and fast.endswith("GiB GPU (computed)") and low != fast


def test_the_job_spec_gets_the_negative_prompt_and_the_memory_mode(registered, tmp_path):
    import toy_world

    from blender_piva import contract
    from blender_piva.core.backend_process import BackendConfig
    from blender_piva.core.request import EditRequest
    from blender_piva.scene.edit_job import EditJob, resume_inputs

    toy_world.add_object("red", "cube", name="Cube")
    request = EditRequest(
        object_name="Cube", source_prompt="a red cube", target_prompt="a blue cube", negative_prompt=" blurry ",
        preset="test", job_root=str(tmp_path / "jobs"), stages=[], device="cpu", use_cache=False,
        model=contract.ModelSettings(memory="low"),
    )
    spec = EditJob(request, BackendConfig(python="python3", backend_root=str(tmp_path))).build_spec()
    assert spec.negative_prompt == "blurry" and spec.model.memory == "low"
    assert resume_inputs(spec)["negative_prompt"] == "blurry"
