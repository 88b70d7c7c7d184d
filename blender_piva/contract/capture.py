"""The capture format: ``transforms.json`` (written by the extension, read by the backend), its
frame entries, its 16-bit depth encoding and its light rig. The full format is
docs/capture_format.md; the camera conventions are :mod:`blender_piva.contract.cameras`."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from .cameras import CameraView, far_depth_bound, intrinsics, matmul4
from .layout import CONTRACT_VERSION
from .settings import CaptureSettings

DEPTH_MAX_CODE = 65535
"""Largest 16-bit depth code; 0 means background."""

BACKGROUND_DEPTH = 1e9
"""Cycles writes 1e10 in the Z pass where a pixel's centre ray hits nothing; anything beyond this
is background."""


def depth_unit_scale(settings: CaptureSettings) -> float:
    """Normalised units per 16-bit depth code: the farthest possible surface maps to 65535.

    With the default distances (<= 4) this is ~8.7e-5, i.e. ~0.004 % of the object's size 2.
    """
    return far_depth_bound(settings) / DEPTH_MAX_CODE


def frame_entry(view: CameraView, width: int, height: int) -> dict[str, Any]:
    """One ``frames[i]`` entry of ``transforms.json``."""
    fl_x, fl_y, cx, cy = intrinsics(view.fov_deg, width, height)
    return {
        "file_path": f"images/{view.name}.png",
        "depth_file_path": f"depth/{view.name}.png",
        "split": view.split,
        "transform_matrix": _matrix(view.camera_to_world()),
        "w": width,
        "h": height,
        "fl_x": fl_x,
        "fl_y": fl_y,
        "cx": cx,
        "cy": cy,
        "camera_angle_x": 2.0 * math.atan(0.5 * width / fl_x),
        "elevation_deg": view.elevation_deg,
        "azimuth_deg": view.azimuth_deg,
        "distance": view.distance,
    }


@dataclasses.dataclass(frozen=True)
class LightRig:
    """The capture's lights, in the normalised frame: ``transforms.json``'s ``"light_rig"`` entry.

    A Lambertian surface of albedo ``a`` (linear) with normal ``n`` that sees the whole world and
    the whole sun renders as ``a * (world_strength * world_color + sun_strength / pi * max(0, n.s))``
    (Cycles: a background of strength W is radiance W; a sun of strength S is irradiance S W/m^2).
    The backend's bake divides by this to store the albedo (``backend/export/delight.py``).
    """

    world_strength: float
    """Strength of the uniform world background (radiance, linear)."""
    world_color: tuple[float, float, float]
    """Linear colour of the world background."""
    sun_direction: tuple[float, float, float]
    """Unit vector from the object towards the sun (the sun shines along its negative)."""
    sun_strength: float
    """Blender sun strength: irradiance on a surface facing the sun, W/m^2."""
    sun_angle_deg: float
    """Angular diameter of the sun disc (soft shadows and a soft terminator)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "world_strength": float(self.world_strength),
            "world_color": [float(c) for c in self.world_color],
            "sun_direction": [float(c) for c in self.sun_direction],
            "sun_strength": float(self.sun_strength),
            "sun_angle_deg": float(self.sun_angle_deg),
        }

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> "LightRig":
        """Parse a ``"light_rig"`` entry; ValueError names what is missing or malformed."""
        try:
            direction = [float(c) for c in entry["sun_direction"]]
            length = math.sqrt(sum(c * c for c in direction))
            rig = cls(
                world_strength=float(entry["world_strength"]),
                world_color=tuple(float(c) for c in entry["world_color"]),  # type: ignore[arg-type]
                sun_direction=tuple(c / length for c in direction),  # type: ignore[arg-type]
                sun_strength=float(entry["sun_strength"]),
                sun_angle_deg=float(entry["sun_angle_deg"]),
            )
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            raise ValueError(
                f"transforms.json's 'light_rig' entry is malformed ({type(exc).__name__}: {exc}); it needs "
                "world_strength, world_color [3], sun_direction [3], sun_strength and sun_angle_deg "
                "(docs/capture_format.md). Re-capture the object to rewrite it."
            ) from None
        values = [rig.world_strength, rig.sun_strength, rig.sun_angle_deg, *rig.world_color, *rig.sun_direction]
        if len(rig.world_color) != 3 or len(rig.sun_direction) != 3 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"transforms.json's 'light_rig' entry has wrong sizes or non-finite values: {entry}")
        if rig.world_strength < 0 or rig.sun_strength < 0 or min(rig.world_color) < 0:
            raise ValueError(f"transforms.json's 'light_rig' entry has negative light: {entry}")
        return rig


def transforms_document(
    settings: CaptureSettings,
    views: Sequence[CameraView],
    world_to_normalized: Sequence[Sequence[float]],  # [4, 4]
    object_matrix_world: Sequence[Sequence[float]],  # [4, 4]
    object_name: str,
    light_rig: LightRig | None = None,
) -> dict[str, Any]:
    """The whole ``transforms.json`` (see docs/capture_format.md); ``light_rig`` is written when given."""
    size = settings.resolution
    document = {
        "contract": CONTRACT_VERSION,
        "camera_model": "PINHOLE",
        "w": size,
        "h": size,
        "aabb": [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]],
        "background": [1.0, 1.0, 1.0],
        "depth_unit_scale_factor": depth_unit_scale(settings),
        "normalization": matmul4(world_to_normalized, object_matrix_world),
        "world_to_normalized": _matrix(world_to_normalized),
        "object_matrix_world": _matrix(object_matrix_world),
        "object_name": object_name,
        "capture_settings": dataclasses.asdict(settings),
        "frames": [frame_entry(view, size, size) for view in views],
    }
    if light_rig is not None:
        document["light_rig"] = light_rig.to_json()
    return document


def _matrix(m: Sequence[Sequence[float]]) -> list[list[float]]:
    return [[float(x) for x in row] for row in m]
