"""Import a finished job's textured mesh next to its source object.

Reads ``results/manifest.json`` (``contract.load_manifest`` checks that every listed file exists),
parses the backend's GLB with struct + numpy (not the glTF import operator, which changes the
selection, the active object and other scene state), and builds new datablocks: a mesh, a material
whose base colour is the baked texture, an image, an object and, when missing, the job's collection.
The texture image is loaded from ``results/texture.png`` and **packed** into the .blend, so the
result survives deleting the job folder.

The source object is never modified. On any failure :class:`ImportResultError` is raised and
every datablock this call created is removed again, so the scene is as it was.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Sequence

import bpy
import numpy as np
from mathutils import Matrix, Vector

from .. import contract

GAP_FRACTION = 0.1
"""Default space between the source and the result, as a fraction of the source's width."""

_GLB_MAGIC, _CHUNK_JSON, _CHUNK_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
_DTYPES = {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5121: np.uint8}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}


class ImportResultError(RuntimeError):
    """The result could not be imported; the message says what is wrong and how to fix it."""


def import_result(
    results_dir: Path,
    source_obj: bpy.types.Object,
    *,
    collection_name: str,
    label: str,
    job_info: dict[str, Any],
    offset: Sequence[float] | None = None,
    scene: bpy.types.Scene | None = None,
) -> bpy.types.Object:
    """Build the result object from ``results_dir`` and link it into ``collection_name``.

    ``offset``: world-space translation from the source to the result; None = along world +X by the
    source's world bounding-box width plus GAP_FRACTION of it, so the two sit side by side.
    ``job_info``: stored as custom properties on the new object (strings, numbers, booleans as
    they are; anything else as JSON text). The manifest's prompts, method, seed and metrics are
    stored too, under ``piva_*`` keys that ``job_info`` may override.
    """
    results_dir = Path(results_dir)
    scene = scene or bpy.context.scene
    manifest, data = _read_result(results_dir)
    created: list[tuple[Any, Any]] = []  # (collection of datablocks, datablock), in creation order
    try:
        obj = _build_object(results_dir, manifest, data, label, created)
        shift = Vector(offset) if offset is not None else Vector(side_by_side_offset(source_obj, 0))
        obj.matrix_world = Matrix.Translation(shift) @ source_obj.matrix_world
        _store_job_info(obj, manifest, source_obj, job_info)
        _link(obj, collection_name, scene, created)
    except Exception as exc:  # roll back every datablock created above, then report
        for datablocks, block in reversed(created):
            datablocks.remove(block)
        if isinstance(exc, ImportResultError):
            raise
        raise ImportResultError(
            f"cannot import the result from {results_dir}: {type(exc).__name__}: {exc}; "
            "the scene was left unchanged. Re-run the job's export stage, or report this as a bug"
        ) from exc
    return obj


def _read_result(results_dir: Path) -> tuple[contract.ResultsManifest, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The checked manifest and the GLB's (positions, uvs, faces); nothing in Blender changes."""
    try:
        manifest = contract.load_manifest(results_dir)
    except contract.ContractError as exc:
        raise ImportResultError(f"cannot import the result: {exc}") from None
    for role in ("mesh", "texture"):
        if role not in manifest.files:
            raise ImportResultError(
                f"cannot import the result: {results_dir / contract.MANIFEST_FILE} lists no '{role}' file "
                f"(it lists {sorted(manifest.files) or 'nothing'}); re-run the job with the export stage"
            )
    mesh_path = results_dir / manifest.files["mesh"]
    try:
        return manifest, read_glb_mesh(mesh_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ImportResultError(
            f"cannot import the result: {mesh_path} is not a mesh this add-on wrote ({exc}); "
            "re-run the job's export stage to rewrite it"
        ) from None


def _build_object(
    results_dir: Path, manifest: contract.ResultsManifest, data: tuple, label: str, created: list
) -> bpy.types.Object:
    """Mesh, packed texture, material and object; each datablock is recorded in ``created``."""
    mesh = _build_mesh(label, *data)
    created.append((bpy.data.meshes, mesh))
    image = _load_image(results_dir / manifest.files["texture"], label)
    created.append((bpy.data.images, image))
    material = _build_material(label, image)
    created.append((bpy.data.materials, material))
    mesh.materials.append(material)
    obj = bpy.data.objects.new(label, mesh)
    created.append((bpy.data.objects, obj))
    return obj


def _store_job_info(
    obj: bpy.types.Object, manifest: contract.ResultsManifest, source_obj: bpy.types.Object, job_info: dict[str, Any]
) -> None:
    props = {
        "piva_job_id": manifest.job_id,
        "piva_source_prompt": manifest.source_prompt,
        "piva_target_prompt": manifest.target_prompt,
        "piva_method": manifest.method,
        "piva_seed": manifest.seed,
        "piva_metrics": manifest.metrics,
        "piva_source_object": source_obj.name,
        **job_info,
    }
    for key, value in props.items():
        obj[key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)


def _link(obj: bpy.types.Object, collection_name: str, scene: bpy.types.Scene, created: list) -> None:
    """Link ``obj`` into the named collection, creating it (under the scene) when missing."""
    collection = bpy.data.collections.get(collection_name)
    if collection is None:
        collection = bpy.data.collections.new(collection_name)
        created.append((bpy.data.collections, collection))
    if not _is_nested(scene.collection, collection):
        scene.collection.children.link(collection)
    collection.objects.link(obj)


def read_glb_mesh(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions [V, 3] (Blender axes, +Z up), glTF UVs [V, 2] (v down) and faces [F, 3] of a GLB
    holding one indexed triangle primitive (what ``backend/export/glb.py`` writes)."""
    if len(data) < 28:
        raise ValueError(f"{len(data)} bytes is too short for a GLB")
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != _GLB_MAGIC or version != 2 or length != len(data):
        raise ValueError(f"not a complete glTF 2.0 binary (magic {magic:#x}, version {version}, {length}/{len(data)} bytes)")
    json_len, json_type = struct.unpack_from("<II", data, 12)
    if json_type != _CHUNK_JSON or 28 + json_len > len(data):
        raise ValueError("the first chunk is not JSON")
    try:
        doc = json.loads(data[20 : 20 + json_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed JSON chunk: {exc}") from None
    bin_len, bin_type = struct.unpack_from("<II", data, 20 + json_len)
    binary = data[28 + json_len : 28 + json_len + bin_len]
    if bin_type != _CHUNK_BIN or len(binary) != bin_len:
        raise ValueError("the binary chunk is missing or truncated")

    def accessor(index: int, kind: str) -> np.ndarray:
        acc = doc["accessors"][index]
        view = doc["bufferViews"][acc["bufferView"]]
        if acc["type"] != kind or acc["componentType"] not in _DTYPES or view.get("byteStride"):
            raise ValueError(f"accessor {index} is not a packed {kind}")
        dtype = np.dtype(_DTYPES[acc["componentType"]])
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        count = acc["count"] * _WIDTH[kind]
        if start + count * dtype.itemsize > min(len(binary), view.get("byteOffset", 0) + view["byteLength"]):
            raise ValueError(f"accessor {index} runs past its buffer view")
        return np.frombuffer(binary, dtype=dtype, count=count, offset=start).reshape(acc["count"], -1)

    try:
        prim = doc["meshes"][0]["primitives"][0]
        if prim.get("mode", 4) != 4:
            raise ValueError("the primitive is not made of triangles")
        gl_positions = accessor(prim["attributes"]["POSITION"], "VEC3").astype(np.float32)
        uvs = accessor(prim["attributes"]["TEXCOORD_0"], "VEC2").astype(np.float32)
        faces = accessor(prim["indices"], "SCALAR").astype(np.int64).reshape(-1, 3)
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"missing glTF entry {exc}") from None
    if len(uvs) != len(gl_positions) or len(faces) == 0 or faces.min() < 0 or faces.max() >= len(gl_positions):
        raise ValueError("indices or UVs do not match the vertices")
    positions = np.stack([gl_positions[:, 0], -gl_positions[:, 2], gl_positions[:, 1]], axis=1)  # Y-up -> Z-up
    return positions, uvs, faces


def _build_mesh(name: str, positions: np.ndarray, uvs: np.ndarray, faces: np.ndarray) -> bpy.types.Mesh:
    """One Blender mesh; vertices duplicated along UV seams are welded (UVs live on the loops)."""
    welded, inverse = np.unique(positions, axis=0, return_inverse=True)
    corners = inverse.reshape(-1)[faces]  # [F, 3]
    # Zero-area faces whose corners weld together are invalid in Blender: drop them.
    keep = (corners[:, 0] != corners[:, 1]) & (corners[:, 1] != corners[:, 2]) & (corners[:, 2] != corners[:, 0])
    faces, corners = faces[keep], corners[keep]
    # Two faces on the same three vertices (marching cubes on a soft field can make them after the
    # seams are welded) are invalid too: keep the first of each.
    _, first = np.unique(np.sort(corners, axis=1), axis=0, return_index=True)
    first.sort()
    faces, loops = faces[first], corners[first].reshape(-1)  # [F', 3], [3F']
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(welded))
    mesh.vertices.foreach_set("co", welded.astype(np.float32).ravel())
    mesh.loops.add(len(loops))
    mesh.loops.foreach_set("vertex_index", loops.astype(np.int32))
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, len(loops), 3, dtype=np.int32))
    uv_layer = mesh.uv_layers.new(name="UVMap")
    loop_uv = uvs[faces.reshape(-1)]
    loop_uv = np.stack([loop_uv[:, 0], 1.0 - loop_uv[:, 1]], axis=1)  # glTF v down -> Blender v up
    uv_layer.data.foreach_set("uv", loop_uv.astype(np.float32).ravel())
    mesh.polygons.foreach_set("use_smooth", np.ones(len(faces), dtype=bool))
    mesh.update(calc_edges=True)
    if mesh.validate(verbose=False):
        # validate() returns True when it had to fix something: the file was not what we wrote.
        bpy.data.meshes.remove(mesh)
        raise ImportResultError("the mesh in the results folder has invalid faces; re-run the job's export stage")
    return mesh


def _load_image(path: Path, name: str) -> bpy.types.Image:
    try:
        image = bpy.data.images.load(str(path), check_existing=False)
    except RuntimeError as exc:
        raise ImportResultError(f"cannot read the texture {path} ({exc}); re-run the job's export stage") from None
    if image.size[0] == 0 or image.size[1] == 0:  # Blender loads unreadable files as empty images
        bpy.data.images.remove(image)
        raise ImportResultError(f"cannot read the texture {path}: not a readable image; re-run the job's export stage")
    image.name = f"{name} texture"
    image.pack()  # the .blend keeps the texture when the job folder is deleted
    return image


def _build_material(name: str, image: bpy.types.Image) -> bpy.types.Material:
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender < 5 creates materials without nodes
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    # Lighting is baked into the texture: no highlights on top of it (they read as a white haze).
    bsdf.inputs["Roughness"].default_value = 1.0
    if "Specular IOR Level" in bsdf.inputs:
        bsdf.inputs["Specular IOR Level"].default_value = 0.0
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    texture.location = (bsdf.location.x - 350, bsdf.location.y)
    links.new(texture.outputs["Color"], bsdf.inputs["Base Color"])
    return material


def side_by_side_offset(source_obj: bpy.types.Object, slot: int) -> tuple[float, float, float]:
    """World translation of result number ``slot`` (0, 1, ...): a row along world +X beside the
    source, one source width plus GAP_FRACTION of it apart, so prompt variants never overlap."""
    step = _world_width(source_obj) * (1 + GAP_FRACTION)
    return (step * (slot + 1), 0.0, 0.0)


def _world_width(obj: bpy.types.Object) -> float:
    """Extent of the object's world-space bounding box along world X."""
    corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
    xs = [c.x for c in corners]
    return max(xs) - min(xs)


def _is_nested(parent: bpy.types.Collection, target: bpy.types.Collection) -> bool:
    return any(child == target or _is_nested(child, target) for child in parent.children)
