"""A hash of what the capture sees of an object: the key of the capture and fit cache (cache.py).

What is hashed (everything a Cycles render of the object in the normalised frame depends on):

* the evaluated mesh (modifiers applied) in the normalised frame: moving or uniformly scaling the
  object keeps its key, rotating it or editing a vertex changes it. Coordinates are quantised to
  1e-5 of the box so that float noise from re-evaluation does not miss the cache;
* topology, smooth/flat shading (the corner normals), UV maps and colour attributes;
* every material slot's material: its node graph (node types, settings, socket defaults, links,
  node groups, recursively) and its images (file path, size and modification time; the bytes of
  packed images; the settings of generated ones).

A change that the hash misses (e.g. an image edited in place without being saved) reuses a stale
capture; ``Clear cache`` in the panel (or ``--no-cache``) forces a fresh one.
"""

from __future__ import annotations

import hashlib
import os

import bpy
import numpy as np

from ..core.camera_rig import normalization_from_points

QUANTUM = 1e-5
"""Grid of the quantised normalised coordinates and normals."""

_SKIPPED_NODE_PROPS = {
    "rna_type", "name", "label", "location", "location_absolute", "width", "height", "dimensions",
    "select", "show_options", "show_preview", "show_texture", "hide", "parent", "use_custom_color",
    "color", "type", "inputs", "outputs", "internal_links", "width_hidden", "color_tag", "warning_propagation",
    "is_active_output",
}
"""Node properties that only change how the node editor looks, never the render."""


def object_fingerprint(obj: "bpy.types.Object", depsgraph: "bpy.types.Depsgraph | None" = None) -> str:
    """sha256 hex digest of the object's appearance to the capture (see the module docstring)."""
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    digest = hashlib.sha256()
    mesh = evaluated.to_mesh()  # temporary, owned by the evaluated object: no datablock is added
    try:
        _hash_mesh(digest, mesh, np.array(evaluated.matrix_world, np.float64))
    finally:
        evaluated.to_mesh_clear()
    seen: set[int] = set()
    for slot in evaluated.material_slots:
        material = slot.material.original if slot.material is not None else None
        _hash_material(digest, material, seen)
    return digest.hexdigest()


def _quantise(values: np.ndarray) -> bytes:
    return np.round(np.asarray(values, np.float64) / QUANTUM).astype(np.int64).tobytes()


def _array(collection, attribute: str, width: int, dtype) -> np.ndarray:
    out = np.empty(len(collection) * width, dtype)
    collection.foreach_get(attribute, out)
    return out.reshape(-1, width) if width > 1 else out


def _hash_mesh(digest, mesh: "bpy.types.Mesh", matrix_world: np.ndarray) -> None:
    local = _array(mesh.vertices, "co", 3, np.float32).astype(np.float64)
    corner_vertices = _array(mesh.loops, "vertex_index", 1, np.int32)
    world = local @ matrix_world[:3, :3].T + matrix_world[:3, 3]
    used = world[np.unique(corner_vertices)] if len(corner_vertices) else world
    normalized = world
    if len(used):
        try:
            to_box = normalization_from_points(used)
            normalized = world @ to_box[:3, :3].T + to_box[:3, 3]
        except ValueError:
            pass  # a degenerate mesh: capture refuses it with its own message
    digest.update(b"mesh")
    digest.update(_quantise(normalized))
    digest.update(corner_vertices.tobytes())
    digest.update(_array(mesh.polygons, "loop_start", 1, np.int32).tobytes())
    digest.update(_array(mesh.polygons, "material_index", 1, np.int32).tobytes())
    # Corner normals carry smooth/flat shading, auto smooth and custom normals; in the object's
    # local frame they are invariant to moving it, rotated with it otherwise (so rotate them).
    normals = _array(mesh.corner_normals, "vector", 3, np.float32).astype(np.float64)
    digest.update(_quantise(normals @ matrix_world[:3, :3].T / max(np.abs(matrix_world[:3, :3]).max(), 1e-12)))
    for uv_layer in mesh.uv_layers:
        digest.update(f"uv:{uv_layer.name}:{uv_layer.active_render}".encode())
        digest.update(_quantise(_array(uv_layer.data, "uv", 2, np.float32)))
    for attribute in mesh.color_attributes:
        digest.update(f"color:{attribute.name}:{attribute.domain}:{attribute.data_type}".encode())
        digest.update(_quantise(_array(attribute.data, "color", 4, np.float32)))
    render_color = mesh.color_attributes.render_color_index
    digest.update(f"render_color:{render_color}".encode())


def _hash_material(digest, material: "bpy.types.Material | None", seen: set[int]) -> None:
    if material is None:
        digest.update(b"material:none")
        return
    digest.update(f"material:{material.name_full}".encode())
    digest.update(_quantise(tuple(material.diffuse_color)))
    if material.node_tree is not None:
        _hash_node_tree(digest, material.node_tree, seen)


def _hash_node_tree(digest, tree: "bpy.types.NodeTree", seen: set[int]) -> None:
    key = tree.as_pointer()
    digest.update(f"tree:{tree.name_full}".encode())
    if key in seen:  # a group used twice (or recursively) is hashed once
        return
    seen.add(key)
    for node in sorted(tree.nodes, key=lambda n: n.name):
        digest.update(f"node:{node.name}:{node.bl_idname}:{node.mute}".encode())
        for prop in node.bl_rna.properties:
            ident = prop.identifier
            if ident in _SKIPPED_NODE_PROPS or ident.startswith("bl_"):
                continue
            if prop.type in {"BOOLEAN", "INT", "FLOAT", "ENUM", "STRING"}:
                digest.update(f"{ident}={_plain(getattr(node, ident, None))}".encode())
        image = getattr(node, "image", None)
        if isinstance(image, bpy.types.Image):
            _hash_image(digest, image)
        group = getattr(node, "node_tree", None)
        if isinstance(group, bpy.types.NodeTree):
            _hash_node_tree(digest, group, seen)
        for socket in node.inputs:
            value = getattr(socket, "default_value", None)
            linked = socket.is_linked
            digest.update(f"in:{socket.identifier}:{linked}:{'' if linked else _plain(value)}".encode())
    for link in tree.links:
        digest.update(
            f"link:{link.from_node.name}:{link.from_socket.identifier}->"
            f"{link.to_node.name}:{link.to_socket.identifier}:{link.is_muted}".encode()
        )


def _hash_image(digest, image: "bpy.types.Image") -> None:
    digest.update(f"image:{image.name_full}:{image.source}:{image.colorspace_settings.name}:{image.alpha_mode}".encode())
    if image.packed_file is not None:
        digest.update(hashlib.sha256(bytes(image.packed_file.data)).digest())
    elif image.source == "GENERATED":
        digest.update(f"{image.generated_type}:{tuple(image.size)}:{_plain(image.generated_color)}".encode())
    else:
        path = bpy.path.abspath(image.filepath, library=image.library)
        try:
            stat = os.stat(path)
            digest.update(f"{os.path.realpath(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        except OSError:
            digest.update(f"missing:{path}".encode())


def _plain(value) -> str:
    """A stable text form of an RNA value (numbers rounded to the quantum)."""
    if value is None:
        return "None"
    if isinstance(value, float):
        return str(round(value / QUANTUM))
    if isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, (set, frozenset)):
        return repr(sorted(value))
    try:
        items = list(value)
    except TypeError:
        return type(value).__name__  # pointers and other objects: their type only
    return "(" + ",".join(_plain(v) for v in items) + ")"
