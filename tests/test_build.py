"""build.py package: the zip is built, validated by Blender's own tool, installs and registers."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import build  # noqa: E402

pytest.importorskip("bpy")

INSTALL_SCRIPT = r"""
import json, sys, bpy
zip_path = sys.argv[-1]
result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
module = "bl_ext.user_default.blender_piva"
report = {
    "result": sorted(result),
    "enabled": module in bpy.context.preferences.addons.keys(),
    "scene_prop": hasattr(bpy.types.Scene, "piva"),
    "panel": hasattr(bpy.types, "VIEW3D_PT_piva"),
    "operators": [hasattr(bpy.ops.piva, n) for n in ("edit", "cancel", "release", "check_backend")],
    "prefs_idname": type(bpy.context.preferences.addons[module].preferences).bl_idname if module in bpy.context.preferences.addons else "",
}
import addon_utils
addon_utils.disable(module, default_set=True)
report["after_disable_scene_prop"] = hasattr(bpy.types.Scene, "piva")
report["after_disable_panel"] = hasattr(bpy.types, "VIEW3D_PT_piva")
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "blender_piva.zip"
    return build.build_package(Path(sys.executable), out)


def test_zip_holds_the_extension_and_no_backend(package):
    names = zipfile.ZipFile(package).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names and "contract/__init__.py" in names
    assert not any(n.startswith("toy_world") for n in names)  # development only
    assert not any(n.startswith("backend/") or "__pycache__" in n for n in names)
    for name in names:
        if name.endswith(".py"):
            source = zipfile.ZipFile(package).read(name).decode()
            assert "import torch" not in source, f"{name} imports torch: the extension must not"


def test_built_zip_installs_registers_and_unregisters(package, tmp_path):
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "BLENDER_USER_RESOURCES": str(tmp_path / "blender")}
    script = tmp_path / "install.py"
    script.write_text(INSTALL_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(package)], capture_output=True, text=True, env=env, timeout=300)
    lines = [l for l in out.stdout.splitlines() if l.startswith("REPORT ")]
    assert lines, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads(lines[0][len("REPORT "):])
    assert report["result"] == ["FINISHED"]
    assert report["enabled"] and report["scene_prop"] and report["panel"] and all(report["operators"])
    assert report["prefs_idname"] == "bl_ext.user_default.blender_piva"
    assert not report["after_disable_scene_prop"] and not report["after_disable_panel"]
