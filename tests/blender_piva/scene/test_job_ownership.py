"""A job folder belongs to its job, seen from the extension: a real bpy scene, real job folders,
the real backend subprocess, and the scene's fingerprint before and after every refusal.

(The fixtures and the request builder are test_edit_job.py's.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

from blender_piva import contract  # noqa: E402
from blender_piva.core.request import EditFailed  # noqa: E402
from blender_piva.scene.edit_job import EditJob  # noqa: E402

from ..scene_state import diff, fingerprint  # noqa: E402
from .test_edit_job import BACKEND, ROOT, request, scene  # noqa: E402,F401 - scene is a fixture


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def finished_job(tmp_path: Path, **changes) -> Path:
    """A finished (validate-only) job folder for the request with ``changes``; returns the folder."""
    job = EditJob(request(tmp_path, **changes), BACKEND)
    assert job.run_sync() is None
    assert (job.spec.results_path / contract.MANIFEST_FILE).is_file()
    return job.spec.job_dir


@pytest.mark.parametrize(
    "theirs, message",
    [
        ({"object_name": "Ball"}, "object_name: 'Ball' in its job.json, 'Cube' in this edit"),
        ({"target_prompt": "a green cube"}, "target_prompt: 'a green cube' in its job.json, 'a blue cube' in this edit"),
        ({"steps": 3}, "edit.steps: 3 in its job.json"),
    ],
)
def test_job_dir_of_another_edit_is_refused_not_imported(scene, tmp_path, theirs, message):
    """(2a) Before: --job-dir of another object's finished job reused its capture and result, exit 0."""
    import toy_world

    toy_world.add_object("green", "sphere", name="Ball")
    other = finished_job(tmp_path, **theirs)
    before, other_files = fingerprint(), files_of(other)
    job = EditJob(request(tmp_path, job_dir=str(other)), BACKEND)
    with pytest.raises(EditFailed) as info:
        job.run_sync()
    assert info.value.message.startswith(f"cannot resume {other}: it holds another edit (")
    assert message in info.value.message
    assert "leave the job folder empty to start a new job" in info.value.hint
    assert job.spec is None  # refused in prepare(): no capture, no backend, no import
    assert fingerprint() == before, diff(before, fingerprint())
    assert files_of(other) == other_files


def test_job_dir_holding_other_files_is_refused_and_left_alone(scene, tmp_path):
    folder = tmp_path / "my_renders"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    before = fingerprint()
    with pytest.raises(EditFailed) as info:
        EditJob(request(tmp_path, job_dir=str(folder)), BACKEND).run_sync()
    assert info.value.message == f"{folder} holds files this job did not write (notes.txt)"
    assert info.value.hint == "choose an empty folder or delete it"
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert fingerprint() == before, diff(before, fingerprint())


def test_capture_of_the_object_as_it_was_is_not_reused(scene, tmp_path):
    """The job's own capture shows the object before it changed: refused, the source untouched."""
    job_dir = finished_job(tmp_path, use_cache=False)
    capture = job_dir / contract.CAPTURE_DIR
    owner = contract.read_owner(capture)
    assert owner.kind == "capture" and owner.done
    bsdf = next(n for n in scene.active_material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Roughness"].default_value = 0.1  # the user edits the material after the capture
    before, capture_files = fingerprint(), files_of(capture)
    with pytest.raises(EditFailed) as info:
        EditJob(request(tmp_path, job_dir=str(job_dir), use_cache=False), BACKEND).run_sync()
    assert info.value.message == f"{capture} holds a capture made before: 'Cube' changed since (its mesh, materials or modifiers)"
    assert "start a new job" in info.value.hint
    assert files_of(capture) == capture_files
    assert fingerprint() == before, diff(before, fingerprint())


def test_partial_capture_of_a_killed_process_is_removed_by_the_next_run(scene, tmp_path):
    """(4b) Before: a Blender killed mid-capture left its .capture.partial-* folder for ever."""
    job = EditJob(request(tmp_path, use_cache=False), BACKEND)
    job.prepare()
    spec = job.spec
    # Another Blender renders this job's capture and is killed after its first view.
    script = (
        "import json, os, signal, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import bpy, toy_world\n"
        "from blender_piva import contract\n"
        "from blender_piva.scene.capture import capture_object\n"
        "bpy.ops.wm.read_factory_settings(use_empty=True)\n"
        "cube = toy_world.add_object('red', 'cube', name='Cube')\n"
        "settings = contract.CaptureSettings(**json.loads(sys.argv[3]))\n"
        "capture_object(cube, settings, sys.argv[2], progress=lambda done, total: os.kill(os.getpid(), signal.SIGKILL))\n"
    )
    settings = json.dumps(contract.ownership.plain(contract.content_settings(spec.capture)))
    killed = subprocess.run(
        [sys.executable, "-c", script, str(ROOT), str(spec.capture_path), settings], capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (partial,) = spec.job_dir.glob(".capture.partial-*")
    assert any((partial / "images").iterdir())  # the killed process had rendered a view
    live = spec.job_dir / f".capture.partial-{os.getpid()}-0123abcd"  # a capture still running here
    live.mkdir()

    before = fingerprint()
    resumed = EditJob(request(tmp_path, job_dir=str(spec.job_dir), use_cache=False), BACKEND)
    assert resumed.run_sync() is None
    assert not partial.exists() and live.is_dir()
    assert contract.read_owner(spec.capture_path).done
    assert fingerprint() == before, diff(before, fingerprint())
