"""The extension registers and unregisters cleanly with the bpy wheel, and buttons say why not."""

from __future__ import annotations

import pytest

bpy = pytest.importorskip("bpy")

import blender_piva  # noqa: E402


def test_register_unregister_twice(fresh_bpy):
    for _ in range(2):
        blender_piva.register()
        assert hasattr(bpy.types.Scene, "piva") and hasattr(bpy.types.WindowManager, "piva_status")
        assert hasattr(bpy.types, "VIEW3D_PT_piva")
        assert bpy.types.VIEW3D_PT_piva.bl_category == "PIVA"
        blender_piva.unregister()
        assert not hasattr(bpy.types.Scene, "piva")
        assert not hasattr(bpy.types, "VIEW3D_PT_piva")


def test_edit_button_explains_why_it_cannot_run(registered):
    # No active object: the operator refuses, with a reason.
    assert not bpy.ops.piva.edit.poll()
    camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    bpy.context.scene.collection.objects.link(camera)
    with bpy.context.temp_override(active_object=camera, object=camera):
        assert not bpy.ops.piva.edit.poll()
    mesh = bpy.data.meshes.new("M")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new("M", mesh)
    bpy.context.scene.collection.objects.link(obj)
    with bpy.context.temp_override(active_object=obj, object=obj):
        assert not bpy.ops.piva.edit.poll()  # prompts are still empty
        bpy.context.scene.piva.source_prompt = "a red cube"
        bpy.context.scene.piva.target_prompt = "a blue cube"
        assert bpy.ops.piva.edit.poll()
    assert not bpy.ops.piva.cancel.poll() and not bpy.ops.piva.release.poll()


def test_panel_offers_every_method(registered):
    from blender_piva import contract

    items = {i.identifier for i in bpy.context.scene.piva.bl_rna.properties["method"].enum_items}
    assert items == set(contract.METHODS)


def test_variant_and_batch_buttons_explain_why_they_cannot_run(registered, tmp_path):
    settings = bpy.context.scene.piva
    mesh = bpy.data.meshes.new("M")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new("M", mesh)
    bpy.context.scene.collection.objects.link(obj)
    with bpy.context.temp_override(active_object=obj, object=obj, selected_objects=[obj]):
        settings.source_prompt = "a red cube"
        assert not bpy.ops.piva.run_variants.poll()  # no variant yet
        assert not bpy.ops.piva.variant_remove.poll()
        settings.target_prompt = "a blue cube"
        settings.seed = 4
        bpy.ops.piva.variant_add()
        bpy.ops.piva.variant_add()
        assert [(v.target_prompt, v.seed) for v in settings.variants] == [("a blue cube", 4), ("a blue cube", 5)]
        assert bpy.ops.piva.run_variants.poll()
        bpy.ops.piva.variant_remove()
        assert len(settings.variants) == 1
        assert bpy.ops.piva.run_batch.poll()
        settings.batch_source = "COLLECTION"
        assert not bpy.ops.piva.run_batch.poll()  # no collection chosen
        settings.batch_collection = bpy.context.scene.collection.children[0] if bpy.context.scene.collection.children else bpy.data.collections.new("C")
        assert bpy.ops.piva.run_batch.poll()
    assert not bpy.ops.piva.resume_queue.poll()  # no queue yet
    settings.queue_file = str(tmp_path / "missing" / "queue.json")
    assert not bpy.ops.piva.resume_queue.poll()
