"""Capture cameras: sampling ranges, determinism, look-at convention, intrinsics, normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from blender_piva.contract import CaptureSettings
from blender_piva.contract import cameras
from blender_piva.contract.cameras import eval_views, far_depth_bound, intrinsics, near_depth_bound, orbit_position
from blender_piva.core.camera_rig import all_views, normalization_from_points, pixel_directions, train_views


def look_at(eye, target):  # the contract's matrices are nested lists; numpy for the checks below
    return np.asarray(cameras.look_at(eye, target))


def test_train_views_are_seeded_and_inside_the_ranges():
    settings = CaptureSettings(num_views=500, seed=3)
    views = train_views(settings)
    assert len(views) == 500
    assert views == train_views(settings)
    assert views != train_views(CaptureSettings(num_views=500, seed=4))
    el = np.array([v.elevation_deg for v in views])
    az = np.array([v.azimuth_deg for v in views])
    fov = np.array([v.fov_deg for v in views])
    dist = np.array([v.distance for v in views])
    assert el.min() >= 10.0 and el.max() <= 60.0
    assert az.min() >= 0.0 and az.max() < 360.0
    assert fov.min() >= 40.0 and fov.max() <= 70.0
    assert dist.min() >= 3.0 and dist.max() <= 4.0
    # Uniform in area: sin(el) is uniform, so the mean of sin(el) is the band's midpoint.
    lo, hi = math.sin(math.radians(10)), math.sin(math.radians(60))
    assert abs(np.sin(np.radians(el)).mean() - (lo + hi) / 2) < 0.03
    # Azimuth covers the circle: every 45-degree sector holds views.
    assert np.all(np.bincount((az // 45).astype(int), minlength=8) > 30)
    assert [v.name for v in views[:2]] == ["train_0000", "train_0001"]


def test_eval_views_are_evenly_spaced_from_the_front():
    settings = CaptureSettings(num_eval_views=8, eval_elevation_deg=15.0, eval_fov_deg=50.0, eval_distance=4.0)
    views = eval_views(settings)
    assert [v.azimuth_deg for v in views] == [45.0 * i for i in range(8)]
    assert all(v.elevation_deg == 15.0 and v.fov_deg == 50.0 and v.distance == 4.0 for v in views)
    assert all(v.split == "eval" for v in views)
    # Azimuth 0 = Blender's front view: the camera sits on -Y.
    pos = np.asarray(views[0].position)
    assert pos[1] < 0 and abs(pos[0]) < 1e-12 and pos[2] > 0
    assert np.allclose(np.linalg.norm(pos), 4.0)
    assert np.allclose(np.asarray(views[2].position[:2]) / np.linalg.norm(views[2].position[:2]), [1.0, 0.0])  # right view
    assert len(all_views(settings)) == settings.num_views + 8
    assert eval_views(CaptureSettings(num_eval_views=0)) == []


def test_look_at_blender_convention():
    eye = orbit_position(30.0, 70.0, 3.5)
    c2w = look_at(eye, np.zeros(3))
    rot = c2w[:3, :3]
    assert np.allclose(rot.T @ rot, np.eye(3)) and np.isclose(np.linalg.det(rot), 1.0)
    assert np.allclose(c2w[:3, 3], eye)
    # Camera looks down -Z: the origin is straight ahead, at depth |eye|.
    origin_cam = np.linalg.inv(c2w) @ np.array([0, 0, 0, 1.0])
    assert np.allclose(origin_cam[:3], [0, 0, -3.5])
    # +Y of the image points "up" (positive world Z component), +X is horizontal.
    assert rot[2, 1] > 0 and abs(rot[2, 0]) < 1e-12
    # Straight down still gives a valid rotation.
    down = look_at(np.array([0, 0, 3.0]), np.zeros(3))
    assert np.allclose(down[:3, :3].T @ down[:3, :3], np.eye(3)) and np.allclose(down[:3, 2], [0, 0, 1])


def test_intrinsics_project_the_fov_edge_to_the_image_border():
    fl_x, fl_y, cx, cy = intrinsics(60.0, 64, 64)
    assert fl_x == fl_y and cx == cy == 32.0
    assert np.isclose(cx / fl_x, math.tan(math.radians(30.0)))
    # Non-square: the fov spans the larger side (Blender sensor fit AUTO).
    fl_x, _, cx, cy = intrinsics(60.0, 80, 40)
    assert np.isclose(40.0 / fl_x, math.tan(math.radians(30.0))) and (cx, cy) == (40.0, 20.0)
    dirs = pixel_directions(4, 2, 2.0, 2.0, 2.0, 1.0)  # [H, W, 3]
    assert dirs.shape == (2, 4, 3)
    assert np.allclose(dirs[0, 0], [(0.5 - 2.0) / 2.0, -(0.5 - 1.0) / 2.0, -1.0])
    with pytest.raises(ValueError):
        intrinsics(180.0, 8, 8)


def test_normalization_maps_bbox_to_unit_cube():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(200, 3)) * [3.0, 0.5, 1.0] + [10.0, -2.0, 5.0]
    m = normalization_from_points(points)
    out = points @ m[:3, :3].T + m[:3, 3]
    lo, hi = out.min(0), out.max(0)
    assert np.allclose((lo + hi) / 2, 0.0, atol=1e-12)
    assert np.isclose((hi - lo).max(), 2.0)
    assert np.all(lo >= -1 - 1e-12) and np.all(hi <= 1 + 1e-12)
    assert np.allclose(m[:3, :3], np.eye(3) * m[0, 0])  # uniform scale, no rotation
    with pytest.raises(ValueError, match="no size"):
        normalization_from_points(np.ones((5, 3)))


def test_depth_bounds_enclose_every_possible_surface():
    settings = CaptureSettings(distance=(3.0, 4.5), eval_distance=4.0)
    assert np.isclose(far_depth_bound(settings), 4.5 + math.sqrt(3))
    assert np.isclose(near_depth_bound(settings), 3.0 - math.sqrt(3))
