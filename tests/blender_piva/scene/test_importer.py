"""Importing a job's result next to its source object, and leaving the scene alone on failure."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from mathutils import Matrix, Vector  # noqa: E402

from backend.export.analytic import BoxField  # noqa: E402
from backend.export.glb import read_glb  # noqa: E402
from backend.export.pipeline import export_field  # noqa: E402
from backend.progress import StageReporter  # noqa: E402
from blender_piva import contract  # noqa: E402
from blender_piva.scene.importer import GAP_FRACTION, ImportResultError, import_result  # noqa: E402
from tests.blender_piva.scene_state import diff, fingerprint  # noqa: E402

JOB_INFO = {"piva_job_id": "job-7", "piva_target_prompt": "a golden box", "piva_seed": 3, "piva_steps": 10}


@pytest.fixture(scope="module")
def results_template(tmp_path_factory) -> Path:
    """A results folder exported from an analytic box, in a local frame with scale and offset."""
    out = tmp_path_factory.mktemp("results")
    local_from_normalized = np.diag([0.5, 0.5, 0.5, 1.0])
    local_from_normalized[:3, 3] = [0.1, 0.0, 0.2]
    settings = contract.ExportSettings(grid_resolution=24, face_budget=600, texture_size=64)
    export_field(BoxField(), settings, local_from_normalized, out, reporter=StageReporter.silent("export"))
    contract.ResultsManifest(
        job_id="job-7",
        files={"mesh": "mesh.glb", "texture": "texture.png"},
        metrics={"heldout_psnr_db": 30.5},
        source_prompt="a box",
        target_prompt="a golden box",
        method="piva",
        seed=3,
    ).write(out)
    return out


@pytest.fixture
def results(results_template: Path, tmp_path: Path) -> Path:
    """A private copy each test may break."""
    return Path(shutil.copytree(results_template, tmp_path / "results"))


@pytest.fixture
def source() -> "bpy.types.Object":
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(1.0, 2.0, 3.0), rotation=(0.0, 0.0, 0.5))
    cube = bpy.context.active_object
    cube.scale = (1.5, 1.0, 0.5)
    bpy.context.view_layer.update()
    yield cube
    bpy.ops.wm.read_factory_settings(use_empty=True)


def world_width(obj) -> float:
    xs = [(obj.matrix_world @ Vector(c)).x for c in obj.bound_box]
    return max(xs) - min(xs)


def test_import_places_one_object_next_to_the_untouched_source(results: Path, source):
    before = fingerprint()
    source_state = (before["objects"][source.name], before["meshes"][source.data.name])
    obj = import_result(results, source, collection_name="PIVA Cube", label="golden box", job_info=JOB_INFO)

    after = fingerprint()
    assert (after["objects"][source.name], after["meshes"][source.data.name]) == source_state
    added = sorted(set(after["objects"]) - set(before["objects"]))
    assert added == [obj.name] and obj.name == "golden box"
    assert [c.name for c in obj.users_collection] == ["PIVA Cube"]
    assert "PIVA Cube" in bpy.context.scene.collection.children

    shift = Matrix.Translation((world_width(source) * (1 + GAP_FRACTION), 0.0, 0.0))
    np.testing.assert_allclose(np.array(obj.matrix_world), np.array(shift @ source.matrix_world), atol=1e-6)

    # Vertex positions are the GLB's, in the source's local frame (the mesh was welded at seams).
    glb = read_glb((results / "mesh.glb").read_bytes())
    co = np.array([v.co for v in obj.data.vertices])
    np.testing.assert_allclose(co.min(axis=0), glb.positions.min(axis=0), atol=1e-6)
    np.testing.assert_allclose(co.max(axis=0), glb.positions.max(axis=0), atol=1e-6)
    assert len(obj.data.polygons) == len(glb.faces)
    assert len(co) == len(np.unique(glb.positions, axis=0))

    assert obj["piva_job_id"] == "job-7" and obj["piva_target_prompt"] == "a golden box"
    assert obj["piva_seed"] == 3 and obj["piva_steps"] == 10 and obj["piva_method"] == "piva"
    assert "heldout_psnr_db" in obj["piva_metrics"]

    image = obj.active_material.node_tree.nodes["Image Texture"].image
    assert image.packed_file is not None and tuple(image.size) == (64, 64)
    links = obj.active_material.node_tree.links
    assert any(link.to_socket.name == "Base Color" and link.from_node.name == "Image Texture" for link in links)


def test_uvs_match_blenders_own_gltf_importer(results: Path, source):
    obj = import_result(results, source, collection_name="PIVA", label="ours", job_info={})
    ours = _loop_table(obj)
    bpy.ops.import_scene.gltf(filepath=str(results / "mesh.glb"))
    theirs = _loop_table(next(o for o in bpy.data.objects if o.type == "MESH" and o not in (obj, source)))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def _loop_table(obj) -> np.ndarray:
    """Sorted rows (local position, uv) of every loop: equal sets = same geometry and UV mapping."""
    me = obj.data
    vidx = np.empty(len(me.loops), np.int32)
    me.loops.foreach_get("vertex_index", vidx)
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    uv = np.empty(len(me.loops) * 2, np.float32)
    me.uv_layers.active.data.foreach_get("uv", uv)
    rows = np.concatenate([co.reshape(-1, 3)[vidx], uv.reshape(-1, 2)], axis=1).round(5)
    return rows[np.lexsort(rows.T[::-1])]


def test_explicit_offset_and_existing_collection_are_used(results: Path, source):
    first = import_result(results, source, collection_name="PIVA Cube", label="a", job_info={}, offset=(0, 0, 5))
    second = import_result(results, source, collection_name="PIVA Cube", label="b", job_info={}, offset=(0, 0, 5))
    np.testing.assert_allclose(np.array(first.matrix_world.translation), np.array(source.location) + [0, 0, 5])
    assert len(bpy.data.collections) == 1 and set(bpy.data.collections["PIVA Cube"].objects) == {first, second}


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("delete_texture", "'texture.png' is missing"),
        ("delete_manifest", "results manifest does not exist"),
        ("truncate_glb", "is not a mesh this add-on wrote"),
        ("garbage_texture", "not a readable image"),  # fails after the mesh was built: rollback
        ("drop_texture_role", "lists no 'texture' file"),
    ],
)
def test_a_broken_results_folder_raises_and_leaves_the_scene_unchanged(results: Path, source, breakage, message):
    if breakage == "delete_texture":
        (results / "texture.png").unlink()
    elif breakage == "delete_manifest":
        (results / contract.MANIFEST_FILE).unlink()
    elif breakage == "truncate_glb":
        data = (results / "mesh.glb").read_bytes()
        (results / "mesh.glb").write_bytes(data[: len(data) // 2])
    elif breakage == "garbage_texture":
        (results / "texture.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    elif breakage == "drop_texture_role":
        manifest = contract.load_manifest(results)
        del manifest.files["texture"]
        manifest.write(results)
    before = fingerprint()
    with pytest.raises(ImportResultError, match=message) as info:
        import_result(results, source, collection_name="PIVA Cube", label="x", job_info=JOB_INFO)
    assert "re-run" in str(info.value) or "run the job" in str(info.value)  # says how to fix it
    after = fingerprint()
    assert after == before, diff(before, after)
