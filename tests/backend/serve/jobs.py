"""Tiny job folders and a worker subprocess for the worker's tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from blender_piva import contract
from blender_piva.contract import worker_inbox as wi

ROOT = Path(__file__).resolve().parents[3]
LOADS = "of this worker)"
"""The end of the model cache's load event (``backend/serve/model_cache.py``)."""


def make_job(
    folder: Path, model: Path, *, stages: tuple[str, ...] = ("reconstruct", "edit"), method: str = "dds",
    edit_steps: int = 2,
) -> Path:
    """A job of the tiny model on a synthetic sphere capture, a few steps at 16 px; its job.json."""
    from backend.data.synthetic_capture import write_sphere_capture

    spec = contract.JobSpec(
        job_id=folder.name, object_name="Cube", source_prompt="a red cube", target_prompt="a blue cube",
        output_dir=str(folder), stages=list(stages), device="cpu",
        model=contract.ModelSettings(model=str(model)),
    )
    spec.edit.method = method
    spec.reconstruct.steps, spec.reconstruct.rays_per_batch, spec.reconstruct.samples_per_ray = 3, 64, 12
    spec.edit.steps, spec.edit.render_resolution, spec.edit.checkpoint_every = edit_steps, 16, 1
    spec.export.grid_resolution, spec.export.face_budget, spec.export.texture_size = 32, 500, 64
    spec.export.iso_density = 0.5  # a 3-step fit is faint (peak density ~0.9): a low contour still finds a surface
    job = spec.write()
    write_sphere_capture(spec.capture_path, num_train=4, num_eval=1, resolution=12)
    return job


def start_worker(inbox: Path, *args: str, log: Path | None = None) -> subprocess.Popen:
    out = open(log or inbox.parent / "worker.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "backend", "serve", "--inbox", str(inbox), "--poll", "0.05", *args],
        cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        stdout=out, stderr=subprocess.STDOUT,
    )


def wait_done(inbox: Path, name: str, worker: subprocess.Popen, timeout: float = 240) -> wi.Done:
    end = time.time() + timeout
    while time.time() < end:
        done = wi.load_done(inbox, name)
        if done is not None:
            return done
        if worker.poll() is not None:
            raise AssertionError(f"the worker exited ({worker.returncode}) before {name} was done: {worker_log(inbox)}")
        time.sleep(0.05)
    raise AssertionError(f"{name} not done after {timeout} s: {worker_log(inbox)}")


def worker_log(inbox: Path) -> str:
    path = inbox.parent / "worker.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def events(job: Path) -> list[contract.Event]:
    return contract.EventReader(job.parent / contract.EVENTS_FILE).poll()


def load_count(job: Path) -> int:
    return sum(1 for e in events(job) if e.type == "log" and e.message.startswith("loaded model ") and e.message.endswith(LOADS))
