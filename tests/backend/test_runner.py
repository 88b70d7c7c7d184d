"""The backend as a real subprocess: validation, events, exit codes, cancel."""

from __future__ import annotations

import json
import subprocess
import sys
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


def run_backend(job_path: Path) -> tuple[int, list[contract.Event]]:
    out = subprocess.run(
        [sys.executable, "-m", "backend", "run", str(job_path)],
        cwd=ROOT,
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
    contract.request_cancel(job.parent)
    code, events = run_backend(job)
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
