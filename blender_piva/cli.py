"""Headless command: the same add-on code as the panel, driven through bpy (Blender as a module).

    python -m blender_piva.cli edit SCENE.blend --object NAME --source "..." --target "..." [--save OUT.blend]
    python -m blender_piva.cli demo [--out DIR]     builds a scene with a red cube and edits it

Progress goes to the terminal; the exit code is 0 on success, 1 on failure, 3 when cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from . import contract, presets

    parser = argparse.ArgumentParser(prog="python -m blender_piva.cli", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--method", default="piva", choices=contract.METHODS, help="editing loss (default piva)")
        p.add_argument("--steps", type=int, default=None, help="edit steps (default: the preset's)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--lambda", dest="lambda_identity", type=float, default=None, help="PIVA's lambda")
        p.add_argument("--preset", default="preview", choices=sorted(presets.PRESETS), help="quality preset")
        p.add_argument("--model", default="toy", help="model id, folder, or 'toy' (default)")
        p.add_argument("--controlnet", default="", help="depth ControlNet id or folder")
        p.add_argument("--device", default="auto", choices=contract.DEVICES)
        p.add_argument("--jobs", default="", help="folder for job folders (default: a temporary folder)")
        p.add_argument("--job-dir", default="", help="resume this job folder")
        p.add_argument(
            "--stages", default=",".join(contract.STAGES), help="backend stages, comma-separated ('' = validate only)"
        )
        p.add_argument("--python", default="", help="backend Python (default: this one)")
        p.add_argument("--set", action="append", default=[], metavar="BLOCK.KEY=JSON",
                       help="override a setting, e.g. --set capture.resolution=64 (repeatable)")

    edit = sub.add_parser("edit", help="edit an object of a .blend file")
    edit.add_argument("blend", type=Path, help="the .blend file (it is not modified; see --save)")
    edit.add_argument("--object", required=True, help="name of the mesh object to edit")
    edit.add_argument("--source", required=True, help="what the object is now")
    edit.add_argument("--target", required=True, help="what it should become")
    edit.add_argument("--save", type=Path, default=None, help="save the scene with the result to this .blend")
    common(edit)

    demo = sub.add_parser("demo", help="build a scene with a red cube and edit it to a blue one")
    demo.add_argument("--out", type=Path, default=Path("out/demo"), help="where the .blend and renders go")
    demo.add_argument("--source", default="a red cube")
    demo.add_argument("--target", default="a blue cube")
    common(demo)
    return parser


DEMO_TOY_OVERRIDES = [
    "edit.render_resolution=32",
    "edit.steps=150",
]
"""The demo's settings with the embedded toy model (its images are 32x32); goal: minutes on a CPU."""


def parse_overrides(items: list[str]) -> dict:
    overrides: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        block, dot, name = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set {item!r}: expected BLOCK.KEY=VALUE, e.g. capture.resolution=64")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        overrides.setdefault(block, {})[name] = parsed
    return overrides


def build_demo_scene(source_color=(0.8, 0.05, 0.05)) -> "object":
    """An empty scene with one red cube, the product's demo (and the toy world's first object)."""
    import bmesh
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    mesh = bpy.data.meshes.new("Cube")
    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=1.0)
    bm.to_mesh(mesh)
    bm.free()
    material = bpy.data.materials.new("Red")
    material.use_nodes = True
    bsdf = material.node_tree.nodes.get("Principled BSDF")
    bsdf.inputs["Base Color"].default_value = (*source_color, 1.0)
    bsdf.inputs["Roughness"].default_value = 0.8
    mesh.materials.append(material)
    obj = bpy.data.objects.new("Cube", mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    return obj


def run_edit(args: argparse.Namespace, object_name: str) -> int:
    import bpy

    import blender_piva
    from blender_piva import contract, operators
    from blender_piva.backend_process import BackendConfig, python_of_this_process
    from blender_piva.pipeline import EditFailed, EditJob, EditRequest

    if not hasattr(bpy.types.Scene, "piva"):
        blender_piva.register()
    stages = [s for s in args.stages.split(",") if s]
    request = EditRequest(
        object_name=object_name,
        source_prompt=args.source,
        target_prompt=args.target,
        method=args.method,
        steps=args.steps,
        seed=args.seed,
        lambda_identity=args.lambda_identity,
        preset=args.preset,
        job_root=args.jobs,
        job_dir=args.job_dir,
        model=contract.ModelSettings(model=args.model, controlnet=args.controlnet),
        device=args.device,
        stages=stages,
        overrides=parse_overrides(args.set),
    )
    repo = Path(__file__).resolve().parent.parent
    config = BackendConfig(python=args.python or python_of_this_process(), backend_root=str(repo))
    job = EditJob(request, config)

    def on_capture(done: int, total: int) -> None:
        sys.stdout.write(f"\r[capture    ] {done}/{total} views")
        sys.stdout.write("\n" if done >= total else "")
        sys.stdout.flush()

    try:
        result = job.run_sync(on_event=operators.print_event, on_capture=on_capture)
    except EditFailed as exc:
        print(f"\nPIVA: {exc.status}: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"PIVA: how to fix: {exc.hint}", file=sys.stderr)
        if job.spec is not None:
            print(f"PIVA: job folder: {job.spec.job_dir}", file=sys.stderr)
        return 3 if exc.status == "cancelled" else 1
    print(f"PIVA: job folder: {job.spec.job_dir}")
    if result is not None:
        print(f"PIVA: created object {result.name!r} in collection {result.users_collection[0].name!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import bpy

    if args.command == "edit":
        if not args.blend.is_file():
            print(f"PIVA: {args.blend} does not exist", file=sys.stderr)
            return 1
        bpy.ops.wm.open_mainfile(filepath=str(args.blend.resolve()))
        if bpy.data.objects.get(args.object) is None:
            names = ", ".join(o.name for o in bpy.data.objects if o.type == "MESH") or "none"
            print(f"PIVA: no object named {args.object!r} in {args.blend} (mesh objects: {names})", file=sys.stderr)
            return 1
        code = run_edit(args, args.object)
        if code == 0 and args.save is not None:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            bpy.ops.wm.save_as_mainfile(filepath=str(args.save.resolve()), copy=True)
            print(f"PIVA: saved {args.save}")
        return code
    # demo
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.jobs:
        args.jobs = str(out / "jobs")
    if args.model == "toy":
        # The embedded model sees 32x32 images: edit renders at its native size.
        args.set = [*DEMO_TOY_OVERRIDES, *args.set]
    obj = build_demo_scene()
    code = run_edit(args, obj.name)
    if code != 0:
        return code
    blend = out / "demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    print(f"PIVA: saved {blend}")
    result = [o for o in bpy.data.objects if o.get("piva_job_id")]
    if result:
        from blender_piva.compare import before_after

        image = before_after(obj, result[-1], out / "before_after.png")
        print(f"PIVA: before (top) and after (bottom) renders: {image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
