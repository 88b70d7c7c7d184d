"""bpy-free half of the capture: depth codes, colour conversion and the transforms document."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from blender_piva.contract.capture import LightRig, depth_unit_scale, transforms_document
from blender_piva.core.camera_rig import all_views
from blender_piva.core.capture_pixels import depth_codes_from_z, srgb8_from_linear
from blender_piva.contract import CaptureSettings


def test_depth_codes_round_trip_and_mark_background():
    settings = CaptureSettings()
    scale = depth_unit_scale(settings)
    assert math.isclose(scale * 65535, 4.0 + math.sqrt(3))
    z = np.array([[1.2345, 5.7], [1e10, 0.0]])  # 1e10 is Cycles' "no hit"
    codes = depth_codes_from_z(z, scale)
    assert codes.dtype == np.uint16 and codes[1, 0] == 0 and codes[1, 1] == 0
    assert np.all(np.abs(codes[0] * scale - z[0]) <= scale / 2)


def test_srgb8_unpremultiplies_and_encodes():
    rgb = np.array([[[0.5, 0.25, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]])  # premultiplied, linear
    alpha = np.array([[0.5, 0.0, 1.0]])
    out = srgb8_from_linear(rgb, alpha)
    assert out.dtype == np.uint8 and out.shape == (1, 3, 4)
    assert list(out[0, 0]) == [255, 188, 0, 128]  # straight (1.0, 0.5, 0) -> sRGB (255, 188, 0)
    assert out[0, 1, 3] == 0 and list(out[0, 2, :3]) == [255, 0, 0]  # clipped


def test_transforms_document_is_json_and_consistent():
    settings = CaptureSettings(num_views=2, num_eval_views=1, resolution=32)
    w2n = np.diag([0.5, 0.5, 0.5, 1.0])
    w2n[:3, 3] = [1.0, 2.0, 3.0]
    m = np.eye(4)
    m[:3, 3] = [-2.0, -4.0, -6.0]
    doc = json.loads(json.dumps(transforms_document(settings, all_views(settings), w2n, m, "Cube"), allow_nan=False))
    assert np.allclose(doc["normalization"], w2n @ m)
    names = [f["file_path"] for f in doc["frames"]]
    assert names == ["images/train_0000.png", "images/train_0001.png", "images/eval_0000.png"]
    frame = doc["frames"][2]
    assert frame["depth_file_path"] == "depth/eval_0000.png" and frame["w"] == 32 and frame["cx"] == 16.0
    assert math.isclose(math.degrees(frame["camera_angle_x"]), settings.eval_fov_deg)
    assert math.isclose(np.linalg.norm(np.array(frame["transform_matrix"])[:3, 3]), settings.eval_distance)
    assert doc["capture_settings"]["elevation_deg"] == [10.0, 60.0]


def test_light_rig_is_written_and_read_back():
    settings = CaptureSettings(num_views=1, num_eval_views=0, resolution=16)
    rig = LightRig(world_strength=0.8, world_color=(1.0, 1.0, 1.0), sun_direction=(0.0, 0.6, 0.8),
                   sun_strength=0.2 * math.pi, sun_angle_deg=30.0)
    views = all_views(settings)
    doc = json.loads(json.dumps(transforms_document(settings, views, np.eye(4), np.eye(4), "Cube", light_rig=rig)))
    assert LightRig.from_json(doc["light_rig"]) == rig
    # Old captures have no entry: the backend then bakes the lit colours as before.
    assert "light_rig" not in transforms_document(settings, views, np.eye(4), np.eye(4), "Cube")


def test_malformed_light_rig_is_refused_with_the_fields_it_needs():
    entry = {"world_strength": 0.8, "world_color": [1, 1, 1], "sun_direction": [0, 0, 1], "sun_strength": 0.6}
    with pytest.raises(ValueError, match="sun_angle_deg"):
        LightRig.from_json(entry)
    with pytest.raises(ValueError, match="negative"):
        LightRig.from_json({**entry, "sun_angle_deg": 30.0, "sun_strength": -1.0})


def test_capture_records_the_rig_it_renders_with():
    capture = pytest.importorskip("blender_piva.scene.capture")  # needs bpy
    rig = capture.light_rig()
    el, az = math.radians(capture._SUN_ELEVATION_DEG), math.radians(capture._SUN_AZIMUTH_DEG)
    expected = [math.cos(el) * math.sin(az), -math.cos(el) * math.cos(az), math.sin(el)]
    np.testing.assert_allclose(rig.sun_direction, expected, atol=1e-12)
    # docs/capture_format.md: a surface facing the sun renders at 1.0 x albedo, 0.8 from the world.
    assert math.isclose(rig.world_strength + rig.sun_strength / math.pi, 1.0)
    assert rig.world_strength == capture._WORLD_STRENGTH and rig.sun_angle_deg == capture._SUN_ANGLE_DEG
