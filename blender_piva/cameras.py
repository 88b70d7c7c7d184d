"""Capture cameras and the normalised frame (standard library + numpy, no bpy).

Conventions (the same as ``docs/capture_format.md``):

* World up is +Z (Blender). A camera at ``elevation`` above the horizon, ``azimuth`` degrees
  and ``distance`` from the origin sits at
  ``distance * (cos(el) sin(az), -cos(el) cos(az), sin(el))``: azimuth 0 is Blender's *front*
  view (camera on -Y looking towards +Y), azimuth 90 the *right* view (camera on +X).
* Camera-to-world matrices follow Blender / OpenGL: the camera looks down its local -Z, +Y is up
  in the image, +X is right.
* A pixel (u, v) (u right, v down, centres at +0.5) has camera-space direction
  ``((u - cx) / fl_x, -(v - cy) / fl_y, -1)``.
* The normalised frame centres the object's world bounding box at the origin and scales it
  uniformly so that its longest side is 2: the object fits in [-1, 1]^3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .contract import CaptureSettings

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class CameraView:
    """One capture camera, orbiting the origin of the normalised frame and looking at it."""

    split: str
    """``train`` or ``eval`` (held out)."""
    index: int
    """Index within its split (names the files: ``images/{split}_{index:04d}.png``)."""
    elevation_deg: float
    """Angle above the horizon (the XY plane), degrees."""
    azimuth_deg: float
    """Angle around +Z, degrees; 0 = front (-Y), 90 = right (+X)."""
    distance: float
    """Distance from the origin in normalised units."""
    fov_deg: float
    """Field of view across the larger image side (Blender's sensor fit AUTO), degrees."""

    @property
    def name(self) -> str:
        return f"{self.split}_{self.index:04d}"

    @property
    def position(self) -> np.ndarray:  # [3]
        return orbit_position(self.elevation_deg, self.azimuth_deg, self.distance)

    def camera_to_world(self) -> np.ndarray:  # [4, 4]
        return look_at(self.position, np.zeros(3))


def orbit_position(elevation_deg: float, azimuth_deg: float, distance: float) -> np.ndarray:  # [3]
    """Camera centre for spherical coordinates around the origin (see module docstring)."""
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    return distance * np.array([math.cos(el) * math.sin(az), -math.cos(el) * math.cos(az), math.sin(el)])


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray | None = None) -> np.ndarray:  # [4, 4]
    """Camera-to-world matrix of a camera at ``eye`` [3] looking at ``target`` [3].

    ``up`` [3] (default +Z) fixes the roll: the image's +Y is the component of ``up``
    perpendicular to the viewing direction. Looking straight along ``up`` falls back to +Y as up.
    """
    eye = np.asarray(eye, np.float64)
    forward = np.asarray(target, np.float64) - eye
    norm = np.linalg.norm(forward)
    if norm == 0.0:
        raise ValueError("look_at: eye and target coincide, the viewing direction is undefined")
    forward /= norm
    up = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, np.float64)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking straight up or down
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0] = right
    c2w[:3, 1] = true_up
    c2w[:3, 2] = -forward  # the camera looks down its local -Z
    c2w[:3, 3] = eye
    return c2w


def intrinsics(fov_deg: float, width: int, height: int) -> tuple[float, float, float, float]:
    """Pinhole ``(fl_x, fl_y, cx, cy)`` in pixels for a field of view across the larger side.

    Matches a Blender camera with ``lens_unit='FOV'``, ``sensor_fit='AUTO'`` and square pixels.
    """
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must lie in (0, 180), got {fov_deg}")
    focal = 0.5 * max(width, height) / math.tan(math.radians(fov_deg) / 2.0)
    return focal, focal, width / 2.0, height / 2.0


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


def eval_views(settings: CaptureSettings) -> list[CameraView]:
    """``settings.num_eval_views`` held-out cameras evenly spaced in azimuth, starting at the front."""
    n = settings.num_eval_views
    return [
        CameraView(
            "eval", i, float(settings.eval_elevation_deg), 360.0 * i / n, float(settings.eval_distance),
            float(settings.eval_fov_deg),
        )
        for i in range(n)
    ]


def all_views(settings: CaptureSettings) -> list[CameraView]:
    """Training views, then held-out views: the order of ``frames`` in ``transforms.json``."""
    return train_views(settings) + eval_views(settings)


def far_depth_bound(settings: CaptureSettings) -> float:
    """Largest planar depth any surface can have: farthest camera + the half-diagonal of [-1, 1]^3.

    Planar depth is at most the distance to the point, and every point of the normalised object
    lies within sqrt(3) of the origin.
    """
    return max(settings.distance[1], settings.eval_distance) + math.sqrt(3.0)


def near_depth_bound(settings: CaptureSettings) -> float:
    """Smallest distance from any camera to the normalised object (positive: cameras stay outside)."""
    return min(settings.distance[0], settings.eval_distance) - math.sqrt(3.0)


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
