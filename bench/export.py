"""Export quality and speed: field -> marching cubes -> cleanup -> decimate -> UVs -> bake -> files.

Prints the median seconds of each export step with its face count, then

* ``chamfer_rel``: symmetric Chamfer distance (mean of the two directions' mean point-to-surface
  distances, from area-uniform samples) between the exported mesh and the true surface, over the
  true surface's bounding-box diagonal;
* ``texture_psnr_db``: PSNR of the PNG as a renderer reads it (bilinear at each sample's UV) against
  the reference colour (analytic: the field's colour at the closest true surface point; full: the
  fitted field's colour at the mesh point, i.e. the bake alone);
* ``export_seconds``: median total of the export stage.

    .venv/bin/python bench/export.py --analytic [--grid 256] [--runs 3]
    .venv/bin/python bench/export.py [--views 40 --fit-steps 500]   # capture (Cycles) -> fit -> export
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from backend.export.analytic import TorusField  # noqa: E402
from backend.export.extract import default_iso_density  # noqa: E402
from backend.export.glb import read_glb  # noqa: E402
from backend.export.pipeline import export_field  # noqa: E402
from backend.progress import StageReporter  # noqa: E402
from blender_piva import contract  # noqa: E402

STEPS = ("extract", "cleanup", "decimate", "unwrap", "bake", "write")


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator):
    """Area-uniform points: (points [n, 3], face index [n], barycentrics [n, 3])."""
    a, b, c = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    face = rng.choice(len(faces), n, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    w = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)
    return (vertices[faces[face]] * w[:, :, None]).sum(axis=1), face, w


def distance_to_mesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Exact point-to-triangle-mesh distance with Blender's BVH tree (mathutils ships with bpy)."""
    import bpy  # noqa: F401  (makes mathutils importable)
    from mathutils.bvhtree import BVHTree

    tree = BVHTree.FromPolygons(vertices.tolist(), faces.tolist())
    return np.array([tree.find_nearest(p)[3] for p in points.tolist()])


def bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:  # [H, W, 3], [N, 2] glTF UVs
    h, w = image.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip(uv[:, 1] * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def run_export(field, settings, local_from_normalized, runs: int, device) -> tuple[dict, Path]:
    results, out = [], Path(tempfile.mkdtemp(prefix="piva_export_"))
    for _ in range(runs):
        results.append(export_field(field, settings, local_from_normalized, out, device=device,
                                    reporter=StageReporter.silent("export")))
    report = {
        "timings_s": {s: statistics.median(r["timings_s"][s] for r in results) for s in STEPS},
        "faces": results[-1]["faces"],
        "total_s": statistics.median(sum(r["timings_s"].values()) for r in results),
        "cell_size": results[-1]["cell_size"],
    }
    return report, out


def texture_psnr(out: Path, reference_color, rng: np.random.Generator, n: int = 200_000,
                 normalized_from_local: np.ndarray | None = None) -> float:
    mesh = read_glb((out / "mesh.glb").read_bytes())
    image = np.asarray(Image.open(out / "texture.png").convert("RGB"), np.float64) / 255.0
    points, face, w = sample_surface(mesh.positions, mesh.faces, n, rng)
    uv = (mesh.uvs[mesh.faces[face]] * w[:, :, None]).sum(axis=1)
    if normalized_from_local is not None:
        points = points @ normalized_from_local[:3, :3].T + normalized_from_local[:3, 3]
    expected = reference_color(points)
    mse = float(np.mean((bilinear(image, uv) - expected) ** 2))
    return 10.0 * np.log10(1.0 / max(mse, 1e-12))


def bench_analytic(args, device) -> dict:
    # peak = 2 x iso puts the exporter's level set exactly on the torus (sigmoid(0) = 1/2), so the
    # Chamfer distance measures the exporter, not the analytic field's soft edge.
    field = TorusField(peak=2.0 * default_iso_density(np.array([[-1.0] * 3, [1.0] * 3])))
    settings = contract.ExportSettings(grid_resolution=args.grid, face_budget=args.faces, texture_size=args.texture)
    report, out = run_export(field, settings, np.eye(4), args.runs, device)
    rng = np.random.default_rng(0)
    mesh = read_glb((out / "mesh.glb").read_bytes())
    # Mesh -> surface: |sdf| is exact. Surface -> mesh: project area-uniform torus samples exactly.
    points, _, _ = sample_surface(mesh.positions, mesh.faces, args.samples, rng)
    d_mesh = field.sdf(torch.as_tensor(points, dtype=torch.float32)).abs().numpy()
    theta, phi = rng.random(4 * args.samples) * 2 * np.pi, rng.random(4 * args.samples) * 2 * np.pi
    radius = field.major_radius + field.minor_radius * np.cos(phi)
    keep = rng.random(len(theta)) < radius / (field.major_radius + field.minor_radius)  # area weighting
    true_pts = np.stack([radius * np.cos(theta), radius * np.sin(theta), field.minor_radius * np.sin(phi)], 1)[keep]
    d_true = distance_to_mesh(true_pts[: args.samples], mesh.positions.astype(np.float64), mesh.faces)
    extent = 2 * np.array([field.major_radius + field.minor_radius] * 2 + [field.minor_radius])
    report["chamfer_rel"] = 0.5 * (d_mesh.mean() + d_true.mean()) / np.linalg.norm(extent)

    def reference(p: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(p, dtype=torch.float32)
        return field.color(field.project(x)).double().numpy()

    report["texture_psnr_db"] = texture_psnr(out, reference, rng)
    return report


def bench_full(args, device) -> dict:
    """Capture Suzanne with Cycles, fit the field, export it, compare with the source mesh."""
    try:
        import bpy

        from backend.data.capture_dataset import load_capture
        from backend.field.ngp_field import load_field
        from backend.reconstruct.trainer import fit_field
        from blender_piva.capture import capture_object
    except ImportError as exc:
        sys.exit(f"the full benchmark needs the capture and reconstruct stages ({exc}); run with --analytic")
    work = Path(tempfile.mkdtemp(prefix="piva_export_full_"))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_monkey_add(location=(1.0, 2.0, 0.5), rotation=(0.3, 0.0, 0.6))
    obj = bpy.context.active_object
    obj.modifiers.new("Subdivision", "SUBSURF").levels = 1
    material = bpy.data.materials.new("Paint")
    bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Base Color"].default_value = (0.8, 0.25, 0.05, 1.0)
    obj.data.materials.append(material)
    bpy.context.view_layer.update()
    capture = contract.CaptureSettings(num_views=args.views, num_eval_views=2, resolution=args.capture_res)
    transforms = capture_object(obj, capture, work / "capture")
    normalization = np.array(json.loads(transforms.read_text())["normalization"], np.float64)
    recon = contract.ReconstructSettings(steps=args.fit_steps)
    metrics = fit_field(load_capture(work / "capture"), recon, work / "reconstruction", device=device, seed=0,
                        reporter=StageReporter.silent("reconstruct"))
    field = load_field(work / "reconstruction" / "field", device=device)
    settings = contract.ExportSettings(grid_resolution=args.grid, face_budget=args.faces, texture_size=args.texture)
    report, out = run_export(field, settings, np.linalg.inv(normalization), args.runs, device)

    depsgraph = bpy.context.evaluated_depsgraph_get()
    source = obj.evaluated_get(depsgraph).to_mesh()
    source.calc_loop_triangles()
    src_v = np.array([v.co for v in source.vertices], np.float64)
    src_f = np.array([t.vertices for t in source.loop_triangles])
    mesh = read_glb((out / "mesh.glb").read_bytes())
    rng = np.random.default_rng(0)
    a, _, _ = sample_surface(mesh.positions.astype(np.float64), mesh.faces, args.samples, rng)
    b, _, _ = sample_surface(src_v, src_f, args.samples, rng)
    d_ab = distance_to_mesh(a, src_v, src_f)
    d_ba = distance_to_mesh(b, mesh.positions.astype(np.float64), mesh.faces)
    report["chamfer_rel"] = 0.5 * (d_ab.mean() + d_ba.mean()) / np.linalg.norm(src_v.max(0) - src_v.min(0))

    @torch.no_grad()
    def reference(p: np.ndarray) -> np.ndarray:
        return field.color(torch.as_tensor(p, dtype=torch.float32, device=device)).double().cpu().numpy()

    report["texture_psnr_db"] = texture_psnr(out, reference, rng, normalized_from_local=normalization)
    report["heldout_psnr_db"] = metrics["heldout_psnr_db"]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--analytic", action="store_true", help="export an analytic torus instead of a fitted field")
    parser.add_argument("--grid", type=int, default=256)
    parser.add_argument("--faces", type=int, default=20000)
    parser.add_argument("--texture", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=100_000, help="surface samples per Chamfer direction")
    parser.add_argument("--device", default="auto", choices=contract.DEVICES)
    parser.add_argument("--views", type=int, default=40, help="full mode: capture views")
    parser.add_argument("--capture-res", type=int, default=128, help="full mode: capture resolution")
    parser.add_argument("--fit-steps", type=int, default=500, help="full mode: reconstruction steps")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    report = bench_analytic(args, device) if args.analytic else bench_full(args, device)
    for step in STEPS:
        faces = report["faces"].get(step)
        suffix = f"  ({faces} faces)" if faces is not None else ""
        print(f"{step}_seconds: {report['timings_s'][step]:.3f}{suffix}")
    for key in ("extract", "cleanup", "decimate", "unwrap"):
        print(f"faces_after_{key}: {report['faces'][key]}")
    if "heldout_psnr_db" in report:
        print(f"heldout_psnr_db: {report['heldout_psnr_db']:.2f}")
    print(f"chamfer_rel: {report['chamfer_rel']:.6f}")
    print(f"texture_psnr_db: {report['texture_psnr_db']:.2f}")
    print(f"export_seconds: {report['total_s']:.3f}")


if __name__ == "__main__":
    main()
