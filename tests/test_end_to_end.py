"""The whole product on tiny settings: capture, reconstruct, edit, export, import; and the CLI.

A tiny diffusion model built from configs stands in for Stable Diffusion (nothing can be
downloaded); it edits nothing meaningful, but every stage runs for real through the same code
as the main job: Cycles, a backend subprocess, the field, the method, marching cubes, the import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from blender_piva import contract  # noqa: E402
from blender_piva.core.backend_process import BackendConfig  # noqa: E402
from blender_piva.core.request import EditRequest  # noqa: E402
from blender_piva.scene.edit_job import EditJob  # noqa: E402

from .blender_piva.scene_state import fingerprint  # noqa: E402
from .tiny_settings import TEST_OVERRIDES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BACKEND = BackendConfig(python=sys.executable, backend_root=str(ROOT))
def _source_state(obj) -> dict:
    return {k: v for k, v in fingerprint()["objects"].items() if k == obj.name}


@pytest.mark.parametrize("method", [pytest.param("piva", marks=pytest.mark.slow), "dds"])  # PIVA's 3D path: tests/backend/test_edit3d.py
def test_full_pipeline_imports_an_edited_mesh_next_to_the_untouched_source(fresh_bpy, tmp_path, tiny_model, method):
    import toy_world

    source = toy_world.add_object("red", "cube", name="Cube")
    source.location = (1.0, 2.0, 0.5)
    source.rotation_euler = (0.0, 0.0, 0.4)
    bpy.context.view_layer.update()
    before = _source_state(source)
    events: list[contract.Event] = []
    request = EditRequest(
        object_name="Cube",
        source_prompt="a red cube",
        target_prompt="a blue cube",
        method=method,
        preset="test",
        job_root=str(tmp_path),
        model=contract.ModelSettings(model=str(tiny_model)),
        device="cpu",
        overrides=TEST_OVERRIDES,
    )
    job = EditJob(request, BACKEND)
    result = job.run_sync(on_event=events.append)

    assert result is not None and result.name != "Cube"
    assert _source_state(source) == before  # the source object is untouched
    assert result.users_collection[0].name == "PIVA Cube"
    assert result["piva_target_prompt"] == "a blue cube" and result["piva_method"] == method
    # Placed with the source's rotation and scale, beside it.
    np.testing.assert_allclose(np.array(result.matrix_world)[:3, :3], np.array(source.matrix_world)[:3, :3], atol=1e-5)
    assert len(result.data.polygons) > 0 and result.data.uv_layers
    stages = [e.stage for e in events if e.type == "stage"]
    assert stages == ["reconstruct", "edit", "export"]
    assert any(e.type == "preview" and Path(e.preview).is_file() for e in events)
    manifest = contract.load_manifest(job.spec.results_path)
    assert "heldout_psnr_db" in manifest.metrics and manifest.method == method
    assert {"mesh", "texture"} <= set(manifest.files)
    # The job's one-page report (backend/report/), comparing the held-out views it rendered.
    report = (job.spec.results_path / manifest.files["report"]).read_text(encoding="utf-8")
    assert manifest.files["report"] == contract.layout.REPORT_FILE
    assert report.count("data:image/png;base64,") >= 1 + 2 * 2  # the curves, source and result at 2 cameras
    assert "held-out views and the edit field" in report and manifest.files["views"] == "views/views.json"


def save_toy_scene(path: Path, colour: str, shape: str, name: str) -> Path:
    """A .blend holding one toy-world object ``name``, written by Blender in a subprocess."""
    make = (
        "import bpy, sys; sys.path.insert(0, {root!r}); import toy_world;"
        "bpy.ops.wm.read_factory_settings(use_empty=True); toy_world.add_object({colour!r}, {shape!r}, name={name!r});"
        "bpy.ops.wm.save_as_mainfile(filepath={path!r})"
    ).format(root=str(ROOT), colour=colour, shape=shape, name=name, path=str(path))
    subprocess.run([sys.executable, "-c", make], check=True, capture_output=True, timeout=120)
    return path


def run_cli_edit(
    scene_file: Path, name: str, source: str, target: str, model: Path, tmp_path: Path,
    overrides: dict[str, dict], *extra: str,
) -> subprocess.CompletedProcess:
    """`python -m blender_piva.cli edit` on ``scene_file``'s object ``name`` with the test preset and
    ``overrides`` as --set options, jobs under tmp_path/jobs, saved to tmp_path/edited.blend; asserts it succeeded."""
    sets = [f"--set={block}.{key}={json.dumps(value)}" for block, values in overrides.items() for key, value in values.items()]
    out = subprocess.run(
        [sys.executable, "-m", "blender_piva.cli", "edit", str(scene_file), "--object", name, *extra,
         "--source", source, "--target", target, "--preset", "test", "--model", str(model),
         "--device", "cpu", "--jobs", str(tmp_path / "jobs"), "--save", str(tmp_path / "edited.blend"), *sets],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_headless_cli_edits_a_saved_blend(tmp_path, tiny_model):
    """`python -m blender_piva.cli edit` on a .blend: the source file is not modified, --save gets the result."""
    scene_file = save_toy_scene(tmp_path / "scene.blend", "green", "sphere", "Ball")
    original_bytes = scene_file.read_bytes()
    out = run_cli_edit(scene_file, "Ball", "a green sphere", "a red sphere", tiny_model, tmp_path, TEST_OVERRIDES)
    assert "created object" in out.stdout and (tmp_path / "edited.blend").is_file()
    assert scene_file.read_bytes() == original_bytes
    # A clean terminal: Blender's own lines went to the job's capture.log, the last line names the result.
    terminal = out.stdout + out.stderr
    assert "Saved:" not in terminal and "use_nodes" not in terminal and "Read blend" not in terminal, terminal[-3000:]
    last = [line for line in out.stdout.splitlines() if line.strip()][-1]
    assert last.startswith("PIVA: result: ") and str(tmp_path / "edited.blend") in last and "job folder" in last
    capture_logs = list((tmp_path / "jobs").glob("*/capture.log"))
    assert len(capture_logs) == 1 and "Saved:" in capture_logs[0].read_text()
    check = (
        "import bpy; bpy.ops.wm.open_mainfile(filepath={path!r});"
        "print('OBJECTS', sorted(o.name for o in bpy.data.objects))"
    ).format(path=str(tmp_path / "edited.blend"))
    listing = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    names = [l for l in listing.stdout.splitlines() if l.startswith("OBJECTS")][0]
    assert "'Ball'" in names and names.count("'") >= 4  # the source and the result


def test_cli_reports_a_missing_object_clearly(tmp_path):
    scene_file = tmp_path / "empty.blend"
    make = "import bpy; bpy.ops.wm.read_factory_settings(use_empty=True); bpy.ops.wm.save_as_mainfile(filepath={p!r})"
    subprocess.run([sys.executable, "-c", make.format(p=str(scene_file))], check=True, capture_output=True, timeout=120)
    out = subprocess.run(
        [sys.executable, "-m", "blender_piva.cli", "edit", str(scene_file), "--object", "Nope", "--source", "a", "--target", "b"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1 and "no object named 'Nope'" in out.stderr


def test_headless_variants_then_resume_of_the_finished_queue(tmp_path, tiny_model):
    """`cli variants`: two targets, one capture and one fit, a summary table; `cli resume` on the
    finished queue has nothing left to do; a missing object is named."""
    scene_file = save_toy_scene(tmp_path / "scene.blend", "red", "cube", "Cube")
    sets = [f"--set={block}.{key}={json.dumps(value)}" for block, values in TEST_OVERRIDES.items() for key, value in values.items()]
    jobs = tmp_path / "jobs"
    out = subprocess.run(
        [sys.executable, "-m", "blender_piva.cli", "variants", str(scene_file), "--object", "Cube",
         "--source", "a red cube", "--target", "a blue cube", "--target", "a green cube", "--method", "sds",
         "--preset", "test", "--model", str(tiny_model), "--device", "cpu", "--jobs", str(jobs),
         "--save", str(tmp_path / "variants.blend"), *sets],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("  [done")]
    assert len(rows) == 2 and "cached capture+fit" in rows[1] and "cached" not in rows[0]
    assert len(list((jobs / "cache").iterdir())) == 1
    queue_file = next((jobs / "batches").glob("*/queue.json"))
    # The contact sheet: the source and both variants (rows) from the test preset's 2 held-out cameras.
    assert f"PIVA: contact sheet {queue_file.parent / 'contact_sheet.png'}" in out.stdout
    from PIL import Image

    assert Image.open(queue_file.parent / "contact_sheet.png").size == (220 + 2 * 128, 3 * 128)
    again = subprocess.run(
        [sys.executable, "-m", "blender_piva.cli", "resume", str(queue_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert again.returncode == 0 and "nothing left to run" in again.stdout, again.stdout + again.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "blender_piva.cli", "variants", str(scene_file), "--object", "Nope",
         "--source", "a", "--target", "b"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert missing.returncode == 1 and "no object named 'Nope'" in missing.stderr


def test_headless_cli_latent_field_mode_imports_the_result_next_to_the_untouched_source(tmp_path, tiny_model):
    """`cli edit --field latent` (ED-NeRF): a latent fit, an edit without the VAE encoder, a textured
    mesh imported beside the source, which stays as it was."""
    scene_file = save_toy_scene(tmp_path / "scene.blend", "red", "cube", "Box")
    overrides = {
        "capture": {"num_views": 8, "resolution": 24},
        "reconstruct": {"steps": 30, "rays_per_batch": 256, "samples_per_ray": 16, "preview_every": 15},
        "edit": {"steps": 3, "render_resolution": 12, "preview_every": 3},
        "export": {"grid_resolution": 32, "texture_size": 64, "face_budget": 500, "iso_density": 0.2},
    }
    run_cli_edit(scene_file, "Box", "a red cube", "a blue cube", tiny_model, tmp_path, overrides,
                 "--field", "latent", "--method", "dds")
    job_json = next((tmp_path / "jobs").glob("Box-*/job.json"))
    spec = contract.load_job(job_json)
    assert spec.reconstruct.field == "latent"
    events = contract.EventReader(job_json.parent / contract.EVENTS_FILE).poll()
    assert any("latent field" in (e.message or "") for e in events if e.type == "stage")
    assert {"mesh", "texture"} <= set(contract.load_manifest(spec.results_path).files)
    check = (
        "import bpy, json; bpy.ops.wm.open_mainfile(filepath={path!r});"
        "src = bpy.data.objects['Box']; res = [o for o in bpy.data.objects if o.get('piva_job_id')];"
        "print('STATE', json.dumps({{'results': len(res), 'faces': len(res[0].data.polygons) if res else 0,"
        "'uv': bool(res and res[0].data.uv_layers), 'src_loc': list(src.location), 'src_faces': len(src.data.polygons),"
        "'apart': bool(res and (res[0].location - src.location).length > 0.5)}}))"
    ).format(path=str(tmp_path / "edited.blend"))

    def state_of(path: Path) -> dict:
        listing = subprocess.run([sys.executable, "-c", check.replace(str(tmp_path / "edited.blend"), str(path))],
                                 capture_output=True, text=True, timeout=120)
        return json.loads([l for l in listing.stdout.splitlines() if l.startswith("STATE")][0][6:])

    state, original = state_of(tmp_path / "edited.blend"), state_of(scene_file)
    assert state["results"] == 1 and state["faces"] > 0 and state["uv"] and state["apart"]
    assert (state["src_faces"], state["src_loc"]) == (original["src_faces"], original["src_loc"])  # the source as it was
