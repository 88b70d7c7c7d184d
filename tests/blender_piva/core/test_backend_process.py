"""The backend process as the extension follows it (no bpy): a backend killed from outside (the
kernel's out-of-memory killer sends SIGKILL) is reported as such, naming the setting to lower."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from blender_piva import contract
from blender_piva.core.backend_process import BackendConfig, BackendProcess

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_backend_killed_mid_stage_names_the_stage_and_its_memory_setting(tmp_path):
    from backend.data.synthetic_capture import write_sphere_capture

    write_sphere_capture(tmp_path / "capture", num_train=4, num_eval=1, resolution=16)
    spec = contract.JobSpec(
        job_id="job", object_name="Ball", source_prompt="a ball", target_prompt="a cube",
        output_dir=str(tmp_path / "job"), capture_dir=str(tmp_path / "capture"), stages=["reconstruct"], device="cpu",
    )
    spec.reconstruct.steps, spec.reconstruct.rays_per_batch = 2000, 256
    spec.write()
    process = BackendProcess(BackendConfig(python=sys.executable, backend_root=str(ROOT)), spec.job_dir)
    process.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (process.last_event and process.last_event.type == "progress"):
        process.poll()
        time.sleep(0.05)
    assert process.last_event is not None and process.last_event.type == "progress"
    os.killpg(process.pid, signal.SIGKILL)  # what the OOM killer does
    outcome = process.wait()
    assert outcome.status == "error" and outcome.returncode == -signal.SIGKILL
    assert outcome.message == "the backend stopped without a result (killed by SIGKILL in the reconstruct stage)"
    assert "when memory runs out: lower reconstruct.rays_per_batch and run the job again" in outcome.hint
