"""An analytic capture (a coloured sphere, ray-traced with numpy) in the documented format.

For tests and smoke runs that must not need Blender: the files follow docs/capture_format.md
exactly (RGBA PNGs, 16-bit planar depth PNGs, per-frame intrinsics, OpenGL camera-to-world).
The sphere's colour varies smoothly with position so that a fit has something to learn.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from blender_piva.contract import cameras

DEPTH_SCALE = 1e-4
"""Normalised units per depth PNG count (the capture's depth_unit_scale_factor)."""


def sphere_color(p: np.ndarray) -> np.ndarray:  # [..., 3] points on the sphere -> [..., 3] in [0, 1]
    """Surface colour: a smooth function of position (no view dependence)."""
    return np.clip(0.5 + 0.45 * np.stack([p[..., 0], p[..., 1] * p[..., 2] * 2.0, -p[..., 2]], -1) / 0.7, 0.0, 1.0)


def render_sphere(
    c2w: np.ndarray, w: int, h: int, fl: float, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb [H, W, 3], alpha [H, W], planar depth [H, W]) of the sphere at the origin."""
    u = np.arange(w) + 0.5
    v = np.arange(h) + 0.5
    uu, vv = np.meshgrid(u, v)
    d_cam = np.stack([(uu - w / 2) / fl, -(vv - h / 2) / fl, -np.ones_like(uu)], -1)
    d = d_cam @ c2w[:3, :3].T  # t along d is planar depth (camera z = -1)
    o = c2w[:3, 3]
    a = (d * d).sum(-1)
    b = 2.0 * (d @ o)
    c = o @ o - radius**2
    disc = b * b - 4 * a * c
    hit = disc > 0
    t = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), 0.0)
    p = o + d * t[..., None]
    rgb = np.where(hit[..., None], sphere_color(p), 1.0)
    return rgb, hit.astype(np.float64), t


def write_sphere_capture(
    out_dir: str | Path,
    num_train: int = 12,
    num_eval: int = 2,
    resolution: int = 32,
    radius: float = 0.6,
    seed: int = 0,
) -> Path:
    """Write a sphere capture into ``out_dir``; returns the transforms.json path."""
    from PIL import Image

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "depth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = []
    views = [("train", i) for i in range(num_train)] + [("eval", i) for i in range(num_eval)]
    for split, i in views:
        if split == "train":
            elev, azim = rng.uniform(10, 60), rng.uniform(0, 360)
            fov, dist = rng.uniform(40, 70), rng.uniform(3.0, 4.0)
        else:
            elev, azim, fov, dist = 15.0, 360.0 * i / max(num_eval, 1) + 17.0, 50.0, 4.0
        e, a = math.radians(elev), math.radians(azim)
        eye = dist * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
        c2w = np.asarray(cameras.look_at(eye, (0.0, 0.0, 0.0)))
        fl, _, _, _ = cameras.intrinsics(fov, resolution, resolution)
        rgb, alpha, depth = render_sphere(c2w, resolution, resolution, fl, radius)
        rgba = np.concatenate([rgb, alpha[..., None]], -1)
        name = f"{split}_{i:04d}.png"
        Image.fromarray((rgba * 255 + 0.5).astype(np.uint8), "RGBA").save(out_dir / "images" / name)
        Image.fromarray(np.round(depth / DEPTH_SCALE).astype(np.uint16)).save(out_dir / "depth" / name)
        frames.append(
            {
                "file_path": f"images/{name}",
                "depth_file_path": f"depth/{name}",
                "split": split,
                "transform_matrix": c2w.tolist(),
                "w": resolution,
                "h": resolution,
                "fl_x": fl,
                "fl_y": fl,
                "cx": resolution / 2,
                "cy": resolution / 2,
                "camera_angle_x": math.radians(fov),
                "elevation_deg": elev,
                "azimuth_deg": azim,
                "distance": dist,
            }
        )
    eye4 = np.eye(4).tolist()
    meta = {
        "contract": 1,
        "camera_model": "PINHOLE",
        "w": resolution,
        "h": resolution,
        "aabb": [[-1, -1, -1], [1, 1, 1]],
        "background": [1.0, 1.0, 1.0],
        "depth_unit_scale_factor": DEPTH_SCALE,
        "normalization": eye4,
        "world_to_normalized": eye4,
        "object_matrix_world": eye4,
        "object_name": "AnalyticSphere",
        "capture_settings": {},
        "frames": frames,
    }
    path = out_dir / "transforms.json"
    path.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return path
