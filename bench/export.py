"""Export quality and speed: field -> marching cubes -> cleanup -> decimate -> UVs -> bake -> files.

Prints the median seconds of each export step with its face count, then

* ``chamfer_rel``: symmetric Chamfer distance (mean of the two directions' mean point-to-surface
  distances, from area-uniform samples) between the exported mesh and the true surface, over the
  true surface's bounding-box diagonal (full mode: the source mesh, in the object's local frame);
* ``normal_consistency`` (full mode): mean |cos| between each sample's face normal and the nearest
  face's normal on the other mesh, both directions;
* ``texture_psnr_db``: analytic mode: PSNR of the PNG as a renderer reads it (bilinear at each
  sample's UV) against the field's colour at the closest true surface point. Full mode: the result
  is imported with ``import_result`` and rendered by ``capture_object`` (same Cycles rig, same
  held-out cameras, pinned to the source's normalised frame) and compared with the captured
  held-out views, whole image composited on white; ``texture_psnr_fg_db`` over the source's
  foreground (alpha > 0.5) only; ``*_lit_*``: the same with the bake's de-lighting off;
* ``export_seconds``: median total of the export stage;
* ``export_extract_seconds_G`` (G = ``--grid``, goal at 256: under 10 s on 2 cores): median seconds
  of the extract step (coarse grid, coarse-to-fine field queries, sealing, marching cubes).

``--field DIR`` extracts a saved field (``reconstruction/field`` of a job) only, coarse-to-fine
(``export_extract_seconds_G``, ``export_extract_samples_queried``, ``export_extract_query_fraction``
of the coarse plus full fine grid's queries) and, with ``--compare-full``, on the full grid too: ``export_extract_full_seconds_G`` and the
differences (``extract_vertices_*``, ``extract_volume_rel_diff``, ``extract_chamfer_rel``).

    .venv/bin/python bench/export.py --analytic [--grid 256] [--runs 3]
    .venv/bin/python bench/export.py --field JOB/reconstruction/field [--compare-full] [--runs 3]
    OMP_NUM_THREADS=1 .venv/bin/python bench/export.py [--views 40 --fit-steps 500 --work DIR]
        # Suzanne: capture (Cycles, 128 px) -> fit -> export (de-lit and lit) -> import -> render
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from backend.export.analytic import TorusField  # noqa: E402
from backend.export.extract import ExtractSettings, default_iso_density, extract_mesh  # noqa: E402
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


def run_export(field, settings, local_from_normalized, runs: int, device, *, light_rig=None, bake=None,
               out: Path | None = None) -> tuple[dict, Path]:
    results, out = [], Path(out or tempfile.mkdtemp(prefix="piva_export_"))
    for _ in range(runs):
        results.append(export_field(field, settings, local_from_normalized, out, device=device,
                                    reporter=StageReporter.silent("export"), light_rig=light_rig, bake=bake))
    (out / "files.json").write_text(json.dumps(results[-1]["files"]))
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


def make_source_object():
    """Suzanne (subdivided once, rotated, off the origin) with a matte, smoothly varying paint."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_monkey_add(location=(1.0, 2.0, 0.5), rotation=(0.3, 0.0, 0.6))
    obj = bpy.context.active_object
    obj.modifiers.new("Subdivision", "SUBSURF").levels = 1
    bpy.ops.object.shade_smooth()
    material = bpy.data.materials.new("Paint")
    if material.node_tree is None:  # Blender < 5 creates materials without nodes
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    # Matte: a texture cannot hold view-dependent highlights, so a glossy source would measure those.
    bsdf.inputs["Roughness"].default_value = 1.0
    bsdf.inputs["Specular IOR Level"].default_value = 0.0
    coords = nodes.new("ShaderNodeTexCoord")
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 1.2
    noise.inputs["Detail"].default_value = 0.0
    ramp = nodes.new("ShaderNodeValToRGB")
    elements = ramp.color_ramp.elements
    elements[0].position, elements[0].color = 0.35, (0.8, 0.25, 0.05, 1.0)  # orange
    elements[1].position, elements[1].color = 0.65, (0.05, 0.35, 0.6, 1.0)  # blue
    links.new(coords.outputs["Object"], noise.inputs["Vector"])
    links.new(noise.outputs["Fac"], ramp.inputs["Fac"])
    links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    obj.data.materials.append(material)
    bpy.context.view_layer.update()
    return obj


def mesh_arrays(obj) -> tuple[np.ndarray, np.ndarray]:
    """Local-frame vertices [V, 3] and triangles [F, 3] of the evaluated object."""
    import bpy

    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = evaluated.to_mesh()
    mesh.calc_loop_triangles()
    vertices = np.array([v.co for v in mesh.vertices], np.float64)
    faces = np.array([t.vertices for t in mesh.loop_triangles], np.int64)
    evaluated.to_mesh_clear()
    return vertices, faces


def nearest_on_mesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance [N] to the mesh and unit normal [N, 3] of the nearest face (mathutils BVH)."""
    import bpy  # noqa: F401  (makes mathutils importable)
    from mathutils.bvhtree import BVHTree

    tree = BVHTree.FromPolygons(vertices.tolist(), faces.tolist())
    hits = [tree.find_nearest(p) for p in points.tolist()]
    return np.array([h[3] for h in hits]), np.array([tuple(h[1]) for h in hits])


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    n = np.cross(b - a, c - a)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)


def chamfer_and_normals(exp_v, exp_f, src_v, src_f, samples: int, rng) -> tuple[float, float]:
    """(symmetric Chamfer / source bbox diagonal, normal consistency: mean |n_a . n_nearest|, both ways)."""
    a, fa, _ = sample_surface(exp_v, exp_f, samples, rng)
    b, fb, _ = sample_surface(src_v, src_f, samples, rng)
    d_ab, n_ab = nearest_on_mesh(a, src_v, src_f)
    d_ba, n_ba = nearest_on_mesh(b, exp_v, exp_f)
    cos_ab = np.abs(np.einsum("ij,ij->i", face_normals(exp_v, exp_f)[fa], n_ab))
    cos_ba = np.abs(np.einsum("ij,ij->i", face_normals(src_v, src_f)[fb], n_ba))
    chamfer = 0.5 * (d_ab.mean() + d_ba.mean()) / np.linalg.norm(src_v.max(0) - src_v.min(0))
    return float(chamfer), float(0.5 * (cos_ab.mean() + cos_ba.mean()))


def render_imported(results: Path, source, capture: contract.CaptureSettings, normalization: np.ndarray,
                    out_dir: Path) -> tuple[Path, float]:
    """Import the result beside ``source`` and render it from the source capture's held-out cameras.

    capture_object normalises by the rendered mesh's own bounding box, which differs slightly from
    the source's; the render is pinned to the source's frame instead (same cameras relative to the
    object), and the returned transforms.json is checked for it. Also returns how far the
    imported mesh's own frame would be off: the largest entry of the normalisation difference.
    """
    from unittest import mock

    import bpy

    from blender_piva.core import camera_rig
    from blender_piva.scene.capture import capture_object
    from blender_piva.scene.importer import import_result

    contract.ResultsManifest(job_id="bench", files=dict(json.loads((results / "files.json").read_text())),
                             normalization=normalization.tolist()).write(results)
    obj = import_result(results, source, collection_name="PIVA bench", label=f"bench {results.name}", job_info={})
    bpy.context.view_layer.update()
    matrix_world = np.array(obj.matrix_world, np.float64)
    imp_v, _ = mesh_arrays(obj)
    own = camera_rig.normalization_from_points(imp_v @ matrix_world[:3, :3].T + matrix_world[:3, 3]) @ matrix_world
    mismatch = float(np.abs(own - normalization).max())
    pinned = normalization @ np.linalg.inv(matrix_world)  # world -> the source's normalised frame
    with mock.patch.object(camera_rig, "normalization_from_points", lambda points: pinned.copy()):
        transforms = capture_object(obj, dataclasses.replace(capture, num_views=1), out_dir)
    got = np.array(json.loads(transforms.read_text())["normalization"])
    if not np.allclose(got, normalization, atol=1e-9):
        raise RuntimeError(f"the imported object was not rendered in the source's frame: {got} vs {normalization}")
    return transforms, mismatch


def image_psnr(capture_a: Path, capture_b: Path, names: list[str]) -> tuple[float, float]:
    """(whole image on white, foreground = source alpha > 0.5) PSNR in dB over the held-out views."""
    whole, fore = [], []
    for name in names:
        a = np.asarray(Image.open(capture_a / "images" / f"{name}.png").convert("RGBA"), np.float64) / 255.0
        b = np.asarray(Image.open(capture_b / "images" / f"{name}.png").convert("RGBA"), np.float64) / 255.0
        on_white_a = a[..., :3] * a[..., 3:] + (1.0 - a[..., 3:])
        on_white_b = b[..., :3] * b[..., 3:] + (1.0 - b[..., 3:])
        err = (on_white_a - on_white_b) ** 2
        whole.append(err.mean())
        fore.append(err[a[..., 3] > 0.5].mean())
    return 10.0 * np.log10(1.0 / np.mean(whole)), 10.0 * np.log10(1.0 / np.mean(fore))


def bench_full(args, device) -> dict:
    """Capture Suzanne with Cycles, fit the field, export it, compare the mesh and its renders with the source."""
    try:
        from backend.data.capture_dataset import load_capture
        from backend.export.uv_bake import BakeSettings
        from backend.field.ngp_field import load_field
        from backend.reconstruct.trainer import fit_field
        from blender_piva.scene.capture import capture_object
        from blender_piva.contract.capture import LightRig
    except ImportError as exc:
        sys.exit(f"the full benchmark needs the capture and reconstruct stages ({exc}); run with --analytic")
    work = Path(args.work or tempfile.mkdtemp(prefix="piva_export_full_"))
    clock = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - clock:6.0f} s] {message}", file=sys.stderr, flush=True)

    obj = make_source_object()
    capture = contract.CaptureSettings(num_views=args.views, num_eval_views=args.eval_views,
                                       resolution=args.capture_res)
    if not (work / "capture" / contract.TRANSFORMS_FILE).is_file():  # --work reuses an earlier capture and fit
        capture_object(obj, capture, work / "capture")
    log("captured")
    transforms = json.loads((work / "capture" / contract.TRANSFORMS_FILE).read_text())
    normalization = np.array(transforms["normalization"], np.float64)
    rig = LightRig.from_json(transforms["light_rig"])
    metrics_path = work / "reconstruction" / "metrics.json"
    if not metrics_path.is_file():
        recon = contract.ReconstructSettings(steps=args.fit_steps)
        metrics = fit_field(load_capture(work / "capture"), recon, work / "reconstruction", device=device, seed=0,
                            reporter=StageReporter.silent("reconstruct"))
        metrics_path.write_text(json.dumps(metrics))
    metrics = json.loads(metrics_path.read_text())
    log(f"fitted: {metrics}")
    field = load_field(work / "reconstruction" / "field", device=device)
    settings = contract.ExportSettings(grid_resolution=args.grid, face_budget=args.faces, texture_size=args.texture)
    report, outs = {"heldout_psnr_db": metrics["heldout_psnr_db"]}, {}
    for variant, bake in (("delit", BakeSettings(delight=True)), ("lit", BakeSettings(delight=False))):
        timing, outs[variant] = run_export(field, settings, np.linalg.inv(normalization), args.runs, device,
                                           light_rig=rig, bake=bake, out=work / f"export_{variant}")
        if variant == "delit":
            report.update(timing)
        log(f"exported ({variant})")

    src_v, src_f = mesh_arrays(obj)
    mesh = read_glb((outs["delit"] / "mesh.glb").read_bytes())
    report["chamfer_rel"], report["normal_consistency"] = chamfer_and_normals(
        mesh.positions.astype(np.float64), mesh.faces, src_v, src_f, args.samples, np.random.default_rng(0))
    log("measured the geometry")
    names = [Path(f["file_path"]).stem for f in transforms["frames"] if f["split"] == "eval"]
    for variant, out in outs.items():
        rendered, mismatch = render_imported(out, obj, capture, normalization, work / f"render_{variant}")
        whole, fore = image_psnr(work / "capture", rendered.parent, names)
        key = "" if variant == "delit" else "_lit"
        report[f"texture_psnr_db{key}"], report[f"texture_psnr_fg_db{key}"] = whole, fore
        report["import_frame_mismatch"] = mismatch
        log(f"rendered the import ({variant})")
    report["work_dir"] = str(work)
    return report


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def bench_field(args, device) -> dict:
    """Extract a saved field coarse-to-fine (and, with --compare-full, on the full grid); compare."""
    from scipy.spatial import cKDTree

    from backend.field.ngp_field import load_field

    field = load_field(args.field, device=device)
    report: dict = {}
    meshes = {}
    for name, block_cells in (("fast", 4), ("full", 0)) if args.compare_full else (("fast", 4),):
        times = []
        for _ in range(args.runs if name == "fast" else 1):
            t0 = time.perf_counter()
            meshes[name] = extract_mesh(field, ExtractSettings(grid_resolution=args.grid, block_cells=block_cells),
                                        device=device)
            times.append(time.perf_counter() - t0)
        report[f"{name}_s"] = statistics.median(times)
    fast = meshes["fast"]
    report["queried"] = fast.samples_queried
    report["query_fraction"] = fast.samples_queried / (np.prod(fast.grid_shape) + args.coarse ** 3)
    if "full" in meshes:
        full = meshes["full"]
        report["vertices_fast"], report["vertices_full"] = len(fast.vertices), len(full.vertices)
        vf, vg = signed_volume(fast.vertices, fast.faces), signed_volume(full.vertices, full.faces)
        report["volume_rel_diff"] = abs(vf - vg) / max(abs(vg), 1e-12)
        # vertex-to-vertex Chamfer (an upper bound of the surface one) over the full mesh's bbox diagonal
        d1 = cKDTree(full.vertices).query(fast.vertices)[0] if len(fast.vertices) else np.array([np.inf])
        d2 = cKDTree(fast.vertices).query(full.vertices)[0] if len(fast.vertices) else np.array([np.inf])
        diag = float(np.linalg.norm(full.vertices.max(0) - full.vertices.min(0)))
        report["chamfer_rel"] = 0.5 * (d1.mean() + d2.mean()) / diag
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--analytic", action="store_true", help="export an analytic torus instead of a fitted field")
    parser.add_argument("--grid", type=int, default=256)
    parser.add_argument("--faces", type=int, default=20000)
    parser.add_argument("--texture", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=None, help="export runs (median); default 3 analytic, 1 full")
    parser.add_argument("--samples", type=int, default=100_000, help="surface samples per Chamfer direction")
    parser.add_argument("--device", default="auto", choices=contract.DEVICES)
    parser.add_argument("--views", type=int, default=40, help="full mode: capture views")
    parser.add_argument("--capture-res", type=int, default=128, help="full mode: capture resolution")
    parser.add_argument("--eval-views", type=int, default=4, help="full mode: held-out views (texture PSNR)")
    parser.add_argument("--fit-steps", type=int, default=500, help="full mode: reconstruction steps")
    parser.add_argument("--work", default=None, help="full mode: working folder; reuses its capture and fit")
    parser.add_argument("--field", default=None, help="extract this saved field only (a job's reconstruction/field)")
    parser.add_argument("--compare-full", action="store_true", help="--field: also extract on the full grid, compare")
    args = parser.parse_args()
    args.coarse = ExtractSettings().coarse_resolution
    if args.runs is None:
        args.runs = 3 if args.analytic else 1
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.field:
        r = bench_field(args, device)
        print(f"export_extract_seconds_{args.grid}: {r['fast_s']:.3f}")
        print(f"export_extract_samples_queried: {r['queried']}")
        print(f"export_extract_query_fraction: {r['query_fraction']:.4f}")
        if "full_s" in r:
            print(f"export_extract_full_seconds_{args.grid}: {r['full_s']:.3f}")
            print(f"extract_vertices_fast: {r['vertices_fast']}")
            print(f"extract_vertices_full: {r['vertices_full']}")
            print(f"extract_volume_rel_diff: {r['volume_rel_diff']:.2e}")
            print(f"extract_chamfer_rel: {r['chamfer_rel']:.2e}")
        return
    report = bench_analytic(args, device) if args.analytic else bench_full(args, device)
    for step in STEPS:
        faces = report["faces"].get(step)
        suffix = f"  ({faces} faces)" if faces is not None else ""
        print(f"{step}_seconds: {report['timings_s'][step]:.3f}{suffix}")
    for key in ("extract", "cleanup", "decimate", "unwrap"):
        print(f"faces_after_{key}: {report['faces'][key]}")
    if "heldout_psnr_db" in report:
        print(f"heldout_psnr_db: {report['heldout_psnr_db']:.2f}")
    if "normal_consistency" in report:
        print(f"normal_consistency: {report['normal_consistency']:.4f}")
        print(f"texture_psnr_fg_db: {report['texture_psnr_fg_db']:.2f}")
        print(f"texture_psnr_lit_db: {report['texture_psnr_db_lit']:.2f}")
        print(f"texture_psnr_lit_fg_db: {report['texture_psnr_fg_db_lit']:.2f}")
        print(f"import_frame_mismatch: {report['import_frame_mismatch']:.2e}")
        print(f"work_dir: {report['work_dir']}")
    print(f"chamfer_rel: {report['chamfer_rel']:.6f}")
    print(f"texture_psnr_db: {report['texture_psnr_db']:.2f}")
    print(f"export_seconds: {report['total_s']:.3f}")
    print(f"export_extract_seconds_{args.grid}: {report['timings_s']['extract']:.3f}")


if __name__ == "__main__":
    main()
