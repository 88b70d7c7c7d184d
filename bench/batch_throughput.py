"""Batch throughput of the executors, and how long the panel's capture blocks Blender's UI.

    .venv/bin/python bench/batch_throughput.py [--items 3] [--work DIR]

The same batch (the embedded toy model, a synthetic sphere capture per item, small settings: a
short fit, a short DDS edit at 32 px, a 48^3 export) runs three ways, one after another in this run:
a new ``python -m backend run`` process per item (as before the worker), one long-lived worker
(``python -m backend serve``: the model loads once), and a local Ray cluster with two actors
(``ray.init(num_cpus=2)``: on a 2-core machine both actors share the cores the other executors use
alone, so its gain here is the overlap of the two items' model loads and Python overheads, not
more compute). Then a Cycles capture of a cube at the preview preset's capture settings is driven
tick by tick as the modal operator drives it; the longest tick is how long the UI froze.

Prints ``batch_items_per_hour_process_per_job``, ``batch_items_per_hour_worker``,
``batch_items_per_hour_ray_2actors``, ``model_loads_per_batch`` (the worker's, counted in the
jobs' events), ``model_loads_per_batch_process_per_job`` (one per process), ``capture_ui_block_ms_max`` and
``capture_view_ms_mean``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blender_piva import contract  # noqa: E402
from blender_piva.contract import worker_inbox as wi  # noqa: E402

LOAD_SUFFIX = "of this worker)"


def make_job(folder: Path) -> Path:
    """One small item: the toy model, a sphere capture, reconstruct + DDS edit + export."""
    from backend.data.synthetic_capture import write_sphere_capture

    spec = contract.JobSpec(
        job_id=folder.name, object_name="Sphere", source_prompt="a red sphere", target_prompt="a blue sphere",
        output_dir=str(folder), stages=["reconstruct", "edit", "export"], device="cpu",
        model=contract.ModelSettings(model="toy"),
    )
    spec.edit.method = "dds"
    spec.reconstruct.steps, spec.reconstruct.rays_per_batch, spec.reconstruct.samples_per_ray = 60, 256, 24
    spec.edit.steps, spec.edit.render_resolution, spec.edit.checkpoint_every = 10, 32, 5
    spec.export.grid_resolution, spec.export.face_budget, spec.export.texture_size = 48, 2000, 128
    spec.export.iso_density = 0.5
    job = spec.write()
    write_sphere_capture(spec.capture_path, num_train=8, num_eval=2, resolution=32)
    return job


def loads(job: Path) -> int:
    return sum(
        1 for e in contract.EventReader(job.parent / contract.EVENTS_FILE).poll()
        if e.type == "log" and e.message.startswith("loaded model ")
    )


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


def run_process_per_job(jobs: list[Path]) -> float:
    start = time.perf_counter()
    for job in jobs:
        code = subprocess.call([sys.executable, "-m", "backend", "run", str(job)], env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if code != contract.EXIT_OK:
            sys.exit(f"backend run {job} failed ({code})")
    return time.perf_counter() - start


def run_worker(jobs: list[Path], inbox: Path) -> float:
    start = time.perf_counter()
    for i, job in enumerate(jobs):
        wi.submit(inbox, f"item{i}", job)
    worker = subprocess.Popen(
        [sys.executable, "-m", "backend", "serve", "--inbox", str(inbox), "--poll", "0.05"],
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for i, job in enumerate(jobs):
            while (done := wi.load_done(inbox, f"item{i}")) is None:
                if worker.poll() is not None:
                    sys.exit(f"the worker exited ({worker.returncode})")
                time.sleep(0.05)
            if done.exit_code != contract.EXIT_OK:
                sys.exit(f"worker item {job} failed ({done.exit_code})")
        seconds = time.perf_counter() - start
        wi.request(inbox, wi.STOP_FILE)
        worker.wait(60)
    finally:
        worker.kill()
    return seconds


def run_ray(jobs: list[Path]) -> float | None:
    try:
        import ray
    except ImportError:
        print("# ray is not installed (pip install -r requirements-ray.txt): no Ray figure", flush=True)
        return None
    from backend.serve.ray_executor import RaySettings, run_jobs_on_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        start = time.perf_counter()  # the cluster's start is not counted: it serves many batches
        outcome = run_jobs_on_ray(jobs, RaySettings(actors=2, poll_s=0.1), log=lambda m: None)
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    if any(outcome.exit_codes.get(j) != contract.EXIT_OK for j in jobs):
        sys.exit(f"ray items failed: {outcome.exit_codes}")
    return seconds


def capture_ticks(work: Path) -> tuple[float, float]:
    """(longest tick, mean view) in ms of a tick-by-tick capture at the preview preset's settings."""
    import bpy

    from blender_piva.core import presets
    from blender_piva.scene.capture import CaptureSession
    from blender_piva.scene.edit_job import EditJob

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_cube_add(size=2.0)
    cube = bpy.context.active_object
    settings = presets.fresh_blocks("preview")["capture"]
    started = time.perf_counter()
    session = CaptureSession(cube, settings, work / "capture")
    session.begin()
    ticks = [(time.perf_counter() - started) * 1e3]
    while True:
        t0 = time.perf_counter()
        complete = EditJob.capture_step(session)
        ticks.append((time.perf_counter() - t0) * 1e3)
        if complete:
            break
    return max(ticks), sum(ticks[1:-1]) / max(1, len(ticks) - 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="piva-batch-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    batches = {name: [make_job(work / name / f"item{i}") for i in range(args.items)] for name in ("process", "worker", "ray")}

    seconds = {"process": run_process_per_job(batches["process"]), "worker": run_worker(batches["worker"], work / "inbox")}
    ray_seconds = run_ray(batches["ray"])
    print(f"batch_items: {args.items}")
    print(f"batch_items_per_hour_process_per_job: {3600 * args.items / seconds['process']:.1f}")
    print(f"batch_items_per_hour_worker: {3600 * args.items / seconds['worker']:.1f}")
    if ray_seconds is not None:
        print(f"batch_items_per_hour_ray_2actors: {3600 * args.items / ray_seconds:.1f}")
    print(f"model_loads_per_batch: {sum(loads(j) for j in batches['worker'])}")
    print(f"model_loads_per_batch_process_per_job: {len(batches['process'])}")  # one per process, by construction
    block, view = capture_ticks(work)
    print(f"capture_ui_block_ms_max: {block:.0f}")
    print(f"capture_view_ms_mean: {view:.0f}")


if __name__ == "__main__":
    main()
