"""A job folder belongs to its job, and stale state never blocks a run: real job folders, the
real backend as a subprocess (``python -m backend run``).

Each test plants what a user, an earlier job or a killed process leaves behind, runs the backend,
and checks both the outcome and that nothing it did not make was changed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from blender_piva import contract

from ..blender_piva.contract.test_ownership import killed_atomic_write
from .test_runner import make_job, run_backend, write_fake_capture


def listing(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (folders as b"<dir>")."""
    return {
        str(p.relative_to(folder)): (b"<dir>" if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))
    }


def tiny_fit_job(tmp_path: Path, stages: list[str], **spec_fields) -> Path:
    """A job on a real (synthetic sphere) capture whose fit takes seconds on the CPU."""
    from backend.data.synthetic_capture import write_sphere_capture

    spec = contract.JobSpec(
        job_id="job", object_name="Cube", source_prompt="a red cube", target_prompt="a blue cube",
        output_dir=str(tmp_path / "job"), stages=stages, device="cpu", **spec_fields,
    )
    spec.reconstruct.steps, spec.reconstruct.rays_per_batch, spec.reconstruct.samples_per_ray = 3, 64, 12
    job = spec.write()
    write_sphere_capture(spec.capture_path, num_train=4, num_eval=1, resolution=12)
    return job


def errors(events: list[contract.Event]) -> list[str]:
    return [f"{e.message} | {e.hint}" for e in events if e.type == "error"]


# -- 2. a job folder belongs to its job --------------------------------------------------------


def test_a_reconstruction_folder_with_metrics_and_an_empty_field_is_refused_not_reused(tmp_path):
    """(2b) Before: metrics.json + an empty field/ counted as a finished fit, and the job "finished"."""
    for recon in (tmp_path / "planted", None):  # an explicit reconstruction_dir, and the job's own
        job = make_job(tmp_path / ("a" if recon else "b"))
        write_fake_capture(job.parent / "capture")
        assert run_backend(job)[0] == contract.EXIT_OK  # a validate-only run: the job folder is the job's
        spec = contract.load_job(job)
        spec.stages = ["reconstruct"]
        if recon is not None:
            spec.reconstruction_dir = str(recon)
        spec.write()
        folder = spec.reconstruction_path
        (folder / "field").mkdir(parents=True)
        (folder / "metrics.json").write_text('{"heldout_psnr_db": 99}')
        before, manifest = listing(folder), (spec.results_path / contract.MANIFEST_FILE).read_bytes()
        code, events = run_backend(job)
        assert code == contract.EXIT_ERROR, events
        assert events[-1].type == "error"
        assert f"{folder} holds files this job did not write (field, metrics.json)" in events[-1].message
        assert events[-1].hint == "choose an empty folder or delete it"
        assert listing(folder) == before  # not even the lock file went in
        assert (spec.results_path / contract.MANIFEST_FILE).read_bytes() == manifest  # no new result


def test_a_users_own_metrics_json_is_never_overwritten(tmp_path):
    """(2c) Before: a reconstruction_dir (or JOB/edit) holding a user's metrics.json got it replaced."""
    users = tmp_path / "my_experiments"
    users.mkdir()
    (users / "metrics.json").write_text('{"mine": 1}')
    (users / "photo.png").write_bytes(b"\x89PNG my photo")
    job = tiny_fit_job(tmp_path, ["reconstruct"], reconstruction_dir=str(users))
    before = listing(users)
    code, events = run_backend(job)
    assert code == contract.EXIT_ERROR and "holds files this job did not write (metrics.json, photo.png)" in errors(events)[-1]
    assert listing(users) == before

    # The job's own edit folder: the reconstruction runs, the edit stage refuses JOB/edit untouched.
    spec = contract.load_job(job)
    spec.reconstruction_dir, spec.stages = "", ["reconstruct", "edit"]
    spec.write()
    edit_dir = spec.job_dir / "edit"
    edit_dir.mkdir()
    (edit_dir / "metrics.json").write_text('{"mine": 2}')
    code, events = run_backend(job)
    assert code == contract.EXIT_ERROR
    assert f"{edit_dir} holds files this job did not write (metrics.json)" in errors(events)[-1]
    assert listing(edit_dir) == {"metrics.json": b'{"mine": 2}'}
    assert contract.read_owner(spec.reconstruction_path).done  # the fit itself ran and was marked


def test_a_reconstruction_is_reused_only_when_marked_done_for_these_inputs_and_loadable(tmp_path):
    """"Done" = the marker says done for the same capture and settings AND the field loads."""
    job = tiny_fit_job(tmp_path, ["reconstruct"])
    spec = contract.load_job(job)
    recon = spec.reconstruction_path
    code, events = run_backend(job)
    assert code == contract.EXIT_OK, errors(events)
    owner = contract.read_owner(recon)
    assert owner.kind == "reconstruction" and owner.done
    assert owner.inputs["reconstruct"]["steps"] == 3 and "preview_every" not in owner.inputs["reconstruct"]

    offset = len(events)
    code, events = run_backend(job)
    assert code == contract.EXIT_OK and any("reusing the fitted field" in e.message for e in events[offset:])

    # A broken field under a "done" marker is fitted again, not reused.
    weights = recon / "field" / "field.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    offset = len(events)
    code, events = run_backend(job)
    assert code == contract.EXIT_OK, errors(events)
    assert not any("reusing the fitted field" in e.message for e in events[offset:])
    assert any(e.type == "stage" and e.stage == "reconstruct" for e in events[offset:])
    assert weights.stat().st_size > 100 and contract.read_owner(recon).done

    # Other fit settings (or another capture) with the same folder: refused, naming what differs.
    spec.reconstruct.steps = 4
    spec.write()
    code, events = run_backend(job)
    assert code == contract.EXIT_ERROR
    assert f"{recon} holds a reconstruction made from other inputs" in errors(events)[-1]
    assert "reconstruct.steps: 3 in the folder, 4 for this job" in errors(events)[-1]


def test_a_job_file_in_a_folder_of_other_files_is_refused(tmp_path):
    folder = tmp_path / "holiday"
    folder.mkdir()
    (folder / "beach.jpg").write_bytes(b"JFIF the beach")
    spec = contract.JobSpec(
        job_id="holiday", object_name="Cube", source_prompt="a red cube", target_prompt="a blue cube",
        output_dir=str(folder), stages=[], device="cpu",
    )
    job = spec.write()
    write_fake_capture(spec.capture_path)
    code, events = run_backend(job)
    assert code == contract.EXIT_ERROR
    assert f"{folder} holds files this job did not write (beach.jpg)" in errors(events)[-1]
    assert (folder / "beach.jpg").read_bytes() == b"JFIF the beach"
    assert not (folder / contract.RESULTS_DIR).exists() and not (folder / contract.OWNER_FILE).exists()

    # A job folder that was run, whose job.json now names another object: refused.
    job = make_job(tmp_path / "other")
    write_fake_capture(job.parent / "capture")
    assert run_backend(job)[0] == contract.EXIT_OK
    data = json.loads(job.read_text())
    data["object_name"] = "Sphere"
    job.write_text(json.dumps(data))
    code, events = run_backend(job)
    assert code == contract.EXIT_ERROR
    assert "holds a job made from other inputs (object_name: 'Cube' in the folder, 'Sphere' for this job)" in errors(events)[-1]


def test_relative_folders_in_the_job_file_are_resolved_against_its_folder(tmp_path):
    """(2d) Before: they were resolved against the backend's current folder."""
    shared = tmp_path / "shared"
    write_fake_capture(shared / "capture")
    job = make_job(tmp_path)
    data = json.loads(job.read_text())
    data["capture_dir"] = "../shared/capture"
    job.write_text(json.dumps(data))
    code, events = run_backend(job, cwd=Path("/"))  # the backend runs anywhere but in the job folder
    assert code == contract.EXIT_OK, errors(events)
    assert contract.load_job(job).capture_path == shared / "capture"

    data.update(reconstruction_dir="../shared/recon", stages=["reconstruct"])
    job.write_text(json.dumps(data))
    (shared / "recon").mkdir()
    (shared / "recon" / "notes.txt").write_text("mine")
    code, events = run_backend(job, cwd=Path("/"))
    assert code == contract.EXIT_ERROR
    assert f"{shared / 'recon'} holds files this job did not write (notes.txt)" in errors(events)[-1]


# -- 4. stale state never blocks a run -------------------------------------------------------------


def test_a_cancel_request_left_by_an_earlier_run_is_cleared_not_obeyed(tmp_path):
    """(4a) Before: every later run stopped at step 0 of its first stage."""
    job = tiny_fit_job(tmp_path, ["reconstruct"])
    stale = {"reason": "user", "time": time.time() - 3600, "contract": contract.CONTRACT_VERSION}
    contract.write_json_atomic(job.parent / contract.CANCEL_FILE, stale)
    code, events = run_backend(job)
    assert code == contract.EXIT_OK, [(e.type, e.message) for e in events]
    assert not (job.parent / contract.CANCEL_FILE).exists()
    assert any("removed a cancel request older than this run" in e.message for e in events if e.type == "log")
    assert events[-1].type == "finished"


def test_temporaries_of_dead_processes_are_removed_by_the_next_run(tmp_path):
    """(4c) Before: a crash or a full disk left multi-MB .tmp files for ever."""
    cache = tmp_path / "cache" / "recon"  # a reconstruction folder outside the job (the cache)
    job = make_job(tmp_path)
    spec = contract.load_job(job)
    spec.reconstruction_dir = str(cache)
    spec.write()
    write_fake_capture(spec.capture_path)
    assert run_backend(job)[0] == contract.EXIT_OK  # an earlier run, which then crashed mid-writes:
    (cache / "checkpoints").mkdir(parents=True)
    dead = [
        killed_atomic_write(job),  # job.json itself was being rewritten
        killed_atomic_write(spec.results_path / contract.MANIFEST_FILE),
        killed_atomic_write(cache / "checkpoints" / "reconstruct.safetensors"),
    ]
    live = job.parent / f".{contract.EVENTS_FILE}.{os.getpid()}.0123456789ab.tmp"  # this process: alive
    live.write_bytes(b"mid-write")
    code, events = run_backend(job)
    assert code == contract.EXIT_OK, errors(events)
    assert not any(path.exists() for path in dead)
    assert live.read_bytes() == b"mid-write"
    log = next(e.message for e in events if "removed temporaries of interrupted runs" in e.message)
    assert all(str(path) in log for path in dead), log
