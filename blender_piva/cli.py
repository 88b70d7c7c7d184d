"""Headless command: the same add-on code as the panel, driven through bpy (Blender as a module).

    python -m blender_piva.cli edit SCENE.blend --object NAME --source "..." --target "..." [--save OUT.blend]
    python -m blender_piva.cli variants SCENE.blend --object NAME --source "..." --target "..." --target "..." [--seeds 0,1]
    python -m blender_piva.cli batch SCENE.blend (--collection NAME | --objects A,B) --source "a {name}" --target "..."
    python -m blender_piva.cli resume QUEUE.json [--blend SCENE.blend] [--retry-failed]
    python -m blender_piva.cli demo [--out DIR]     builds a scene with a red cube and edits it

Variants share one capture and one fit; a batch item that fails is reported and the batch goes
on; an interrupted queue resumes with ``resume``. Progress goes to the terminal, one bar per stage
(``core/terminal.py``); Blender's own output (Cycles' per-view lines) goes to ``JOB/capture.log``
(``core/quiet.py``); the last line names the result (or, on failure, the logs). The exit code is
0 on success, 1 on failure (of any item), 3 when cancelled.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import contract
from .contract.layout import MEMORY_MODES

if TYPE_CHECKING:
    from .core.backend_process import BackendConfig
    from .core.request import EditRequest
    from .scene.edit_job import EditJob


def _integer(low: int, high: int, what: str, note: str = ""):
    """An argparse type: a whole number in [low, high] (the message names the range)."""
    allowed = f"{what} are {low}..{high}{note}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ({allowed})") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({allowed})")
        return value

    return parse


def _number(low: float, high: float, what: str):
    """An argparse type: a finite number in [low, high]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number ({what} is {low}..{high})") from None
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text} is out of range ({what} is {low}..{high})")
        return value

    return parse


MAX_SEED = 2**31 - 1
_seed = _integer(0, MAX_SEED, "seeds")


def _seed_list(text: str) -> list[int]:
    """``--seeds 0,1,2`` -> [0, 1, 2]; each must be a seed."""
    return [_seed(part.strip()) for part in text.split(",") if part.strip()]


FLAG_SETTINGS = {"edit.method": ("--method", "method"), "edit.steps": ("--steps", "steps"),
                 "edit.lambda_identity": ("--lambda", "lambda_identity")}
"""Settings a flag of the command line sets (flag, its argument): ``--set`` may not set one the flag
sets too, since the flag would win unseen. ``--method`` always sets its setting (it has a default);
``--steps`` and ``--lambda`` only when given."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``PIVA: ...``) instead of the usage text."""

    def error(self, message: str):
        self.exit(2, f"PIVA: {self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    from .core import presets

    parser = _Parser(prog="python -m blender_piva.cli", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--method", default="piva", choices=contract.METHODS, help="editing loss (default piva)")
        p.add_argument("--steps", type=_integer(0, 10_000_000, "edit steps", ", 0 = the preset's"), default=None,
                       help="edit steps (default: the preset's)")
        p.add_argument("--seed", type=_seed, default=0)
        p.add_argument("--lambda", dest="lambda_identity", type=_number(0.0, 100.0, "PIVA's lambda"), default=None,
                       help="PIVA's lambda")
        p.add_argument("--preset", default="preview", choices=sorted(presets.PRESETS), help="quality preset")
        p.add_argument("--model", default="toy", help="model id, folder, or 'toy' (default)")
        p.add_argument("--controlnet", default="", help="depth ControlNet id or folder")
        p.add_argument("--device", default="auto", choices=contract.DEVICES)
        p.add_argument("--negative", dest="negative_prompt", default="", metavar="TEXT",
                       help="negative prompt: what the edit should steer away from (default: none)")
        p.add_argument("--memory", default="balanced", choices=MEMORY_MODES,
                       help="GPU memory mode: fast, balanced (default) or low (slower, less memory)")
        p.add_argument("--field", default="rgb", choices=contract.FIELDS,
                       help="rgb (default): fit colours, the VAE encodes every edit render; latent: fit the model's "
                       "latents (ED-NeRF), no VAE in the edit loop, faster steps")
        p.add_argument("--jobs", default="", help="folder for job folders (default: a temporary folder)")
        p.add_argument("--job-dir", default="", help="resume this job folder")
        p.add_argument(
            "--stages", default=",".join(contract.STAGES), help="backend stages, comma-separated ('' = validate only)"
        )
        p.add_argument("--python", default="", help="backend Python (default: this one)")
        p.add_argument("--set", action="append", default=[], metavar="BLOCK.KEY=JSON",
                       help="override a setting, e.g. --set capture.resolution=64 (repeatable)")
        p.add_argument("--no-cache", dest="use_cache", action="store_false",
                       help="capture and fit again instead of reusing the object's cached capture and fit")

    edit = sub.add_parser("edit", help="edit an object of a .blend file")
    edit.add_argument("blend", type=Path, help="the .blend file (it is not modified; see --save)")
    edit.add_argument("--object", required=True, help="name of the mesh object to edit")
    edit.add_argument("--source", required=True, help="what the object is now")
    edit.add_argument("--target", required=True, help="what it should become")
    edit.add_argument("--save", type=Path, default=None, help="save the scene with the result to this .blend")
    common(edit)

    variants = sub.add_parser("variants", help="several target prompts and/or seeds for one object, side by side")
    variants.add_argument("blend", type=Path, help="the .blend file (it is not modified; see --save)")
    variants.add_argument("--object", required=True, help="name of the mesh object to edit")
    variants.add_argument("--source", required=True, help="what the object is now")
    variants.add_argument("--target", required=True, action="append", help="a target prompt (repeatable)")
    variants.add_argument("--seeds", type=_seed_list, default=[],
                          help="comma-separated seeds, each with every target (default: --seed)")
    variants.add_argument("--save", type=Path, default=None, help="save the scene with the results to this .blend")
    common(variants)

    batch = sub.add_parser("batch", help="edit every mesh of a collection (or the named objects)")
    batch.add_argument("blend", type=Path, help="the .blend file (it is not modified; see --save)")
    which = batch.add_mutually_exclusive_group(required=True)
    which.add_argument("--collection", help="every mesh of this collection (child collections included)")
    which.add_argument("--objects", help="comma-separated object names")
    batch.add_argument("--source", required=True, help="what each object is now; '{name}' = the object's name")
    batch.add_argument("--target", required=True, help="what each should become; '{name}' = the object's name")
    batch.add_argument("--save", type=Path, default=None, help="save the scene with the results to this .blend")
    common(batch)

    resume = sub.add_parser("resume", help="resume an interrupted variants or batch queue")
    resume.add_argument("queue", type=Path, help="the queue.json (or its folder) under JOBS/batches/")
    resume.add_argument("--blend", type=Path, default=None, help="the .blend to open (default: the queue's own)")
    resume.add_argument("--retry-failed", action="store_true", help="run failed items again too")
    resume.add_argument("--save", type=Path, default=None, help="save the scene with the results to this .blend")
    resume.add_argument("--python", default="", help="backend Python (default: this one)")

    for p in (variants, batch, resume):
        p.add_argument(
            "--executor", default="worker", choices=("worker", "process", "workers", "ray"),
            help="where the items run: worker (default) one long-lived worker, the model loaded once; process: a "
            "backend process per item; workers: one worker per GPU of this machine; ray: one actor per GPU of a Ray "
            "cluster (every item is captured first, then all run at once)",
        )
        p.add_argument("--address", default="", help="with --executor ray: the cluster, HEAD:6379 (default: a local one)")

    demo = sub.add_parser("demo", help="build a scene with a red cube and edit it to a blue one")
    demo.add_argument("--out", type=Path, default=Path("out/demo"), help="where the .blend and renders go")
    demo.add_argument("--source", default="a red cube")
    demo.add_argument("--target", default="a blue cube")
    common(demo)
    return parser


DEMO_TOY_OVERRIDES = [
    "edit.render_resolution=64",
    "export.iso_density=16",
]
"""The demo's settings with the embedded toy model (its VAE takes 64x64 images, 16x16x4 latents);
goal: minutes on a CPU. The iso-density is lowered because PIVA's edit on this model thins the
cube's density below the automatic iso (88.7) while its renders stay opaque (an open problem of
the PIVA issue, docs/RESULTS.md); at 16 a 1/256-of-the-box segment is 12% opaque."""
DEMO_TOY_STEPS = 150
"""The demo's edit steps with the toy model (given as --steps: --set may not set what a flag sets)."""


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
    if material.node_tree is None:  # Blender < 5 creates materials without nodes (5.0 deprecates use_nodes)
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


def request_from_args(args: argparse.Namespace, object_name: str) -> "EditRequest":
    """The request the command line describes (``--set`` overrides parsed by core/overrides.py)."""
    from .core.overrides import OverrideError, parse_overrides
    from .core.request import make_request
    from .scene.edit_job import default_job_root

    try:
        overrides = parse_overrides(args.set)
    except OverrideError as exc:
        raise SystemExit(f"PIVA: {exc}") from None
    return make_request(
        object_name,
        args.source,
        args.target if isinstance(args.target, str) else args.target[0],
        args,
        model=contract.ModelSettings(model=args.model, controlnet=args.controlnet),
        device=args.device,
        job_root=args.jobs or str(default_job_root()),
        job_dir=getattr(args, "job_dir", ""),
        stages=[s for s in args.stages.split(",") if s],
        overrides=overrides,
    )


def backend_config(args: argparse.Namespace) -> "BackendConfig":
    import bpy

    from .core.backend_process import BackendConfig, python_of_this_process

    repo = Path(__file__).resolve().parent.parent
    return BackendConfig(
        python=args.python or python_of_this_process(), backend_root=str(repo),
        online_access=bpy.app.online_access,  # what Blender reports; off = hub models refused, backend offline
    )


def _register() -> None:
    import bpy

    from . import register

    if not hasattr(bpy.types.Scene, "piva"):
        register()


def run_edit(args: argparse.Namespace, object_name: str) -> tuple[int, "EditJob", "object | None"]:
    """Run one edit with a progress bar per stage; returns (exit code, the job, the imported object).

    Blender's own output during the capture goes to ``JOB/capture.log``. On failure the last
    lines say what went wrong, how to fix it and where the logs are."""
    from .core import quiet
    from .core.request import EditFailed
    from .core.terminal import TerminalProgress
    from .scene.edit_job import EditJob

    _register()
    job = EditJob(request_from_args(args, object_name), backend_config(args))
    progress = TerminalProgress()
    try:
        with quiet.log_blender_output(lambda: _capture_log(job)):
            result = job.run_sync(on_event=progress.on_event, on_capture=progress.on_capture, on_interrupt=_say)
    except EditFailed as exc:
        progress.close()
        print(f"PIVA: {exc.status}: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"PIVA: how to fix: {exc.hint}", file=sys.stderr)
        if job.spec is not None:
            print(f"PIVA: job folder: {job.spec.job_dir}", file=sys.stderr)
            if exc.status == "cancelled" and (job.spec.job_dir / contract.JOB_FILE).is_file():
                print(f"PIVA: resume with: {resume_command(args, job.spec.job_dir)}", file=sys.stderr)
            logs = _logs_of(job.spec.job_dir)
            if logs:
                print(f"PIVA: the logs: {', '.join(map(str, logs))}", file=sys.stderr)
        return (3 if exc.status == "cancelled" else 1), job, None
    finally:
        progress.close()
    print(f"PIVA: job folder: {job.spec.job_dir}")
    if any(job.cache_hit.values()):
        reused = " and ".join(k for k, hit in job.cache_hit.items() if hit)
        print(f"PIVA: reused the cached {reused} of {object_name!r}")
    if result is not None:
        print(f"PIVA: created object {result.name!r} in collection {result.users_collection[0].name!r}")
    return 0, job, result


def _capture_log(job) -> Path | None:
    """Where Blender's output during ``job``'s capture goes: JOB/capture.log (None before the job folder exists)."""
    if job.spec is None or not job.spec.job_dir.is_dir():
        return None
    return job.spec.job_dir / contract.layout.CAPTURE_LOG_FILE


def _logs_of(job_dir: Path) -> list[Path]:
    """The job folder's logs that exist: the backend's and Blender's (the capture's)."""
    names = (contract.LOG_FILE, contract.layout.CAPTURE_LOG_FILE)
    return [job_dir / name for name in names if (job_dir / name).is_file()]


def report_of(job_dir: Path) -> Path | None:
    """The job's HTML report (``results/report.html``) when it exists."""
    report = job_dir / contract.RESULTS_DIR / contract.layout.REPORT_FILE
    return report if report.is_file() else None


def result_line(job, result, saved: Path | None) -> str:
    """The command's last line: what was made and where it is (the .blend, the mesh, the job folder)."""
    spec = job.spec
    mesh = ""
    try:
        manifest = contract.load_manifest(spec.results_path)
    except contract.ContractError:
        manifest = None
    if manifest is not None and "mesh" in manifest.files:
        mesh = str(spec.results_path / manifest.files["mesh"])
    if result is None:
        return f"PIVA: result: no mesh exported (stages: {', '.join(spec.stages) or 'none'}); job folder {spec.job_dir}"
    faces = len(result.data.polygons) if getattr(result, "data", None) is not None else 0
    where = f"in {saved}" if saved is not None else "not saved in a .blend (add --save OUT.blend to keep it)"
    mesh = f", mesh {mesh}" if mesh else ""
    return f"PIVA: result: {result.name!r} ({faces} faces{mesh}) {where}; job folder {spec.job_dir}"


def _say(line: str) -> None:
    print(f"\nPIVA: {line}", file=sys.stderr, flush=True)


def resume_command(args: argparse.Namespace, job_dir: Path) -> str:
    """The command line that runs this edit again on ``job_dir`` (it resumes from its checkpoints)."""
    import shlex

    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--job-dir":
            skip = True
        elif not arg.startswith("--job-dir="):
            kept.append(arg)
    return shlex.join([sys.executable, "-m", "blender_piva.cli", *kept, "--job-dir", str(job_dir)])


def run_queue(queue, args: argparse.Namespace) -> int:
    """Run a variants or batch queue with a progress bar per stage of each item and a summary table.

    Blender's output during an item's capture goes to that item's ``JOB/capture.log``."""
    from .core import quiet
    from .core.terminal import TerminalProgress
    from .scene.queue_runner import QueueRunner

    _register()
    print(f"PIVA: queue {queue.path}")
    progress = TerminalProgress()
    current: list[Path] = []

    def on_item(index: int, total: int, item) -> None:
        progress.close()
        current[:] = [Path(item.job_dir)] if item.job_dir else []
        progress.write(f"=== item {index + 1}/{total}: {item.label}")

    def capture_log() -> Path | None:
        return current[0] / contract.layout.CAPTURE_LOG_FILE if current and current[0].is_dir() else None

    try:
        with quiet.log_blender_output(capture_log):
            runner = QueueRunner(queue, backend_config(args), executor=args.executor, address=args.address)
            runner.run_sync(on_event=progress.on_event, on_item=on_item, on_interrupt=_say, on_capture=progress.on_capture)
    finally:
        progress.close()
        from .core.worker_client import release_all

        release_all()  # the queue's worker ends with it (the model's memory back)
    print("\nPIVA: results")
    for item in queue.items:
        cached = "cached capture+fit" if all(item.cache_hit.values()) and item.cache_hit else ""
        outcome = item.result_object if item.status == "done" else f"{item.message} ({item.hint})" if item.hint else item.message
        print(f"  [{item.status:<9}] {item.label:<50} {item.seconds:7.1f} s  {cached:<18} {outcome}")
    print(f"PIVA: log {queue.log_path}")
    if runner.contact_sheet is not None:  # variants: the source and every result from the same cameras
        print(f"PIVA: contact sheet {runner.contact_sheet}")
    elif runner.contact_sheet_problem is not None:
        print(f"PIVA: {runner.contact_sheet_problem}", file=sys.stderr)
    for item in queue.items:
        report = report_of(Path(item.job_dir)) if item.job_dir else None
        if report is not None:
            print(f"PIVA: report of {item.label}: {report}")
    counts = queue.counts()
    if counts["cancelled"] or counts["pending"]:
        print(f"PIVA: resume with: python -m blender_piva.cli resume {queue.path}")
        return 3
    return 1 if counts["failed"] else 0


def _open_blend(path: Path) -> bool:
    import os

    import bpy

    from .core.quiet import redirect_fds_to

    if not path.is_file():
        print(f"PIVA: {path} does not exist", file=sys.stderr)
        return False
    try:
        with redirect_fds_to(os.devnull):  # Blender's "Read blend: ..." (its errors come back in the exception)
            bpy.ops.wm.open_mainfile(filepath=str(path.resolve()))
    except RuntimeError as exc:  # Blender's own reason: "Missing DNA block", "File format is not supported"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        reason = reason.rsplit("': ", 1)[-1].removeprefix("Error: ")  # "...failed: ... '/x.blend': Missing DNA block"
        print(
            f"PIVA: cannot open {path}: it is not a readable .blend file ({reason}); if it is truncated or damaged, "
            f"restore a backup (Blender keeps the previous save as {path.name}1 beside it)",
            file=sys.stderr,
        )
        return False
    return True


def save_problem(path: Path | None) -> str | None:
    """Why ``--save PATH`` could not be written, checked before any work; None when it can.

    Missing folders are created for the probe and removed again."""
    import os
    import tempfile

    if path is None:
        return None
    if path.is_dir():
        return f"--save {path} is a folder: give the .blend file to write, e.g. --save {path / 'edited.blend'}"
    if path.suffix.lower() != ".blend":
        return f"--save {path}: the file name must end in .blend, e.g. --save {path.with_suffix('.blend')}"
    folder = path.absolute().parent
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    if not folder.is_dir():
        return f"--save {path}: {folder} is a file, not a folder; choose another place for the .blend"
    created: list[Path] = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        fd, probe = tempfile.mkstemp(prefix=".piva-save-probe-", dir=path.absolute().parent)
        os.close(fd)
        os.unlink(probe)
        if path.exists() and not os.access(path, os.W_OK):
            return f"--save {path}: the file exists and is read-only; choose another name or make it writable"
    except OSError as exc:
        return f"--save {path}: cannot write there ({exc.strerror or exc}); choose a folder you can write to"
    finally:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                pass
    return None


def _save(path: Path | None) -> Path | None:
    """Save a copy of the scene to ``path`` (when given); returns the file written."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _save_copy(path.resolve())
        print(f"PIVA: saved {path}")
        return path.resolve()
    return None


def _save_copy(path: Path) -> None:
    """``save_as_mainfile(copy=True)`` without Blender's "Info: Saved copy as ..." on the terminal."""
    import os

    import bpy

    from .core.quiet import redirect_fds_to

    with redirect_fds_to(os.devnull, fds=(1,)):  # stdout only: a failure's reason stays on stderr
        bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True)


def _missing_objects(names: list[str], blend: Path) -> bool:
    import bpy

    missing = [n for n in names if bpy.data.objects.get(n) is None]
    if missing:
        meshes = ", ".join(o.name for o in bpy.data.objects if o.type == "MESH") or "none"
        print(f"PIVA: no object named {', '.join(map(repr, missing))} in {blend} (mesh objects: {meshes})", file=sys.stderr)
    return bool(missing)


def cmd_edit(args: argparse.Namespace) -> int:
    if not _open_blend(args.blend) or _missing_objects([args.object], args.blend):
        return 1
    code, job, result = run_edit(args, args.object)
    if code == 0:
        saved = _save(args.save)
        report = report_of(job.spec.job_dir)
        if report is not None:
            print(f"PIVA: report: {report}")
        print(result_line(job, result, saved))
    return code


def _variants_or_batch_queue(args: argparse.Namespace):
    """The queue ``variants`` or ``batch`` describes; None (after saying why) when it cannot be made."""
    import bpy

    from .scene.queue_runner import batch_objects, batch_queue, variants_queue

    if args.command == "variants":
        if _missing_objects([args.object], args.blend):
            return None
        request = request_from_args(args, args.object)
        return variants_queue(request, args.target, args.seeds, request.job_root)
    if args.collection:
        collection = bpy.data.collections.get(args.collection)
        if collection is None:
            names = ", ".join(c.name for c in bpy.data.collections) or "none"
            print(f"PIVA: no collection named {args.collection!r} in {args.blend} (collections: {names})", file=sys.stderr)
            return None
        objects = batch_objects("COLLECTION", collection)
    else:
        objects = [n.strip() for n in args.objects.split(",") if n.strip()]
    request = request_from_args(args, objects[0] if objects else "")
    return batch_queue(request, objects, request.job_root)


def cmd_queue(args: argparse.Namespace) -> int:
    """``variants`` and ``batch``."""
    from .core.request import EditFailed

    if not _open_blend(args.blend):
        return 1
    _register()
    try:
        queue = _variants_or_batch_queue(args)
    except EditFailed as exc:
        print(f"PIVA: {exc}", file=sys.stderr)
        return 1
    if queue is None:
        return 1
    code = run_queue(queue, args)
    saved = _save(args.save)
    print(queue_result_line(queue, saved))
    return code


def queue_result_line(queue, saved: Path | None) -> str:
    """A queue's last line: how many items made a result, and where the results are."""
    counts = queue.counts()
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    where = f"in {saved}" if saved is not None else "not saved in a .blend (add --save OUT.blend to keep them)"
    return f"PIVA: results: {summary or 'no items'}, {where}; job folders under {queue.folder}, log {queue.log_path}"


def cmd_resume(args: argparse.Namespace) -> int:
    from .core.queue import load_queue

    try:
        queue = load_queue(args.queue)
    except contract.ContractError as exc:
        print(f"PIVA: cannot resume: {exc}", file=sys.stderr)
        return 1
    blend = args.blend or (Path(queue.blend_file) if queue.blend_file else None)
    if blend is None:
        print("PIVA: the queue was made from an unsaved scene: pass --blend SCENE.blend", file=sys.stderr)
        return 1
    if not _open_blend(blend):
        return 1
    if queue.prepare_resume(retry_failed=args.retry_failed) == 0:
        print("PIVA: nothing left to run in this queue (--retry-failed runs the failed items again)")
        return 0
    queue.save()
    code = run_queue(queue, args)
    saved = _save(args.save)
    print(queue_result_line(queue, saved))
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    import bpy

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.jobs:
        args.jobs = str(out / "jobs")
    if args.model == "toy":
        # The embedded model sees 64x64 images: edit renders at its native size.
        args.set = [*DEMO_TOY_OVERRIDES, *args.set]
        args.steps = args.steps or DEMO_TOY_STEPS
    import time

    from .core import quiet

    started = time.time()
    obj = build_demo_scene()
    code, job, _ = run_edit(args, obj.name)
    edited = time.time()
    if code != 0:
        return code
    blend = out / "demo.blend"
    _save_copy(blend)
    print(f"PIVA: saved {blend}")
    result = [o for o in bpy.data.objects if o.get("piva_job_id")]
    image = None
    if result:
        from .scene.compare import before_after

        with quiet.log_blender_output(lambda: _capture_log(job)):  # the comparison's renders: Cycles again
            image = before_after(obj, result[-1], out / "before_after.png")
            print(f"PIVA: before (top) and after (bottom) renders: {image}")
            if args.model == "toy":
                code = judge_demo(args, obj, result[-1], out / "judge")
    report = report_of(job.spec.job_dir)
    if report is not None:
        print(f"PIVA: report: {report}")
    print_stage_seconds(job.spec.job_dir, started, edited, time.time())
    renders = f", before/after renders in {image}" if image is not None else ""
    print(f"{result_line(job, result[-1] if result else None, blend)}{renders}")
    return code


def print_stage_seconds(job_dir: Path, started: float, edited: float, ended: float) -> None:
    """``demo_seconds_STAGE`` for the scene and capture, each backend stage (from this run's
    events), the import, the judging renders, and ``demo_seconds_total``."""
    events = [e for e in contract.EventReader(job_dir / contract.EVENTS_FILE).poll() if e.time >= started]
    marks = [(e.stage, e.time) for e in events if e.type == "stage"]
    ends = [e.time for e in events if e.type in ("finished", "cancelled", "error")]
    backend_end = ends[-1] if ends else edited
    first = events[0].time if events else edited
    print(f"demo_seconds_scene_and_capture: {first - started:.1f}")  # includes the backend's start
    for (stage, at), (_, until) in zip(marks, [*marks[1:], ("", backend_end)]):
        print(f"demo_seconds_{stage}: {until - at:.1f}")
    print(f"demo_seconds_import: {edited - backend_end:.1f}")
    print(f"demo_seconds_judge: {ended - edited:.1f}")
    print(f"demo_seconds_total: {ended - started:.1f}")


def judge_demo(args: argparse.Namespace, source, result, folder: Path) -> int:
    """The toy oracle's verdict on the result's held-out views: ``demo_oracle_agree`` (fraction seen
    as the target) and ``demo_speckle_ratio`` (roughness over the source's), via the backend."""
    import json
    import subprocess

    from .core.backend_process import backend_env
    from .scene.compare import save_judged_views

    words = args.target.split()
    if len(words) != 3 or words[0] not in ("a", "an"):
        print(f"PIVA: not judged: the toy oracle reads targets like 'a blue cube', not {args.target!r}")
        return 0
    save_judged_views(source, folder / "source")
    save_judged_views(result, folder / "result")
    config = backend_config(args)
    run = subprocess.run(
        [config.resolved_python(), "-m", "backend", "judge", str(folder / "result"), str(folder / "source"),
         "--color", words[1], "--shape", words[2], "--json"],
        env=backend_env(config), capture_output=True, text=True, check=False,
    )
    if run.returncode != 0:
        print(f"PIVA: the oracle could not judge the result: {run.stderr.strip() or run.stdout.strip()}", file=sys.stderr)
        return 1
    verdict = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"demo_oracle_agree: {verdict['agree']:.2f}")
    print(f"demo_speckle_ratio: {verdict['speckle_ratio']:.2f}")
    print(f"PIVA: the oracle saw: {', '.join(verdict['seen'])} (views in {folder})")
    return 0


COMMANDS = {"edit": cmd_edit, "variants": cmd_queue, "batch": cmd_queue, "resume": cmd_resume, "demo": cmd_demo}
"""Sub-command -> its function (each returns the exit code)."""


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line that argparse cannot see, before any work; None if nothing."""
    from .core.overrides import OverrideError, parse_overrides

    problem = save_problem(getattr(args, "save", None))
    if problem is not None:
        return problem
    try:
        overrides = parse_overrides(getattr(args, "set", []))
    except OverrideError as exc:
        return str(exc)
    for dotted, (flag, dest) in FLAG_SETTINGS.items():
        block, key = dotted.split(".")
        given = getattr(args, dest, None)
        if dest == "steps":
            given = given or None  # --steps 0 means the preset's: it sets nothing
        if key in overrides.get(block, {}) and given is not None:
            return f"--set {dotted} conflicts with {flag}: use {flag} instead"
    return None


def main(argv: list[str] | None = None) -> int:
    from .contract import disk

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    problem = check_args(args)
    if problem is not None:
        print(f"PIVA: {problem}", file=sys.stderr)
        return 1
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\nPIVA: interrupted (Ctrl+C); run the same command again to continue", file=sys.stderr)
        return 3
    except OSError as exc:
        if not disk.is_disk_full(exc):
            raise
        where = exc.filename or getattr(args, "jobs", "") or "the job folder"
        free = disk.free_bytes(Path(exc.filename).parent) if exc.filename else None
        left = f", {disk.size_text(free)} free" if free is not None else ""
        print(
            f"PIVA: the disk is full: cannot write {where}{left}; free space on that disk or choose a job folder on "
            "a larger disk (--jobs), then run the same command again",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
