"""The camera conventions of the capture format (standard library only; see docs/capture_format.md).

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

Vectors are 3-tuples and matrices nested lists (row-major 4x4); ``numpy.asarray`` takes both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .settings import CaptureSettings

SPLITS = ("train", "eval")
"""The two kinds of capture view: training views and held-out views."""

Vector = tuple[float, float, float]
Matrix = list[list[float]]


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
    def position(self) -> Vector:
        return orbit_position(self.elevation_deg, self.azimuth_deg, self.distance)

    def camera_to_world(self) -> Matrix:  # [4, 4]
        return look_at(self.position, (0.0, 0.0, 0.0))


def orbit_position(elevation_deg: float, azimuth_deg: float, distance: float) -> Vector:
    """Camera centre for spherical coordinates around the origin (see module docstring)."""
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    return (
        distance * math.cos(el) * math.sin(az),
        -distance * math.cos(el) * math.cos(az),
        distance * math.sin(el),
    )


def look_at(eye: Sequence[float], target: Sequence[float], up: Sequence[float] | None = None) -> Matrix:  # [4, 4]
    """Camera-to-world matrix of a camera at ``eye`` [3] looking at ``target`` [3].

    ``up`` [3] (default +Z) fixes the roll: the image's +Y is the component of ``up``
    perpendicular to the viewing direction. Looking straight along ``up`` falls back to +Y as up.
    """
    eye_v = tuple(float(c) for c in eye)
    forward = _sub(tuple(float(c) for c in target), eye_v)
    norm = _norm(forward)
    if norm == 0.0:
        raise ValueError("look_at: eye and target coincide, the viewing direction is undefined")
    forward = _scale(forward, 1.0 / norm)
    up_v = (0.0, 0.0, 1.0) if up is None else tuple(float(c) for c in up)
    right = _cross(forward, up_v)
    if _norm(right) < 1e-9:  # looking straight up or down
        right = _cross(forward, (0.0, 1.0, 0.0))
    right = _scale(right, 1.0 / _norm(right))
    true_up = _cross(right, forward)
    back = _scale(forward, -1.0)  # the camera looks down its local -Z
    return [[right[i], true_up[i], back[i], eye_v[i]] for i in range(3)] + [[0.0, 0.0, 0.0, 1.0]]


def intrinsics(fov_deg: float, width: int, height: int) -> tuple[float, float, float, float]:
    """Pinhole ``(fl_x, fl_y, cx, cy)`` in pixels for a field of view across the larger side.

    Matches a Blender camera with ``lens_unit='FOV'``, ``sensor_fit='AUTO'`` and square pixels.
    """
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must lie in (0, 180), got {fov_deg}")
    focal = 0.5 * max(width, height) / math.tan(math.radians(fov_deg) / 2.0)
    return focal, focal, width / 2.0, height / 2.0


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


def far_depth_bound(settings: CaptureSettings) -> float:
    """Largest planar depth any surface can have: farthest camera + the half-diagonal of [-1, 1]^3.

    Planar depth is at most the distance to the point, and every point of the normalised object
    lies within sqrt(3) of the origin.
    """
    return max(settings.distance[1], settings.eval_distance) + math.sqrt(3.0)


def near_depth_bound(settings: CaptureSettings) -> float:
    """Smallest distance from any camera to the normalised object (positive: cameras stay outside)."""
    return min(settings.distance[0], settings.eval_distance) - math.sqrt(3.0)


def matmul4(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> Matrix:
    """Product of two 4x4 matrices (nested sequences or arrays) as a nested list of floats."""
    return [[sum(float(a[i][k]) * float(b[k][j]) for k in range(4)) for j in range(4)] for i in range(4)]


def _sub(a: Vector, b: Vector) -> Vector:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def _scale(a: Vector, s: float) -> Vector:
    return (a[0] * s, a[1] * s, a[2] * s)


def _norm(a: Vector) -> float:
    return math.sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2])


def _cross(a: Vector, b: Vector) -> Vector:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])
