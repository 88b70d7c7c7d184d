"""The sidebar panel (3D Viewport > Sidebar > PIVA). It only draws."""

from __future__ import annotations

import os

import bpy

_PREVIEWS = {"collection": None, "path": "", "mtime": 0.0}


def _preview_icon(path: str) -> int:
    """Icon id of the latest preview PNG (bpy.utils.previews: no datablock in the user's file)."""
    import bpy.utils.previews

    if not path or not os.path.isfile(path):
        return 0
    mtime = os.path.getmtime(path)
    if _PREVIEWS["collection"] is None:
        _PREVIEWS["collection"] = bpy.utils.previews.new()
    pcoll = _PREVIEWS["collection"]
    if path != _PREVIEWS["path"] or mtime != _PREVIEWS["mtime"]:
        pcoll.clear()
        pcoll.load("latest", path, "IMAGE", force_reload=True)
        _PREVIEWS["path"], _PREVIEWS["mtime"] = path, mtime
    return pcoll["latest"].icon_id


def _memory_line(context, settings) -> str:
    """``"≈ 7.9 GiB GPU (computed)"`` for the method, edit resolution and memory mode chosen."""
    from ..core import presets
    from ..core.memory_estimate import MemoryEstimateError, describe
    from .preferences import get_preferences

    prefs = get_preferences(context)
    resolution = getattr(prefs, "render_resolution", 0) if prefs is not None else 0
    if not resolution:
        resolution = presets.get_preset(settings.preset).edit.render_resolution
    try:
        return describe(settings.method, int(resolution), settings.memory)
    except MemoryEstimateError as exc:
        return str(exc)


def free_previews() -> None:
    import bpy.utils.previews

    if _PREVIEWS["collection"] is not None:
        bpy.utils.previews.remove(_PREVIEWS["collection"])
        _PREVIEWS.update(collection=None, path="", mtime=0.0)


class VIEW3D_PT_piva(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "PIVA"
    bl_label = "PIVA Edit"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.piva
        status = context.window_manager.piva_status
        obj = context.active_object

        col = layout.column(align=True)
        col.label(text=f"Object: {obj.name}" if obj is not None else "Object: none selected", icon="MESH_DATA")
        col.prop(settings, "source_prompt")
        col.prop(settings, "target_prompt")
        col.prop(settings, "negative_prompt")

        col = layout.column()
        col.prop(settings, "method")
        if settings.method == "piva":
            col.prop(settings, "lambda_identity")
        row = col.row(align=True)
        row.prop(settings, "steps")
        row.prop(settings, "seed")
        col.prop(settings, "preset")
        col.prop(settings, "memory")
        col.prop(settings, "field")
        col.label(text=_memory_line(context, settings), icon="MEMORY")

        row = col.row(align=True)
        row.prop(settings, "use_cache")
        row.operator("piva.clear_cache", text="", icon="TRASH")

        if status.running:
            box = layout.box()
            if status.queue_item:
                box.label(text=f"Item {status.queue_item}", icon="SEQUENCE")
            eta = f", {status.eta_s:.0f} s left" if status.eta_s >= 0 else ""
            box.progress(factor=status.progress, type="BAR", text=f"{status.stage} {status.step}/{status.total}{eta}")
            if status.message:
                box.label(text=status.message)
            icon = _preview_icon(status.preview_path)
            if icon:
                box.template_icon(icon_value=icon, scale=8.0)
            row = box.row(align=True)
            row.operator("piva.cancel", icon="CANCEL")
            row.operator("piva.release", icon="X")
        else:
            layout.operator("piva.edit", icon="SHADERFX")
            if status.job_dir:  # the last job's report (greyed out until the job wrote one)
                row = layout.row(align=True)
                row.operator("piva.open_report", icon="TEXT")
                row.operator("piva.open_report", text="", icon="IMAGE_DATA").in_blender = True
        if status.error:
            box = layout.box()
            box.alert = True
            box.label(text=status.error, icon="ERROR")
            if status.hint:
                box.label(text=status.hint)
            if status.log_path:
                box.label(text=f"Log: {status.log_path}")



class PIVA_UL_variants(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        row.prop(item, "target_prompt", text="", emboss=False, icon="OUTLINER_OB_MESH")
        row.prop(item, "seed", text="Seed")


class _SubPanel:
    """Where the PIVA sub-panels live: under the main panel in the sidebar's PIVA tab."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "PIVA"
    bl_parent_id = "VIEW3D_PT_piva"


class VIEW3D_PT_piva_variants(_SubPanel, bpy.types.Panel):
    bl_label = "Prompt Variants"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        settings = context.scene.piva
        row = layout.row()
        row.template_list("PIVA_UL_variants", "", settings, "variants", settings, "variant_index", rows=3)
        col = row.column(align=True)
        col.operator("piva.variant_add", icon="ADD", text="")
        col.operator("piva.variant_remove", icon="REMOVE", text="")
        layout.operator("piva.run_variants", icon="SHADERFX")


class VIEW3D_PT_piva_batch(_SubPanel, bpy.types.Panel):
    bl_label = "Batch"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        settings = context.scene.piva
        layout.prop(settings, "batch_source")
        if settings.batch_source == "COLLECTION":
            layout.prop(settings, "batch_collection")
        layout.label(text="'{name}' in a prompt = each object's name", icon="INFO")
        layout.operator("piva.run_batch", icon="SHADERFX")


class VIEW3D_PT_piva_queue(_SubPanel, bpy.types.Panel):
    """Every item of this scene's latest variants or batch, with its state (read from queue.json)."""

    bl_label = "Queue"

    ICONS = {"pending": "TIME", "running": "PLAY", "done": "CHECKMARK", "failed": "ERROR", "cancelled": "PAUSE"}

    @classmethod
    def poll(cls, context):
        return bool(context.scene.piva.queue_file)

    def draw(self, context):
        from ..core.queue import load_queue_cached

        layout = self.layout
        queue = load_queue_cached(bpy.path.abspath(context.scene.piva.queue_file))
        if queue is None:
            layout.label(text="The queue file is missing or unreadable", icon="ERROR")
            return
        counts = queue.counts()
        layout.label(text=f"{queue.kind}: {counts['done']}/{len(queue.items)} done, {counts['failed']} failed")
        col = layout.column(align=True)
        for item in queue.items:
            row = col.row()
            row.label(text=item.label, icon=self.ICONS.get(item.status, "QUESTION"))
            if item.status in ("failed", "cancelled") and item.message:
                sub = col.row()
                sub.alert = item.status == "failed"
                sub.label(text=f"    {item.message}")
        row = layout.row(align=True)
        row.operator("piva.resume_queue", icon="RECOVER_LAST")
        row.operator("piva.resume_queue", text="Retry Failed", icon="FILE_REFRESH").retry_failed = True
        if queue.kind == "variants":
            layout.operator("piva.open_contact_sheet", icon="IMAGE_DATA")


CLASSES = (VIEW3D_PT_piva, PIVA_UL_variants, VIEW3D_PT_piva_variants, VIEW3D_PT_piva_batch, VIEW3D_PT_piva_queue)
