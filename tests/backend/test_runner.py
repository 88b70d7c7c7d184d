"""The backend as a real subprocess: validation, events, exit codes, cancel."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blender_piva import contract

ROOT = Path(__file__).resolve().parents[2]


def write_fake_capture(capture_dir: Path, views: int = 2) -> None:
    """The files validate() looks at; the pixels do not matter to it."""
    (capture_dir / "images").mkdir(parents=True)
    (capture_dir / "depth").mkdir()
    frames = []
    for i in range(views):
        split = "train" if i else "eval"
        for sub in ("images", "depth"):
            (capture_dir / sub / f"{split}_{i:04d}.png").write_bytes(b"\x89PNG")
        frames.append(
            {"file_path": f"images/{split}_{i:04d}.png", "depth_file_path": f"depth/{split}_{i:04d}.png", "split": split}
        )
    identity = [[1.0 if r == c else 0.0 for c in range(4)] for r in range(4)]
    (capture_dir / "transforms.json").write_text(json.dumps({"w": 8, "h": 8, "frames": frames, "normalization": identity}))


def make_job(tmp_path: Path, stages: list[str] | None = None) -> Path:
    spec = contract.JobSpec(
        job_id="job",
        object_name="Cube",
        source_prompt="a red cube",
        target_prompt="a blue cube",
        output_dir=str(tmp_path / "job"),
        stages=[] if stages is None else stages,
        device="cpu",
    )
    return spec.write()


def run_backend(job_path: Path, *args: str, cwd: Path = ROOT) -> tuple[int, list[contract.Event]]:
    out = subprocess.run(
        [sys.executable, "-m", "backend", "run", str(job_path), *args],
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    events = contract.EventReader(job_path.parent / contract.EVENTS_FILE).poll()
    return out.returncode, events


def test_validate_only_job_finishes_with_a_manifest(tmp_path):
    job = make_job(tmp_path)
    write_fake_capture(job.parent / "capture")
    code, events = run_backend(job)
    assert code == contract.EXIT_OK, events
    assert [e.type for e in events] == ["started", "log", "finished"]
    assert "1 training and 1 held-out views" in events[1].message
    manifest = contract.load_manifest(job.parent / "results")
    assert manifest.job_id == "job" and manifest.files == {}
    assert manifest.normalization[0][0] == 1.0


def test_malformed_job_is_an_error_event_naming_the_field(tmp_path):
    job = make_job(tmp_path)
    data = json.loads(job.read_text())
    data["edit"]["method"] = "magic"
    job.write_text(json.dumps(data))
    code, events = run_backend(job)
    assert code == contract.EXIT_BAD_JOB
    assert events[-1].type == "error" and "edit.method" in events[-1].message and "piva" in events[-1].message
    assert not (job.parent / "results").exists()


def test_missing_capture_is_an_error_with_a_hint(tmp_path):
    code, events = run_backend(make_job(tmp_path))
    assert code == contract.EXIT_ERROR
    assert events[-1].type == "error" and "transforms.json does not exist" in events[-1].message
    assert "capture the object" in events[-1].hint


def test_incomplete_capture_names_the_missing_file(tmp_path):
    job = make_job(tmp_path)
    write_fake_capture(job.parent / "capture")
    (job.parent / "capture" / "depth" / "train_0001.png").unlink()
    code, events = run_backend(job)
    assert code == contract.EXIT_ERROR and "depth/train_0001.png" in events[-1].message


def test_job_outside_its_output_dir_is_refused(tmp_path):
    job = make_job(tmp_path)
    moved = tmp_path / "elsewhere" / "job.json"
    moved.parent.mkdir()
    moved.write_text(job.read_text())
    code, events = run_backend(moved)
    assert code == contract.EXIT_BAD_JOB and "output_dir" in events[-1].message


def test_pending_cancel_request_stops_before_the_first_stage(tmp_path):
    job = make_job(tmp_path, stages=["reconstruct"])
    write_fake_capture(job.parent / "capture")
    # The run starts (as BackendProcess.start records it), then the user cancels before its first stage.
    started = time.time()
    contract.request_cancel(job.parent)
    code, events = run_backend(job, "--run-started", repr(started))
    assert code == contract.EXIT_CANCELLED
    assert events[-1].type == "cancelled" and events[-1].stage == "reconstruct"
    assert not (job.parent / "results").exists()


def test_cuda_request_without_cuda_explains_the_fix(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    job = make_job(tmp_path)
    spec = contract.load_job(job)
    spec.device = "cuda"
    spec.write()
    write_fake_capture(job.parent / "capture")
    code, events = run_backend(job)
    assert code == contract.EXIT_ERROR and "no CUDA" in events[-1].message and "cpu" in events[-1].hint


def test_planted_pickle_checkpoints_never_run_in_a_real_job(tmp_path, tiny_model):
    """Every checkpoint name the project ever used, planted as a live pickle in a job folder: the job
    ignores the old names, refuses the new ones with the fix, and never runs the planted code."""
    from backend.data.synthetic_capture import write_sphere_capture
    from backend.stages import folders

    from .planted import assert_payload_is_live, plant_json, plant_legacy, plant_stray_tensors

    assert_payload_is_live(tmp_path)
    spec = contract.JobSpec(
        job_id="job", object_name="Cube", source_prompt="a red cube", target_prompt="a blue cube",
        output_dir=str(tmp_path / "job"), stages=["reconstruct", "edit"], device="cpu",
        model=contract.ModelSettings(model=str(tiny_model)),
    )
    spec.reconstruct.steps, spec.reconstruct.rays_per_batch, spec.reconstruct.samples_per_ray = 3, 64, 12
    spec.reconstruct.checkpoint_every = 2
    spec.edit.steps, spec.edit.render_resolution, spec.edit.checkpoint_every = 2, 16, 1
    job = spec.write()
    write_sphere_capture(spec.capture_path, num_train=4, num_eval=1, resolution=12)
    marker = tmp_path / "PWNED"
    fit_ckpt, edit_ckpt = spec.reconstruction_path / "checkpoints", spec.job_dir / "edit" / "checkpoints"
    # The folders are the job's own (as after an interrupted run), so the stages look inside them.
    folders.claim_job_folder(spec)
    fit_owner = folders.claim(spec.reconstruction_path, "reconstruction", folders.reconstruction_inputs(spec))
    folders.claim(spec.job_dir / "edit", "edit", folders.edit_inputs(spec, fit_owner.fingerprint))

    # 1. A live pickle under every old name and every new tensors name (without its JSON), in both
    #    stages' checkpoint folders: ignored, and said so; the job runs from scratch to the end.
    for folder in (fit_ckpt, edit_ckpt):
        plant_legacy(folder, marker)  # reconstruct.pt, edit.pt, base.pt, controlnet.pt
        plant_stray_tensors(folder, marker)  # STEM.safetensors without STEM.json: no checkpoint
    code, events = run_backend(job)
    assert not marker.exists()
    assert code == contract.EXIT_OK, [e.message for e in events if e.type == "error"]
    logs = [e.message for e in events if e.type == "log"]
    assert any(f"ignoring {fit_ckpt / 'reconstruct.pt'}" in m for m in logs), logs
    assert any(f"ignoring {edit_ckpt / 'edit.pt'}" in m for m in logs), logs

    # 2. A pickle as the edit's new checkpoint JSON: the edit stage fails with the file and the fix.
    (spec.job_dir / "edit" / "metrics.json").unlink()
    planted = plant_json(edit_ckpt, "edit", marker)
    code, events = run_backend(job)
    assert not marker.exists()
    assert code == contract.EXIT_ERROR and events[-1].type == "error"
    assert str(planted) in events[-1].message and "restart the edit stage from scratch" in events[-1].hint

    # 3. The same for the fit's checkpoint JSON.
    (spec.reconstruction_path / "metrics.json").unlink()
    planted = plant_json(fit_ckpt, "reconstruct", marker)
    code, events = run_backend(job)
    assert not marker.exists()
    assert code == contract.EXIT_ERROR and events[-1].type == "error"
    assert str(planted) in events[-1].message and "restart the reconstruct stage from scratch" in events[-1].hint


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda meta: meta.update(frames=["images/train_0001.png"]), "frame 0 of"),
        (lambda meta: meta.pop("normalization"), "'normalization' is not a 4x4 matrix"),
        (lambda meta: meta.update(w="wide"), "'w' and 'h' are not numbers"),
    ],
)
def test_malformed_transforms_is_an_error_naming_the_file_and_the_capture_to_delete(tmp_path, mutate, problem):
    job = make_job(tmp_path)
    capture = job.parent / "capture"
    write_fake_capture(capture)
    meta = json.loads((capture / "transforms.json").read_text())
    mutate(meta)
    (capture / "transforms.json").write_text(json.dumps(meta))
    code, events = run_backend(job)
    assert code == contract.EXIT_ERROR and events[-1].type == "error"
    assert str(capture / "transforms.json") in events[-1].message and problem in events[-1].message
    assert f"delete {capture}" in events[-1].hint


def test_truncated_capture_png_stops_the_fit_with_the_file_and_the_fix(tmp_path):
    from backend.data.synthetic_capture import write_sphere_capture

    job = make_job(tmp_path, stages=["reconstruct"])
    capture = job.parent / "capture"
    write_sphere_capture(capture, num_train=3, num_eval=1, resolution=16)
    png = capture / "images" / "train_0002.png"
    png.write_bytes(png.read_bytes()[:100])
    code, events = run_backend(job)
    assert code == contract.EXIT_ERROR and events[-1].type == "error"
    assert "images/train_0002.png" in events[-1].message and "damaged or truncated" in events[-1].message
    assert events[-1].hint == f"re-run the capture: delete {capture} and run the edit again"
    assert not (job.parent / "reconstruction" / "metrics.json").exists()
