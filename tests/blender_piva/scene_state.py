"""A deep snapshot of the bpy state a user cares about, to assert "nothing changed".

``fingerprint()`` returns plain, comparable Python data (dicts, lists, tuples, rounded floats,
hashes). Tests take one before an operation and assert equality after it, e.g. after a failed or
cancelled capture. On inequality, :func:`diff` names the first differing entries.
"""

from __future__ import annotations

import hashlib
from typing import Any

import bpy
import numpy as np

COLLECTIONS = (
    "objects",
    "meshes",
    "materials",
    "images",
    "scenes",
    "cameras",
    "lights",
    "worlds",
    "collections",
    "node_groups",
    "textures",
    "curves",
    "actions",
)
"""``bpy.data`` collections whose names (and user counts) are part of the fingerprint."""


def fingerprint() -> dict[str, Any]:
    """Snapshot of datablocks, objects, meshes, scenes, materials and the active object."""
    state: dict[str, Any] = {}
    for name in COLLECTIONS:
        blocks = getattr(bpy.data, name)
        state[f"data.{name}"] = sorted((b.name, b.users, b.use_fake_user) for b in blocks)
    state["objects"] = {ob.name: _object(ob) for ob in bpy.data.objects}
    state["meshes"] = {me.name: _mesh(me) for me in bpy.data.meshes}
    state["materials"] = {ma.name: _material(ma) for ma in bpy.data.materials}
    state["scenes"] = {sc.name: _scene(sc) for sc in bpy.data.scenes}
    context = bpy.context
    state["context.scene"] = context.scene.name if context.scene else None
    state["context.active_object"] = context.active_object.name if context.active_object else None
    state["context.selected_objects"] = sorted(ob.name for ob in getattr(context, "selected_objects", []) or [])
    state["context.mode"] = context.mode
    return state


def diff(before: dict[str, Any], after: dict[str, Any], limit: int = 10) -> list[str]:
    """Human-readable differences between two fingerprints (at most ``limit``)."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if len(out) >= limit or a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                if key not in a or key not in b:
                    out.append(f"{path}.{key}: {'added' if key not in a else 'removed'}")
                else:
                    walk(a[key], b[key], f"{path}.{key}")
        else:
            out.append(f"{path}: {a!r} -> {b!r}"[:400])

    walk(before, after, "state")
    return out


def _round(values: Any, digits: int = 6) -> tuple:
    return tuple(round(float(v), digits) for v in values)


def _matrix(m: Any) -> tuple:
    return tuple(_round(row) for row in m)


def _object(ob: "bpy.types.Object") -> dict[str, Any]:
    return {
        "type": ob.type,
        "data": ob.data.name if ob.data is not None else None,
        "matrix_world": _matrix(ob.matrix_world),
        "location": _round(ob.location),
        "rotation_mode": ob.rotation_mode,
        "rotation_euler": _round(ob.rotation_euler),
        "rotation_quaternion": _round(ob.rotation_quaternion),
        "scale": _round(ob.scale),
        "parent": ob.parent.name if ob.parent else None,
        "hide_viewport": ob.hide_viewport,
        "hide_render": ob.hide_render,
        "hide_get": _view_layer_flags(ob),
        "material_slots": tuple((s.link, s.material.name if s.material else None) for s in ob.material_slots),
        "modifiers": tuple((m.name, m.type, m.show_viewport, m.show_render) for m in ob.modifiers),
        "users_collection": tuple(sorted(c.name for c in ob.users_collection)),
    }


def _view_layer_flags(ob: "bpy.types.Object") -> tuple:
    """Per scene and view layer: (hidden, selected) — selection lives in view layers."""
    flags = []
    for scene in bpy.data.scenes:
        for layer in scene.view_layers:
            if ob.name in layer.objects:
                flags.append((scene.name, layer.name, ob.hide_get(view_layer=layer), ob.select_get(view_layer=layer)))
    return tuple(flags)


def _mesh(me: "bpy.types.Mesh") -> dict[str, Any]:
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    loops = np.empty(len(me.loops), np.int32)
    me.loops.foreach_get("vertex_index", loops)
    starts = np.empty(len(me.polygons), np.int32)
    me.polygons.foreach_get("loop_start", starts)
    mat_index = np.empty(len(me.polygons), np.int32)
    me.polygons.foreach_get("material_index", mat_index)
    return {
        "counts": (len(me.vertices), len(me.edges), len(me.polygons), len(me.loops)),
        "vertices": hashlib.sha1(np.round(co, 6).tobytes()).hexdigest(),
        "polygons": hashlib.sha1(loops.tobytes() + starts.tobytes() + mat_index.tobytes()).hexdigest(),
        "materials": tuple(m.name if m else None for m in me.materials),
        "attributes": tuple(sorted((a.name, a.domain, a.data_type) for a in me.attributes)),
        "uv_layers": tuple(uv.name for uv in me.uv_layers),
    }


def _material(ma: "bpy.types.Material") -> dict[str, Any]:
    nodes = ()
    if ma.node_tree is not None:
        nodes = tuple(sorted((n.name, n.bl_idname) for n in ma.node_tree.nodes))
    return {"diffuse_color": _round(ma.diffuse_color), "nodes": nodes}


def _scene(sc: "bpy.types.Scene") -> dict[str, Any]:
    render = sc.render
    state = {
        "engine": render.engine,
        "resolution": (render.resolution_x, render.resolution_y, render.resolution_percentage),
        "film_transparent": render.film_transparent,
        "filepath": render.filepath,
        "use_persistent_data": render.use_persistent_data,
        "image_format": (render.image_settings.file_format, render.image_settings.color_mode),
        "view_transform": sc.view_settings.view_transform,
        "look": sc.view_settings.look,
        "camera": sc.camera.name if sc.camera else None,
        "world": sc.world.name if sc.world else None,
        "frame": (sc.frame_current, sc.frame_start, sc.frame_end),
        "objects": tuple(sorted(ob.name for ob in sc.objects)),
        "collection_objects": tuple(sorted(ob.name for ob in sc.collection.objects)),
        "children": tuple(sorted(c.name for c in sc.collection.children_recursive)),
        "view_layers": tuple(layer.name for layer in sc.view_layers),
        "active_objects": tuple(
            (layer.name, layer.objects.active.name if layer.objects.active else None) for layer in sc.view_layers
        ),
    }
    if render.engine == "CYCLES" or hasattr(sc, "cycles"):
        state["cycles"] = (sc.cycles.samples, sc.cycles.device, sc.cycles.use_denoising, sc.cycles.seed)
    return state
