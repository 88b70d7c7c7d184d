"""The Ray executor on a real local cluster (``ray.init(num_cpus=2)``): three items on two actors
give what the sequential path gives; an actor killed mid-item is replaced and the item completes
from the checkpoints that came back; bundles cannot leave their folders."""

from __future__ import annotations

import threading
import time

import pytest

from blender_piva import contract

from .jobs import events, make_job

ray = pytest.importorskip("ray", reason="Ray is the backend's optional extra (requirements-ray.txt)")




STAGES = ("reconstruct", "edit", "export")


def _same_result(got_job, want_job) -> None:
    """The same metrics (wall-clock times aside) and the same mesh file."""
    got = contract.load_manifest(got_job.parent / "results")
    want = contract.load_manifest(want_job.parent / "results")
    assert got.metrics.keys() == want.metrics.keys() and got.metrics
    for key, value in want.metrics.items():
        if "seconds" not in key:
            assert got.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert "mesh" in got.files
    mesh = (got_job.parent / "results" / got.files["mesh"]).read_bytes()
    assert len(mesh) > 0 and mesh == (want_job.parent / "results" / want.files["mesh"]).read_bytes()


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def test_three_items_on_two_actors_match_the_sequential_run(tmp_path, tiny_model, local_cluster):
    from backend.runner import run_job
    from backend.serve.ray_executor import RaySettings, run_jobs_on_ray

    sequential = [make_job(tmp_path / "seq" / f"job{i}", tiny_model, stages=STAGES) for i in range(3)]
    for job in sequential:
        assert run_job(job, sigterm_cancels=False) == contract.EXIT_OK
    on_ray = [make_job(tmp_path / "ray" / f"job{i}", tiny_model, stages=STAGES) for i in range(3)]
    outcome = run_jobs_on_ray(on_ray, RaySettings(actors=2, poll_s=0.1), log=lambda m: None)
    assert [outcome.exit_codes[j] for j in on_ray] == [contract.EXIT_OK] * 3
    assert len({pid for pids in outcome.actor_pids.values() for pid in pids}) == 2  # both actors worked
    for seq, remote in zip(sequential, on_ray):
        assert events(remote)[-1].type == "finished"
        assert contract.load_manifest(remote.parent / "results").job_id == remote.parent.name
        _same_result(remote, seq)
        assert (remote.parent / "reconstruction").is_dir() and any((remote.parent / "reconstruction").iterdir())


def test_an_actor_killed_mid_item_is_replaced_and_the_item_resumes(tmp_path, tiny_model, local_cluster):
    from backend.serve.ray_executor import RaySettings, run_jobs_on_ray

    job = make_job(tmp_path / "job", tiny_model, stages=STAGES, edit_steps=80)
    killed: list[int] = []

    def kill_after_a_checkpoint(started_job, actor) -> None:
        if killed:
            return

        def watch() -> None:  # the driver's poll brings the checkpoints back; kill once one is here
            end = time.time() + 240
            while time.time() < end:
                if any(e.type == "progress" and e.stage == "edit" and e.step >= 5 for e in events(started_job)):
                    killed.append(ray.get(actor.pid.remote()))
                    ray.kill(actor, no_restart=True)
                    return
                time.sleep(0.05)

        threading.Thread(target=watch, daemon=True).start()

    outcome = run_jobs_on_ray([job], RaySettings(actors=1, poll_s=0.1), log=lambda m: None, on_started=kill_after_a_checkpoint)
    assert killed, "the item ended before it could be killed"
    errors = [f"{e.stage}: {e.message} ({e.hint})" for e in events(job) if e.type == "error"]
    assert outcome.exit_codes[job] == contract.EXIT_OK and outcome.actors_lost == 1, errors
    assert outcome.actor_pids[job][0] == killed[0] and len(outcome.actor_pids[job]) == 2
    seen = events(job)
    assert seen[-1].type == "finished"
    resumed = [e for e in seen if e.type == "log" and "resum" in e.message.lower()]
    assert resumed, [e.message for e in seen if e.type == "log"]


def test_bundle_entries_cannot_leave_their_folder(tmp_path):
    from backend.serve import bundle

    for key in ("job/../../evil.py", "/etc/passwd", "elsewhere/x", "capture/a/../../b", "job"):
        with pytest.raises(bundle.BundleError):
            bundle.write_files({key: b"x"}, bundle.local_roots(tmp_path))
    assert not any(tmp_path.rglob("*"))


def test_a_bundle_round_trip_points_the_job_at_the_copies(tmp_path, tiny_model):
    from backend.serve import bundle

    job = make_job(tmp_path / "src" / "job", tiny_model)
    contract.request_cancel(job.parent, "user")
    files = bundle.pack_job(job)
    assert "job/job.json" in files and "capture/transforms.json" in files
    assert not any(k.startswith("job/capture/") for k in files) and "job/cancel.json" not in files
    local = bundle.unpack_job(files, tmp_path / "copy")
    spec = contract.load_job(local)
    assert spec.job_dir == tmp_path / "copy" / "job" and spec.capture_path == tmp_path / "copy" / "capture"
    assert (spec.capture_path / "transforms.json").read_bytes() == (job.parent / "capture" / "transforms.json").read_bytes()
