"""One edit through the add-on code with a real backend subprocess: bad inputs, failures, cancel.

The backend runs only its validate step here (``stages=[]``) or is stopped before its first stage,
so these tests need no field or model; the full pipeline is tested in test_end_to_end.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

import blender_piva  # noqa: E402
from blender_piva import contract  # noqa: E402
from blender_piva.core.backend_process import BackendConfig  # noqa: E402
from blender_piva.core.request import EditFailed, EditRequest  # noqa: E402
from blender_piva.scene.edit_job import EditJob  # noqa: E402

from ..scene_state import diff, fingerprint  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
BACKEND = BackendConfig(python=sys.executable, backend_root=str(ROOT))


@pytest.fixture
def scene(fresh_bpy):
    """A user's scene: a red cube (the source), a plane, a camera; the cube is active."""
    import toy_world

    cube = toy_world.add_object("red", "cube", name="Cube")
    plane = bpy.data.objects.new("Floor", bpy.data.meshes.new("Floor"))
    plane.data.from_pydata([(-5, -5, -1), (5, -5, -1), (5, 5, -1), (-5, 5, -1)], [], [(0, 1, 2, 3)])
    bpy.context.scene.collection.objects.link(plane)
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    bpy.context.scene.collection.objects.link(cam)
    bpy.context.view_layer.objects.active = cube
    cube.select_set(True)
    return cube


def request(tmp_path, **changes) -> EditRequest:
    req = EditRequest(
        object_name="Cube",
        source_prompt="a red cube",
        target_prompt="a blue cube",
        preset="test",
        job_root=str(tmp_path / "jobs"),
        stages=[],
        device="cpu",
    )
    for key, value in changes.items():
        setattr(req, key, value)
    return req


def test_validate_only_job_runs_the_real_backend_and_leaves_the_scene_alone(scene, tmp_path):
    before = fingerprint()
    events = []
    job = EditJob(request(tmp_path), BACKEND)
    result = job.run_sync(on_event=events.append)
    assert result is None  # validate only: no mesh to import
    assert fingerprint() == before, diff(before, fingerprint())
    assert [e.type for e in events] == ["started", "log", "finished"]
    assert (job.spec.capture_path / "transforms.json").is_file()
    assert contract.load_job(job.spec.job_dir / "job.json").target_prompt == "a blue cube"


@pytest.mark.parametrize(
    "changes, setup, message",
    [
        ({"object_name": ""}, None, "No object is selected"),
        ({"object_name": "Ghost"}, None, "no object named 'Ghost'"),
        ({"object_name": "Camera"}, None, "not a mesh"),
        ({"object_name": "Empty"}, "empty_mesh", "has no faces"),
        ({"object_name": "Sliver"}, "collinear_triangle", "'Sliver' has no faces with area"),
        ({"stages": ["reconstruct"], "overrides": {"reconstruct": {"steps": 0}}}, None, "reconstruct.steps: is 0"),
        ({"source_prompt": "  "}, None, "source_prompt: is empty"),
        ({"target_prompt": ""}, None, "target_prompt: is empty"),
        ({"method": "magic"}, None, "edit.method: unknown method 'magic'"),
        ({"preset": "ultra"}, None, "unknown preset 'ultra'"),
    ],
)
def test_bad_inputs_fail_clearly_and_write_nothing(scene, tmp_path, changes, setup, message):
    if setup == "empty_mesh":
        empty = bpy.data.objects.new("Empty", bpy.data.meshes.new("Empty"))
        bpy.context.scene.collection.objects.link(empty)
    if setup == "collinear_triangle":  # one face whose corners lie on a line: nothing to render, nothing to fit
        mesh = bpy.data.meshes.new("Sliver")
        mesh.from_pydata([(0, 0, 0), (1, 0, 0), (2, 0, 0)], [], [(0, 1, 2)])
        bpy.context.scene.collection.objects.link(bpy.data.objects.new("Sliver", mesh))
    before = fingerprint()
    job = EditJob(request(tmp_path, **changes), BACKEND)
    with pytest.raises(EditFailed) as info:
        job.run_sync()
    assert message in str(info.value)
    assert fingerprint() == before, diff(before, fingerprint())
    assert not (tmp_path / "jobs").exists() or not any((tmp_path / "jobs").iterdir())


def test_unwritable_job_folder_fails_clearly(scene, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        before = fingerprint()
        with pytest.raises(EditFailed, match="cannot write the job folder"):
            EditJob(request(tmp_path, job_root=str(locked)), BACKEND).run_sync()
        assert fingerprint() == before
    finally:
        os.chmod(locked, 0o700)


def test_job_folder_under_a_file_fails_clearly(scene, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    before = fingerprint()
    with pytest.raises(EditFailed, match="cannot write the job folder") as info:
        EditJob(request(tmp_path, job_root=str(blocker)), BACKEND).run_sync()
    assert "writable job folder" in info.value.hint
    assert fingerprint() == before


def test_malformed_job_file_on_resume_fails_clearly(scene, tmp_path):
    job_dir = tmp_path / "jobs" / "broken"
    job_dir.mkdir(parents=True)
    (job_dir / "job.json").write_text("{not json")
    before = fingerprint()
    with pytest.raises(EditFailed, match="cannot resume") as info:
        EditJob(request(tmp_path, job_dir=str(job_dir)), BACKEND).run_sync()
    assert "malformed JSON" in str(info.value)
    assert fingerprint() == before


def test_cancel_during_capture_leaves_scene_and_no_capture(scene, tmp_path):
    before = fingerprint()
    calls = {"n": 0}

    def should_cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    job = EditJob(request(tmp_path), BACKEND)
    with pytest.raises(EditFailed) as info:
        job.run_sync(should_cancel=should_cancel)
    assert info.value.status == "cancelled"
    assert fingerprint() == before, diff(before, fingerprint())
    assert not job.spec.capture_path.exists()


def test_cancel_in_the_backend_then_resume(scene, tmp_path):
    before = fingerprint()
    job = EditJob(request(tmp_path, stages=["reconstruct"]), BACKEND)
    job.prepare()
    job.capture()
    contract.request_cancel(job.spec.job_dir)  # pending before the backend starts its first stage
    process = job.start_backend()
    contract.request_cancel(job.spec.job_dir)  # start() clears stale requests: ask again
    outcome = job.wait_backend()
    assert outcome.status == "cancelled" and outcome.returncode == contract.EXIT_CANCELLED
    with pytest.raises(EditFailed) as info:
        job.check_outcome(outcome)
    assert info.value.status == "cancelled" and "resume" in info.value.hint
    assert fingerprint() == before, diff(before, fingerprint())
    # Resume the same job folder, validate only: the capture is reused, not rendered again.
    capture_mtime = (job.spec.capture_path / "transforms.json").stat().st_mtime_ns
    spec = contract.load_job(job.spec.job_dir / "job.json")
    spec.stages = []
    spec.write()
    resumed = EditJob(request(tmp_path, job_dir=str(job.spec.job_dir)), BACKEND)
    assert resumed.run_sync() is None
    assert (job.spec.capture_path / "transforms.json").stat().st_mtime_ns == capture_mtime
    assert (job.spec.job_dir / "results" / "manifest.json").is_file()
    assert process.process.returncode == contract.EXIT_CANCELLED


def test_killed_backend_is_reported_with_the_log(scene, tmp_path):
    before = fingerprint()
    job = EditJob(request(tmp_path, stages=["reconstruct"]), BACKEND)
    job.prepare()
    job.capture()
    # A backend Python that dies at once stands in for a crash (segfault, OOM kill).
    job.backend = BackendConfig(python=sys.executable, backend_root=str(tmp_path / "no_backend_here"))
    job.start_backend()
    outcome = job.wait_backend()
    assert outcome.status == "error" and "without a result" in outcome.message
    assert outcome.log_path.endswith("backend.log") and "No module named backend" in Path(outcome.log_path).read_text()
    with pytest.raises(EditFailed, match="crashed or was killed"):
        job.check_outcome(outcome)
    assert fingerprint() == before


def test_operator_sync_path_reports_errors_without_touching_the_scene(scene, tmp_path):
    blender_piva.register()
    try:
        bpy.context.scene.piva.source_prompt = "a red cube"
        bpy.context.scene.piva.target_prompt = "a blue cube"
        before = fingerprint()
        # The job folder is a file: the operator must fail cleanly through its execute path.
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with bpy.context.temp_override(active_object=scene, object=scene):
            assert bpy.ops.piva.edit.poll()
        status = bpy.context.window_manager.piva_status
        req_job_root = str(blocker)
        from blender_piva.ui import operators

        original = operators.request_from_panel

        def patched(context, name):
            req = original(context, name)
            req.job_root, req.preset, req.stages = req_job_root, "test", []
            return req

        operators.request_from_panel = patched
        try:
            # An ERROR report becomes a RuntimeError for a Python caller of the operator.
            with bpy.context.temp_override(active_object=scene, object=scene):
                with pytest.raises(RuntimeError, match="cannot write the job folder"):
                    bpy.ops.piva.edit("EXEC_DEFAULT")
        finally:
            operators.request_from_panel = original
        assert "cannot write the job folder" in status.error
        assert fingerprint() == before
    finally:
        blender_piva.unregister()


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A real Python without the backend's packages: a fresh venv without pip."""
    import subprocess

    folder = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    return folder / "bin" / "python"


def test_backend_python_without_its_packages_is_refused_before_the_capture(scene, tmp_path, bare_python):
    before = fingerprint()
    bare = BackendConfig(python=str(bare_python), backend_root=str(ROOT))
    job = EditJob(request(tmp_path, stages=["reconstruct"]), bare)
    with pytest.raises(EditFailed) as info:
        job.run_sync()
    message = str(info.value)
    assert f"the backend Python '{bare_python}' lacks torch, numpy, diffusers" in message and "--python" in message
    assert fingerprint() == before, diff(before, fingerprint())
    assert not list((tmp_path / "jobs").rglob("transforms.json"))  # nothing was captured
    assert job.process is None  # no backend was started


def test_full_disk_during_the_capture_names_the_folder_and_keeps_nothing(scene, tmp_path, monkeypatch):
    """A 32 KB disk holds job.json but not the capture (real ENOSPC where a tmpfs can be mounted)."""
    import errno

    from blender_piva.core import png16

    from ...small_disk import mounted

    jobs = tmp_path / "small"
    before = fingerprint()
    with mounted(jobs, "32k") as real:
        if not real:  # no tmpfs here: the first view's PNG finds the disk full
            def full(*args, **kwargs):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(png16, "write_png", full)
        job = EditJob(request(tmp_path, job_root=str(jobs)), BACKEND)
        with pytest.raises(EditFailed) as info:
            job.run_sync()
        message = str(info.value)
        leftovers = [p.name for p in jobs.rglob("*") if "partial" in p.name or ".tmp" in p.name]
        captured = list(jobs.rglob("transforms.json"))
    assert message.startswith(f"The disk is full: cannot write in {job.spec.capture_path.parent} (")
    assert "the capture (8 views at 32 px) needs about" in message and "--jobs" in message
    assert not leftovers and not captured
    assert fingerprint() == before, diff(before, fingerprint())


def test_a_hub_model_is_refused_before_the_capture_while_offline(scene, tmp_path):
    """Queues and the CLI go through prepare(): with online access off a hub id stops there, with
    nothing written and the scene unchanged; a local model still passes."""
    import dataclasses

    before = fingerprint()
    req = request(tmp_path)
    req.model = dataclasses.replace(req.model, model="stabilityai/stable-diffusion-2-1-base")
    offline = dataclasses.replace(BACKEND, online_access=False)
    with pytest.raises(EditFailed, match="online access is off"):
        EditJob(req, offline).prepare()
    assert not (tmp_path / "jobs").exists() or not any((tmp_path / "jobs").rglob("job.json"))
    assert fingerprint() == before, diff(before, fingerprint())
    spec = EditJob(request(tmp_path), offline).prepare()  # the shipped toy model needs no network
    assert (spec.job_dir / "job.json").is_file()
