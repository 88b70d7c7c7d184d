"""Running out of memory or disk: the backend says which resource, which stage and what to lower
(memory) or which folder and how much room the job needs (disk), in an error event, with no
traceback and no half-written file. The faults are real where the machine allows it (an address
space limit, a small tmpfs); ENOSPC is injected at fsync where no tmpfs can be mounted."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backend.data.synthetic_capture import write_sphere_capture
from backend.field.ngp_field import NGPField, NGPFieldConfig
from backend.resources import resource_error
from blender_piva import contract
from blender_piva.contract import disk

from .. import small_disk

ROOT = Path(__file__).resolve().parents[2]


def make_job(root: Path, job_dir: Path, rays: int = 256) -> Path:
    """A reconstruct-only job on a synthetic capture outside the job folder (~20 steps)."""
    write_sphere_capture(root / "capture", num_train=4, num_eval=1, resolution=16)
    spec = contract.JobSpec(
        job_id=job_dir.name, object_name="Ball", source_prompt="a ball", target_prompt="a cube",
        output_dir=str(job_dir), capture_dir=str(root / "capture"), stages=["reconstruct"], device="cpu",
    )
    spec.reconstruct.steps, spec.reconstruct.rays_per_batch, spec.reconstruct.checkpoint_every = 20, rays, 10
    return spec.write()


def last_event(job_dir: Path) -> contract.Event:
    return contract.EventReader(job_dir / contract.EVENTS_FILE).poll()[-1]


def test_field_sizes_on_disk_match_the_field_presets():
    for device, config in (("cpu", NGPFieldConfig.cpu_preset()), ("cuda", NGPFieldConfig())):
        weights = 4 * sum(p.numel() for p in NGPField(config).parameters())
        assert abs(disk.FIELD_BYTES[device] - weights) < 0.05 * weights, (device, weights)


def test_memory_errors_name_the_setting_of_their_stage():
    spec = contract.JobSpec(job_id="j", object_name="O", source_prompt="a", target_prompt="b", output_dir="/tmp/j")
    cuda = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8 GiB total)")
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:127] . DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)")
    cases = [
        (cuda, "edit", "out of GPU memory in the edit stage (could not allocate 2.00 GiB)", "edit.render_resolution"),
        (cpu, "reconstruct", "out of CPU memory in the reconstruct stage (could not allocate 4.0 GB)",
         "reconstruct.rays_per_batch"),
        (MemoryError(), "export", "out of CPU memory in the export stage (MemoryError)", "export.grid_resolution"),
    ]
    for exc, stage, message, setting in cases:
        error = resource_error(exc, stage, spec)
        assert error is not None and str(error) == message
        assert f"lower {setting} (now " in error.hint and f"--set {setting}=" in error.hint
    assert "fp16" in resource_error(cuda, "edit", spec).hint
    assert resource_error(RuntimeError("shape mismatch"), "edit", spec) is None


@pytest.mark.skipif(sys.platform != "linux", reason="address-space limits are a Linux rlimit here")
def test_out_of_memory_in_a_real_backend_names_the_setting_and_prints_no_traceback(tmp_path):
    import resource

    job = make_job(tmp_path, tmp_path / "job", rays=1 << 22)  # 4M rays: far beyond 1.6 GB of address space

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1_600_000_000, 1_600_000_000))

    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-m", "backend", "run", str(job)], check=False, cwd=ROOT, env=env,
                         preexec_fn=limit, capture_output=True, text=True, timeout=300)
    assert out.returncode == contract.EXIT_ERROR and "Traceback" not in out.stdout + out.stderr, out.stderr[-2000:]
    event = last_event(job.parent)
    assert event.type == "error" and event.message.startswith("out of CPU memory in the reconstruct stage")
    assert "lower reconstruct.rays_per_batch (now 4194304" in event.hint


_INJECT_ENOSPC = """\
import errno, os, sys
_fsync = os.fsync
def fsync(fd):  # the fault: a write of more than 1 MB finds the disk full
    if os.fstat(fd).st_size > 1_000_000:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _fsync(fd)
os.fsync = fsync
from backend.__main__ import main
sys.exit(main(["run", sys.argv[1]]))
"""


def test_full_disk_names_the_folder_and_the_room_needed_and_leaves_no_partial_file(tmp_path):
    """A 4 MB disk for the job folder: the fit's first checkpoint (~28 MB) does not fit."""
    job_dir, staged = tmp_path / "mnt" / "job", tmp_path / "staged"
    make_job(tmp_path, job_dir)
    shutil.move(job_dir, staged)  # the job's files, copied onto the small disk once it is mounted
    job_dir.mkdir()
    files, events = tmp_path / "files.txt", tmp_path / "events.jsonl"
    run = (
        f"cp -a {staged}/. {job_dir}/ && {shlex.quote(sys.executable)} -m backend run {job_dir}/job.json; code=$?; "
        f"find {job_dir} -type f > {files}; cp {job_dir}/events.jsonl {events}; exit $code"
    )
    argv = small_disk.in_namespace(job_dir, "4m", run)
    if argv is None:  # no tmpfs here: inject ENOSPC at the write instead
        shutil.copytree(staged, job_dir, dirs_exist_ok=True)
        argv = [sys.executable, "-c", _INJECT_ENOSPC, str(job_dir / "job.json")]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"}
    out = subprocess.run(argv, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == contract.EXIT_ERROR and "Traceback" not in out.stdout + out.stderr, out.stderr[-2000:]
    if not files.is_file():  # the injected run wrote to the real folder
        files.write_text("\n".join(str(p) for p in job_dir.rglob("*") if p.is_file()))
        shutil.copy(job_dir / "events.jsonl", events)
    event = contract.EventReader(events).poll()[-1]
    assert event.type == "error"
    assert event.message.startswith(f"the disk is full: cannot write in {job_dir}/reconstruction")
    assert "the job needs about" in event.message and event.message.endswith("in the reconstruct stage")
    assert event.hint.startswith("free at least") and "--jobs" in event.hint
    written = files.read_text().split()
    assert f"{job_dir}/job.json" in written
    assert not [f for f in written if ".tmp" in f or f.endswith(".safetensors")], written  # nothing half-written
