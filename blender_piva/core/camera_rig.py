"""The capture's camera rig and the normalised frame (numpy, no bpy).

The conventions (orbit positions, camera-to-world matrices, intrinsics) are the contract's
(:mod:`blender_piva.contract.cameras`); this module samples the training views with numpy's PCG64
(the same seed gives the same cameras on every platform) and computes frames from points.
"""

from __future__ import annotations

import math

import numpy as np

from ..contract import CaptureSettings
from ..contract.cameras import CameraView, eval_views


def train_views(settings: CaptureSettings) -> list[CameraView]:
    """``settings.num_views`` seeded random cameras on the upper hemisphere band.

    Azimuth is uniform in [0, 360); elevation is uniform *in area* over the band
    ``elevation_deg`` (i.e. ``sin(el)`` uniform), so views cover the band evenly instead of
    crowding near its top; field of view and distance are uniform in their ranges. The same
    seed gives the same cameras on every platform (numpy's PCG64).
    """
    rng = np.random.default_rng(settings.seed)
    n = settings.num_views
    azimuth = rng.uniform(0.0, 360.0, n)
    lo, hi = (math.sin(math.radians(e)) for e in settings.elevation_deg)
    elevation = np.degrees(np.arcsin(np.clip(rng.uniform(lo, hi, n), -1.0, 1.0)))
    fov = rng.uniform(*settings.fov_deg, n)
    distance = rng.uniform(*settings.distance, n)
    return [
        CameraView("train", i, float(elevation[i]), float(azimuth[i]), float(distance[i]), float(fov[i]))
        for i in range(n)
    ]


def all_views(settings: CaptureSettings) -> list[CameraView]:
    """Training views, then held-out views: the order of ``frames`` in ``transforms.json``."""
    return train_views(settings) + eval_views(settings)


def normalization_from_points(points: np.ndarray) -> np.ndarray:  # points [N, 3] -> [4, 4]
    """World-to-normalised matrix: centre the points' bounding box, scale its longest side to 2."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    if len(points) == 0:
        raise ValueError("cannot normalise an empty point set")
    lo, hi = points.min(0), points.max(0)
    extent = float((hi - lo).max())
    if not math.isfinite(extent) or extent <= 0.0:
        raise ValueError(f"the bounding box has no size (longest side {extent}); the object is a single point")
    scale = 2.0 / extent
    matrix = np.diag([scale, scale, scale, 1.0])
    matrix[:3, 3] = -scale * (lo + hi) / 2.0
    return matrix


def pixel_directions(width: int, height: int, fl_x: float, fl_y: float, cx: float, cy: float) -> np.ndarray:
    """Camera-space ray directions with z = -1 through every pixel centre: [H, W, 3].

    Multiplying a direction by a pixel's planar depth gives the camera-space surface point.
    """
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    return np.stack([(u - cx) / fl_x, -(v - cy) / fl_y, -np.ones_like(u)], -1)
