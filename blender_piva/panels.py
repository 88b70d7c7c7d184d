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

        col = layout.column()
        col.prop(settings, "method")
        if settings.method == "piva":
            col.prop(settings, "lambda_identity")
        row = col.row(align=True)
        row.prop(settings, "steps")
        row.prop(settings, "seed")
        col.prop(settings, "preset")

        if status.running:
            box = layout.box()
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
        if status.error:
            box = layout.box()
            box.alert = True
            box.label(text=status.error, icon="ERROR")
            if status.hint:
                box.label(text=status.hint)
            if status.log_path:
                box.label(text=f"Log: {status.log_path}")


CLASSES = (VIEW3D_PT_piva,)
