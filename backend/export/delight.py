"""Undo the capture's lighting in baked colours, so that a diffuse material lit again matches the capture.

The capture renders the object under a known rig (``transforms.json``'s ``"light_rig"``, see
``blender_piva/contract/capture.py``): a uniform world of radiance ``W`` plus a sun of irradiance ``S``
from direction ``s``. The field learns the lit colour, which for a Lambertian surface of albedo
``a`` with normal ``n`` is (linear units, rendering equation with a constant BRDF a / pi)

    L = a * E / pi,   E = pi * W  (world, whole hemisphere visible)  +  S * <max(0, n.w)>_sun disc

so the albedo is ``a = L / (W + S / pi * <max(0, n.w)>)``. Averaging the cosine over the sun's disc
(``sun_angle_deg`` wide) gives the soft terminator Cycles renders; for a surface fully lit by the
disc it is ``n.s`` exactly. The importer's material (Principled BSDF, no specular) lit by the same
rig then renders ``a * E / pi = L``: the capture, instead of the capture lit a second time.

Not undone: ambient occlusion (a concavity sees less of the world) and cast shadows: their
darkening stays in the texture and is applied again when the result is rendered under a world
light. Specular highlights of the source material end up in the albedo too.
"""

from __future__ import annotations

import math

import numpy as np

from blender_piva.contract.capture import LightRig

_DISC_RINGS = 4
"""Rings of the sun-disc quadrature (plus its centre); 4 rings x 12 directions is < 1e-3 off."""
_DISC_SPOKES = 12


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1.0 / 2.4) - 0.055)


def sun_disc_directions(rig: LightRig) -> np.ndarray:  # [K, 3] unit vectors towards points of the sun disc
    """Directions that cover the sun disc with equal solid angle (centre + rings x spokes)."""
    s = np.asarray(rig.sun_direction, np.float64)
    s = s / np.linalg.norm(s)
    half = 0.5 * math.radians(rig.sun_angle_deg)
    if half <= 0.0:
        return s[None]
    helper = np.array([1.0, 0.0, 0.0]) if abs(s[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(s, helper)
    u /= np.linalg.norm(u)
    v = np.cross(s, u)
    # Equal-area cells: ring k's mid cos(theta) splits the cap's (1 - cos(half)) evenly.
    directions = [s]
    for k in range(_DISC_RINGS):
        cos_t = 1.0 - (k + 0.5) / _DISC_RINGS * (1.0 - math.cos(half))
        sin_t = math.sqrt(max(0.0, 1.0 - cos_t * cos_t))
        for j in range(_DISC_SPOKES):
            phi = 2.0 * math.pi * (j + 0.5 * (k % 2)) / _DISC_SPOKES
            directions.append(cos_t * s + sin_t * (math.cos(phi) * u + math.sin(phi) * v))
    return np.stack(directions)


def diffuse_shading(rig: LightRig, normals: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:  # [N, 3] -> [N, 3]
    """``E / pi`` per colour channel: the factor the rig multiplies a Lambertian albedo by."""
    directions = sun_disc_directions(rig)  # [K, 3]
    # Mean over the disc of max(0, n.w), normalised so that a surface facing the sun gets 1.
    facing = float(np.mean(directions @ directions[0]))
    cosine = np.empty(len(normals))
    for s in range(0, len(normals), chunk):
        n = np.asarray(normals[s : s + chunk], np.float64)
        cosine[s : s + chunk] = np.maximum(n @ directions.T, 0.0).mean(axis=1) / facing
    world = rig.world_strength * np.asarray(rig.world_color, np.float64)  # [3]
    return world[None, :] + (rig.sun_strength / math.pi) * cosine[:, None]


def delight_colors(
    colors: np.ndarray,  # [N, 3] sRGB in [0, 1]: the field's (lit) colour
    normals: np.ndarray,  # [N, 3] unit outward normals in the rig's (normalised) frame
    rig: LightRig,
) -> np.ndarray:  # [N, 3] sRGB albedo in [0, 1]
    """sRGB -> linear, divide by the rig's diffuse shading, clamp to [0, 1], -> sRGB."""
    shading = diffuse_shading(rig, normals)
    albedo = srgb_to_linear(np.asarray(colors, np.float64)) / np.maximum(shading, 1e-6)
    return linear_to_srgb(albedo).astype(np.float32)
