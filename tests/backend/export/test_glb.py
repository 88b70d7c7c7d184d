"""GLB writer: round trip, structural checks, and Blender's own glTF importer reading our files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from backend.export.analytic import SphereField
from backend.export.decimate import decimate
from backend.export.extract import ExtractSettings, extract_mesh
from backend.export.glb import GlbError, TexturedMesh, read_glb, split_glb, write_glb
from backend.export.obj import write_obj
from backend.export.pipeline import encode_png
from backend.export.uv_bake import unwrap


@pytest.fixture(scope="module")
def textured() -> TexturedMesh:
    extracted = extract_mesh(SphereField(radius=0.5, center=(0.2, 0.1, -0.3)), ExtractSettings(grid_resolution=20, coarse_resolution=10))
    mesh = unwrap(*decimate(extracted.vertices, extracted.faces, 500), 64)
    image = np.zeros((64, 64, 3), np.float32)
    image[:32] = [1.0, 0.0, 0.0]  # top half red, bottom half blue: tells a flipped v apart
    image[32:] = [0.0, 0.0, 1.0]
    return TexturedMesh(mesh.vertices, mesh.normals, mesh.uvs, mesh.faces, encode_png(image), name="sphere")


def test_round_trip_is_exact(textured):
    back = read_glb(write_glb(textured))
    np.testing.assert_allclose(back.positions, textured.positions, atol=1e-7)
    np.testing.assert_allclose(back.normals, textured.normals, atol=1e-7)
    np.testing.assert_array_equal(back.uvs, textured.uvs)
    np.testing.assert_array_equal(back.faces, textured.faces)
    assert back.texture_png == textured.texture_png and back.name == "sphere"


def test_file_structure_follows_the_glb_spec(textured):
    data = write_glb(textured)
    magic, version, length = struct.unpack_from("<III", data)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    doc, binary = split_glb(data)
    assert len(data) % 4 == 0 and len(binary) % 4 == 0
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0 and view["byteOffset"] + view["byteLength"] <= len(binary)
    pos = doc["accessors"][0]
    gl_positions = textured.positions[:, [0, 2, 1]] * np.array([1, 1, -1])  # glTF is +Y up
    np.testing.assert_allclose(pos["min"], gl_positions.min(axis=0), atol=1e-6)
    np.testing.assert_allclose(pos["max"], gl_positions.max(axis=0), atol=1e-6)
    assert doc["accessors"][3]["count"] == textured.faces.size


def test_truncated_or_foreign_bytes_are_rejected(textured):
    data = write_glb(textured)
    with pytest.raises(GlbError, match="truncated"):
        read_glb(data[:-8])
    with pytest.raises(GlbError, match="not a glTF 2.0 binary"):
        read_glb(b"PK\x03\x04" + data[4:])
    doc, binary = split_glb(data)
    del doc["meshes"][0]["primitives"][0]["attributes"]["TEXCOORD_0"]
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    broken = struct.pack("<III", 0x46546C67, 2, 28 + len(text) + len(binary))
    broken += struct.pack("<II", len(text), 0x4E4F534A) + text + struct.pack("<II", len(binary), 0x004E4942) + binary
    with pytest.raises(GlbError, match="lacks an entry"):
        read_glb(broken)


def test_writer_rejects_inconsistent_arrays(textured):
    bad = TexturedMesh(textured.positions, textured.normals[:-1], textured.uvs, textured.faces, textured.texture_png)
    with pytest.raises(ValueError, match="must agree"):
        write_glb(bad)


def test_blender_gltf_importer_reads_our_file(textured, tmp_path: Path):
    bpy = pytest.importorskip("bpy")
    path = tmp_path / "mesh.glb"
    path.write_bytes(write_glb(textured))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    result = bpy.ops.import_scene.gltf(filepath=str(path))
    assert result == {"FINISHED"}
    meshes = [ob for ob in bpy.data.objects if ob.type == "MESH"]
    assert len(meshes) == 1
    ob = meshes[0]
    co = np.array([ob.matrix_world @ v.co for v in ob.data.vertices])
    # Same place in Blender's axes: the +Y-up file was converted back to +Z up.
    np.testing.assert_allclose(co.min(axis=0), textured.positions.min(axis=0), atol=1e-5)
    np.testing.assert_allclose(co.max(axis=0), textured.positions.max(axis=0), atol=1e-5)
    assert len(ob.data.polygons) == len(textured.faces)
    image = ob.active_material.node_tree.nodes["Image Texture"].image
    assert tuple(image.size) == (64, 64)
    # glTF v=0.1 is the top (red) row of the PNG; Blender flips v, so its UV 0.9 must read red.
    pixels = np.array(image.pixels[:]).reshape(64, 64, 4)  # Blender rows go bottom-up
    assert pixels[-1, 0, 0] > 0.9 and pixels[0, 0, 2] > 0.9
    bpy.ops.wm.read_factory_settings(use_empty=True)


def test_obj_writer_counts_and_flips_v(textured):
    obj, mtl = write_obj(textured, "mesh.mtl", "texture.png")
    lines = obj.decode().splitlines()
    assert sum(line.startswith("v ") for line in lines) == len(textured.positions)
    assert sum(line.startswith("f ") for line in lines) == len(textured.faces)
    vt = np.array([[float(x) for x in line.split()[1:]] for line in lines if line.startswith("vt ")])
    np.testing.assert_allclose(vt[:, 1], 1.0 - textured.uvs[:, 1], atol=1e-6)
    assert b"map_Kd texture.png" in mtl and "mtllib mesh.mtl" in lines[1]
