"""The Blender capture against analytic geometry, and its promise to leave the user's file alone.

Geometry checks use a cube at a non-trivial pose (translated, rotated, non-uniformly scaled): its
ray-cast depth is computed with numpy from the known pose, and the capture is read back only
through ``transforms.json`` and the PNGs with Pillow, as the backend reads it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from PIL import Image  # noqa: E402
from scipy.ndimage import binary_dilation, binary_erosion  # noqa: E402

from blender_piva.core import capture_pixels  # noqa: E402
from blender_piva.scene.capture import CaptureCancelled, CaptureError, capture_object, check_capturable  # noqa: E402
from blender_piva.contract import CaptureSettings  # noqa: E402
from blender_piva.core.exr import read_exr  # noqa: E402
from blender_piva.core.png16 import read_png  # noqa: E402
from tests.blender_piva.scene_state import diff, fingerprint  # noqa: E402

CUBE_LOCATION = (3.0, -2.0, 1.5)
CUBE_ROTATION = (0.4, -0.3, 0.9)
CUBE_SCALE = (0.7, 1.3, 0.5)
ALBEDO = (0.6, 0.3, 0.1)  # linear base colour
SMALL = CaptureSettings(num_views=3, num_eval_views=1, resolution=64, samples=4)


@pytest.fixture(autouse=True)
def _factory_state():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield
    bpy.ops.wm.read_factory_settings(use_empty=True)


def _posed_cube() -> "bpy.types.Object":
    """The active, selected cube of half-size 1 (local) at the test pose, with a coloured material,
    plus a huge plane at the world origin that must never appear in the capture."""
    bpy.ops.mesh.primitive_plane_add(size=50.0, location=(0.0, 0.0, 0.0))
    bpy.context.active_object.name = "Blocker"
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=CUBE_LOCATION, rotation=CUBE_ROTATION)
    cube = bpy.context.active_object
    cube.scale = CUBE_SCALE  # on the object (the operator's scale argument would scale the mesh)
    material = bpy.data.materials.new("Paint")
    bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Base Color"].default_value = (*ALBEDO, 1.0)
    bsdf.inputs["Specular IOR Level"].default_value = 0.0  # pure diffuse: the render is albedo x light
    cube.data.materials.append(material)
    bpy.context.view_layer.update()
    return cube


def _box_in_normalised_frame(cube: "bpy.types.Object") -> tuple[np.ndarray, np.ndarray]:
    """Independent of the capture code: local->normalised matrix [4, 4] of the cube, and its
    world-to-normalised matrix [4, 4] (bbox of the 8 world corners, centred, longest side 2)."""
    m = np.array(cube.matrix_world)
    corners = np.array([[x, y, z, 1.0] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) @ m.T
    lo, hi = corners[:, :3].min(0), corners[:, :3].max(0)
    s = 2.0 / (hi - lo).max()
    w2n = np.diag([s, s, s, 1.0])
    w2n[:3, 3] = -s * (lo + hi) / 2
    return w2n @ m, w2n


def _frame_rays(doc: dict, frame: dict) -> tuple[np.ndarray, np.ndarray]:
    """Normalised-frame ray origin [3] and directions [H, W, 3] scaled so that t = planar depth."""
    c2w = np.array(frame["transform_matrix"])
    u, v = np.meshgrid(np.arange(frame["w"]) + 0.5, np.arange(frame["h"]) + 0.5)
    d_cam = np.stack([(u - frame["cx"]) / frame["fl_x"], -(v - frame["cy"]) / frame["fl_y"], -np.ones_like(u)], -1)
    return c2w[:3, 3], d_cam @ c2w[:3, :3].T


def _raycast_box(local_to_norm: np.ndarray, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Ray parameter of the first hit with the box [-1, 1]^3 placed by ``local_to_norm``; 0 = miss."""
    inv = np.linalg.inv(local_to_norm)
    o = inv[:3, :3] @ origin + inv[:3, 3]
    d = dirs @ inv[:3, :3].T  # affine map: the ray parameter is unchanged
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-1 - o) / d, (1 - o) / d
    near, far = np.minimum(t1, t2).max(-1), np.maximum(t1, t2).min(-1)
    return np.where((near <= far) & (near > 0), near, 0.0)


def _box_distance(local_to_norm: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Unsigned distance [N] from normalised-frame points [N, 3] to the surface of the placed box."""
    axes = local_to_norm[:3, :3]
    half = np.linalg.norm(axes, axis=0)
    q = np.abs((points - local_to_norm[:3, 3]) @ (axes / half)) - half
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=-1)
    inside = np.minimum(q.max(-1), 0.0)
    return np.abs(outside + inside)


def _load(path: Path, frame: dict, key: str) -> np.ndarray:
    with Image.open(path.parent / frame[key]) as im:
        return np.array(im)


def test_capture_matches_the_analytic_cube(tmp_path):
    cube = _posed_cube()
    path = capture_object(cube, SMALL, tmp_path / "capture")
    assert path == (tmp_path / "capture" / "transforms.json").absolute()
    doc = json.loads(path.read_text())
    local_to_norm, w2n = _box_in_normalised_frame(cube)

    assert doc["contract"] == 1 and doc["camera_model"] == "PINHOLE" and doc["object_name"] == cube.name
    assert doc["w"] == doc["h"] == 64 and doc["aabb"] == [[-1.0] * 3, [1.0] * 3]
    assert np.allclose(doc["normalization"], local_to_norm, atol=1e-5)
    assert np.allclose(doc["world_to_normalized"], w2n, atol=1e-5)
    assert np.allclose(doc["object_matrix_world"], np.array(cube.matrix_world), atol=1e-6)
    assert doc["capture_settings"]["num_views"] == 3
    assert [f["split"] for f in doc["frames"]] == ["train"] * 3 + ["eval"]
    scale = doc["depth_unit_scale_factor"]

    depth_errors, distances, alpha_mismatch, hits = [], [], 0, 0
    for frame in doc["frames"]:
        rgba = _load(path, frame, "file_path")
        codes = _load(path, frame, "depth_file_path")
        assert rgba.shape == (64, 64, 4) and rgba.dtype == np.uint8
        assert codes.shape == (64, 64) and codes.dtype.kind in "iu"
        depth = codes.astype(np.float64) * scale
        origin, dirs = _frame_rays(doc, frame)
        truth = _raycast_box(local_to_norm, origin, dirs)
        hit = truth > 0
        inner = binary_erosion(hit, iterations=2)
        outer = ~binary_dilation(hit, iterations=2)
        assert inner.sum() > 80, f"the cube should fill a good part of the view ({inner.sum()} pixels)"

        # Planar depth of pixels well inside the silhouette equals the ray-cast depth.
        depth_errors.append(np.abs(depth - truth)[inner])
        # Depth is set exactly where the centre ray hits (a few grazing pixels may differ).
        assert np.count_nonzero((depth > 0) != hit) <= 3
        # Alpha is the coverage: opaque inside, transparent outside, ~0.5 on the border.
        alpha = rgba[..., 3]
        assert np.all(alpha[inner] == 255) and np.all(alpha[outer] == 0)
        alpha_mismatch += np.count_nonzero((alpha >= 128) != hit)
        hits += np.count_nonzero(hit)
        # Back-project every depth pixel using only the json: it lands on the cube's surface.
        valid = depth > 0
        points = origin + dirs[valid] * depth[valid][:, None]
        distances.append(_box_distance(local_to_norm, points))

        # Colours stay close to the albedo: lit between 0.8x (ambient) and 1.0x (ambient + key).
        srgb = rgba[inner][:, :3] / 255.0
        linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
        ratio = linear / np.array(ALBEDO)
        # (per pixel with slack for 4-sample noise, on average tightly)
        assert 0.78 < ratio.mean() < 1.02, f"mean lighting ratio {ratio.mean():.3f}"
        assert 0.65 < ratio.min() and ratio.max() < 1.15, f"lighting ratio {ratio.min():.2f}..{ratio.max():.2f}"

    depth_errors, distances = np.concatenate(depth_errors), np.concatenate(distances)
    bbox_size = 2.0
    print(
        f"\ndepth_err_inner max {depth_errors.max():.2e}  backproject mean/bbox {distances.mean() / bbox_size:.2e}"
        f"  max/bbox {distances.max() / bbox_size:.2e}  alpha mismatch {alpha_mismatch}/{hits}"
    )
    assert depth_errors.max() < 1e-3
    assert distances.mean() / bbox_size < 0.005
    assert distances.max() / bbox_size < 0.01
    assert alpha_mismatch <= 0.05 * hits


def test_capture_leaves_the_user_file_unchanged(tmp_path):
    cube = _posed_cube()
    bpy.context.scene.render.engine = "BLENDER_EEVEE" if "BLENDER_EEVEE" in _engines() else "BLENDER_WORKBENCH"
    bpy.context.scene.render.resolution_x = 333
    before = fingerprint()
    calls = []
    capture_object(cube, SMALL, tmp_path / "capture", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert diff(before, fingerprint()) == []
    assert bpy.context.active_object == cube and cube.select_get()
    assert [p.name for p in tmp_path.iterdir()] == ["capture"]  # no partial or probe folder left


def test_failures_and_cancel_leave_no_trace(tmp_path):
    cube = _posed_cube()
    out = tmp_path / "capture"
    capture_object(cube, CaptureSettings(num_views=1, num_eval_views=0, resolution=16, samples=1), out)
    previous = (out / "transforms.json").read_text()
    before = fingerprint()

    # Unwritable output folder: its parent is a file (chmod does not stop root, this does).
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(CaptureError, match="Choose an output folder"):
        capture_object(cube, SMALL, blocker / "capture")
    assert diff(before, fingerprint()) == []

    # A failure in the middle of the renders (here: the progress callback raises).
    def explode(done: int, total: int) -> None:
        if done == 2:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        capture_object(cube, SMALL, out, progress=explode)
    assert diff(before, fingerprint()) == []

    # Cancel after two views: CaptureCancelled, the previous capture is intact.
    asked = []

    def cancel_after_two() -> bool:
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(CaptureCancelled):
        capture_object(cube, SMALL, out, should_cancel=cancel_after_two)
    assert len(asked) == 3
    assert diff(before, fingerprint()) == []
    assert (out / "transforms.json").read_text() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["capture", "file.txt"]


def test_bad_inputs_teach_what_to_do(tmp_path):
    with pytest.raises(CaptureError, match="No object is selected. Select"):
        check_capturable(None)
    bpy.ops.object.camera_add()
    with pytest.raises(CaptureError, match=r"camera object, not a mesh.*Convert"):
        check_capturable(bpy.context.active_object)
    mesh = bpy.data.meshes.new("Edges")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [(0, 1), (1, 2)], [])
    obj = bpy.data.objects.new("Edges", mesh)
    bpy.context.scene.collection.objects.link(obj)
    with pytest.raises(CaptureError, match="no faces.*Fill it"):
        capture_object(obj, SMALL, tmp_path / "capture")
    # Faces removed by a modifier count as no faces.
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    cube.modifiers.new("Mask", "MASK").vertex_group = "missing"
    bpy.context.view_layer.update()
    with pytest.raises(CaptureError, match="after its modifiers"):
        check_capturable(cube)
    with pytest.raises(CaptureError, match="Invalid capture settings: capture.resolution"):
        capture_object(cube, CaptureSettings(resolution=2), tmp_path / "capture")
    assert not (tmp_path / "capture").exists()


def test_colour_conversion_matches_blenders_png_writer(tmp_path):
    """srgb8_from_linear reproduces the PNG Blender writes from the same render (Standard view)."""
    bpy.ops.mesh.primitive_uv_sphere_add()
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 4
    scene.render.resolution_x = scene.render.resolution_y = 24
    scene.render.film_transparent = True
    scene.render.dither_intensity = 0.0
    scene.view_settings.view_transform = "Standard"
    bpy.ops.object.camera_add(location=(0, -4, 1), rotation=(math.radians(75), 0, 0))
    scene.camera = bpy.context.active_object
    bpy.ops.object.light_add(type="SUN")
    settings = scene.render.image_settings
    settings.file_format, settings.color_mode, settings.color_depth = "PNG", "RGBA", "8"
    scene.render.filepath = str(tmp_path / "ref.png")
    bpy.ops.render.render(write_still=True)
    settings.media_type = "MULTI_LAYER_IMAGE"
    settings.exr_codec, settings.color_depth = "NONE", "32"
    scene.render.filepath = str(tmp_path / "out.exr")
    bpy.ops.render.render(write_still=True)
    channels = read_exr(tmp_path / "out.exr")
    rgb = np.stack([channels[f"ViewLayer.Combined.{c}"] for c in "RGB"], -1)
    ours = capture_pixels.srgb8_from_linear(rgb, channels["ViewLayer.Combined.A"]).astype(int)
    reference = read_png(tmp_path / "ref.png").astype(int)
    assert (ours[..., 3] > 0).sum() > 50
    assert np.abs(ours - reference).max() <= 1


def _engines() -> set[str]:
    return {item.identifier for item in bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items}


def test_fingerprint_notices_what_a_user_would():
    cube = _posed_cube()
    before = fingerprint()
    assert diff(before, fingerprint()) == []
    changes = [
        lambda: setattr(cube, "location", (0.0, 0.0, 0.0)),
        lambda: cube.select_set(False),
        lambda: setattr(cube.data.vertices[0], "co", (5.0, 5.0, 5.0)),
        lambda: bpy.data.meshes.new("Stray"),
        lambda: setattr(bpy.context.scene.render, "film_transparent", True),
        lambda: setattr(bpy.context.scene.view_settings, "view_transform", "Raw"),
        lambda: setattr(bpy.context.view_layer.objects, "active", None),
    ]
    for change in changes:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        cube = _posed_cube()
        before = fingerprint()
        change()
        assert diff(before, fingerprint()) != []
