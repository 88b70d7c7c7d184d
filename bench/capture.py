"""Capture speed and depth accuracy: Suzanne with a coloured material, Cycles on the CPU.

Prints ``capture_s_per_view_32``, ``_128`` and ``_512`` (median over runs of the wall
time of one capture_object call divided by its views, setup included) and
``depth_backproject_mean_rel`` (mean distance from back-projected depth pixels to the source mesh
surface, over the bounding-box size, using only transforms.json and the PNGs).

    .venv/bin/python bench/capture.py [--runs 3] [--views-32 16] [--views-128 8] [--views-512 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bpy  # noqa: E402
from PIL import Image  # noqa: E402

from blender_piva.scene.capture import capture_object  # noqa: E402
from blender_piva.contract import CaptureSettings  # noqa: E402


def make_suzanne() -> "bpy.types.Object":
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_monkey_add(location=(1.0, 2.0, 0.5), rotation=(0.3, 0.0, 0.6))
    obj = bpy.context.active_object
    obj.scale = (1.5, 1.0, 0.8)
    obj.modifiers.new("Subdivision", "SUBSURF").levels = 1
    material = bpy.data.materials.new("Paint")
    bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Base Color"].default_value = (0.8, 0.25, 0.05, 1.0)
    obj.data.materials.append(material)
    bpy.context.view_layer.update()
    return obj


def surface_triangles(obj: "bpy.types.Object", normalization: np.ndarray) -> np.ndarray:  # [T, 3, 3]
    depsgraph = bpy.context.evaluated_depsgraph_get()
    mesh = obj.evaluated_get(depsgraph).to_mesh()
    mesh.calc_loop_triangles()
    co = np.array([v.co for v in mesh.vertices], np.float64)
    tris = np.array([t.vertices for t in mesh.loop_triangles])
    obj.evaluated_get(depsgraph).to_mesh_clear()
    co = co @ normalization[:3, :3].T + normalization[:3, 3]
    return co[tris]


def point_triangle_distance(points: np.ndarray, tris: np.ndarray) -> np.ndarray:  # [N, 3], [N, K, 3, 3] -> [N, K]
    """Exact distance from each point to each of its K candidate triangles."""
    p = points[:, None, :]
    a, b, c = tris[..., 0, :], tris[..., 1, :], tris[..., 2, :]
    normal = np.cross(b - a, c - a)
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-20)
    plane = np.abs(np.einsum("nkd,nkd->nk", p - a, normal))
    foot = p - np.einsum("nk,nkd->nkd", np.einsum("nkd,nkd->nk", p - a, normal), normal)
    inside = np.ones(plane.shape, bool)
    edge = np.full(plane.shape, np.inf)
    for u, v, w in ((a, b, c), (b, c, a), (c, a, b)):
        side = np.einsum("nkd,nkd->nk", np.cross(v - u, foot - u), np.cross(v - u, w - u))
        inside &= side >= 0
        length2 = np.maximum(np.einsum("nkd,nkd->nk", v - u, v - u), 1e-20)
        t = np.clip(np.einsum("nkd,nkd->nk", p - u, v - u) / length2, 0, 1)
        edge = np.minimum(edge, np.linalg.norm(p - (u + t[..., None] * (v - u)), axis=-1))
    return np.where(inside, plane, edge)


def backproject_mean_rel(transforms: Path, triangles: np.ndarray) -> float:
    """Mean distance from back-projected depth pixels to the mesh, over the bbox size (2)."""
    from scipy.spatial import cKDTree

    doc = json.loads(transforms.read_text())
    tree = cKDTree(triangles.mean(1))
    distances = []
    for frame in doc["frames"]:
        with Image.open(transforms.parent / frame["depth_file_path"]) as im:
            depth = np.array(im).astype(np.float64) * doc["depth_unit_scale_factor"]
        c2w = np.array(frame["transform_matrix"])
        v, u = np.nonzero(depth > 0)
        x, y = (u + 0.5 - frame["cx"]) / frame["fl_x"], -(v + 0.5 - frame["cy"]) / frame["fl_y"]
        d = np.stack([x, y, -np.ones(len(u))], 1)  # camera-space directions, z = -1
        points = (d * depth[v, u][:, None]) @ c2w[:3, :3].T + c2w[:3, 3]
        _, candidates = tree.query(points, k=min(24, len(triangles)))  # nearest triangle centroids
        distances.append(point_triangle_distance(points, triangles[candidates]).min(1))
    return float(np.concatenate(distances).mean() / 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--views-32", type=int, default=16)
    parser.add_argument("--views-128", type=int, default=8)
    parser.add_argument("--views-512", type=int, default=2)
    args = parser.parse_args()
    obj = make_suzanne()
    work = Path(tempfile.mkdtemp(prefix="piva_bench_capture_"))
    figures = {}
    last = None
    for resolution, views in ((32, args.views_32), (128, args.views_128), (512, args.views_512)):
        times = []
        for run in range(args.runs):
            settings = CaptureSettings(num_views=views, num_eval_views=0, resolution=resolution, seed=run)
            start = time.perf_counter()
            last = capture_object(obj, settings, work / f"capture_{resolution}")
            times.append((time.perf_counter() - start) / views)
        figures[f"capture_s_per_view_{resolution}"] = statistics.median(times)
        if resolution == 128:
            normalization = np.array(json.loads(last.read_text())["normalization"])
            figures["depth_backproject_mean_rel"] = backproject_mean_rel(last, surface_triangles(obj, normalization))
    for name in sorted(figures):
        print(f"{name}: {figures[name]:.4g}")


if __name__ == "__main__":
    main()
