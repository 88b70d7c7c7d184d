"""The preferences with the extension enabled: the device menu lists what Check backend found, the
known models fill Model and ControlNet, Check model reads a folder's layout, a hub model is refused
while Blender's online access is off, and the operators that add objects are undoable."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

import addon_utils

from blender_piva.ui import preferences

ROOT = Path(__file__).resolve().parents[3]
HUB = "stabilityai/stable-diffusion-2-1-base"


@pytest.fixture
def prefs(fresh_bpy):
    addon_utils.enable("blender_piva", default_set=True)
    yield bpy.context.preferences.addons["blender_piva"].preferences
    addon_utils.disable("blender_piva", default_set=True)


def fake_backend(root: Path, report: dict) -> Path:
    """A folder with a ``backend`` package whose ``check`` prints ``report``: the real subprocess path."""
    (root / "backend").mkdir(parents=True)
    (root / "backend" / "__init__.py").write_text("")
    (root / "backend" / "__main__.py").write_text(f"import json\nprint(json.dumps({report!r}))\n")
    return root


def device_ids(prefs) -> list[str]:
    """The menu's items as Blender gets them (RNA lists no dynamic items without a UI context)."""
    return [item[0] for item in preferences._device_items(prefs, bpy.context)]


def test_device_choices_come_from_the_check_report():
    assert [i[0] for i in preferences.device_choices("")] == ["auto", "cpu"]
    assert "press Check backend" in preferences.device_choices("")[1][2]
    assert [i[0] for i in preferences.device_choices(json.dumps(["cpu", "cuda"]))] == ["auto", "cpu", "cuda"]
    assert [i[0] for i in preferences.device_choices(json.dumps(["cpu", "mps"]))] == ["auto", "cpu", "mps"]
    assert [i[0] for i in preferences.device_choices(json.dumps(["cpu", "tpu"]))] == ["auto", "cpu"]  # jobs refuse it
    # a saved choice the last check did not find stays visible instead of reading back as ''
    assert preferences.device_choices(json.dumps(["cpu"]), current="cuda")[-1][:2] == ("cuda", "CUDA (not found)")
    assert preferences.report_devices({"devices": ["cpu", "cuda"]}) == ["cpu", "cuda"]
    assert preferences.report_devices({"cuda": True}) == ["cpu", "cuda"]  # a backend from before "devices"
    assert preferences.report_devices({}) == ["cpu"]


def test_check_backend_stores_the_devices_and_the_menu_lists_them(prefs, tmp_path):
    assert device_ids(prefs) == ["auto", "cpu"] and prefs.device == "auto"
    report = {"python": "3.11.9", "cuda": True, "packages": {"torch": "2.13.0"}, "problems": [], "devices": ["cpu", "cuda"]}
    prefs.backend_python, prefs.backend_root = sys.executable, str(fake_backend(tmp_path / "b", report))
    prefs.model = ""
    assert bpy.ops.piva.check_backend() == {"FINISHED"}
    assert json.loads(prefs.devices_found) == ["cpu", "cuda"]
    assert "devices: cpu, cuda" in prefs.check_report.splitlines()[0]
    assert device_ids(prefs) == ["auto", "cpu", "cuda"]
    prefs.device = "cuda"
    assert prefs.device == "cuda"


def test_operators_that_add_objects_are_undoable(prefs):
    for name in ("PIVA_OT_edit", "PIVA_OT_run_variants", "PIVA_OT_run_batch", "PIVA_OT_resume_queue"):
        assert {"REGISTER", "UNDO"} <= getattr(bpy.types, name).bl_options, name
    # nothing to adjust after an edit: the Adjust Last Operation panel would run the whole edit again
    props = bpy.ops.piva.edit.get_rna_type().properties
    assert "object_name" in props and all(p.is_hidden for p in props)


def test_a_known_model_fills_model_and_controlnet(prefs):
    assert bpy.ops.piva.use_known_model(key="sd21_base") == {"FINISHED"}
    assert (prefs.model, prefs.controlnet) == (HUB, "thibaud/controlnet-sd21-depth-diffusers")
    assert bpy.ops.piva.use_known_model(key="toy") == {"FINISHED"}
    assert (prefs.model, prefs.controlnet) == ("toy", "")


def test_check_model_shows_the_layout_of_a_local_folder(prefs, tmp_path):
    folder = tmp_path / "m"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    prefs.model, prefs.controlnet = str(folder), ""
    assert bpy.ops.piva.check_model() == {"FINISHED"}
    lines = prefs.model_report.splitlines()
    assert "unet/: PICKLE ONLY (.bin/.pt/.ckpt): refused" in lines and "tokenizer/: MISSING" in lines
    prefs.model, prefs.backend_root = "toy", str(ROOT)
    bpy.ops.piva.check_model()
    assert any(line.startswith("OK: ") for line in prefs.model_report.splitlines())
    prefs.model = HUB
    bpy.ops.piva.check_model()
    assert "hub id: checked when the backend loads it (needs online access)" in prefs.model_report


def test_a_hub_model_is_refused_before_anything_starts_while_offline(prefs, tmp_path):
    assert bpy.app.online_access is False  # the bpy module's default: the case this guards
    prefs.model, prefs.job_root = HUB, str(tmp_path / "jobs")
    prefs.backend_python = str(tmp_path / "no_python_needed")  # never reached
    mesh = bpy.data.meshes.new("M")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new("M", mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.scene.piva.source_prompt, bpy.context.scene.piva.target_prompt = "a red cube", "a blue cube"
    # an ERROR report raises from bpy.ops, as the user sees it
    with bpy.context.temp_override(active_object=obj, object=obj), pytest.raises(RuntimeError, match="online access is off"):
        bpy.ops.piva.edit()
    status = bpy.context.window_manager.piva_status
    assert "Blender's online access is off (Preferences > System > Network)" in status.error and HUB in status.error
    assert not (tmp_path / "jobs").exists()  # no job folder, no capture, no backend
    assert preferences.backend_config(bpy.context).online_access is False


def test_the_backend_runs_offline_when_online_access_is_off():
    from blender_piva.core.backend_process import BackendConfig, backend_env

    assert backend_env(BackendConfig(online_access=False))["HF_HUB_OFFLINE"] == "1"
    online = backend_env(BackendConfig(online_access=True))
    assert online.get("HF_HUB_OFFLINE") == __import__("os").environ.get("HF_HUB_OFFLINE")  # left as the user set it
