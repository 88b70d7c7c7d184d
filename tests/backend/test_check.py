"""``python -m backend check``: the default model (``toy``, shipped in backend/models/toy) loads, as
the extension's Check Backend button (ui/preferences.py) reports it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_check_reports_that_the_default_toy_model_loads():
    out = subprocess.run(
        [sys.executable, "-m", "backend", "check", "--model", "toy"],
        check=False, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        capture_output=True, text=True, timeout=300,
    )
    report = json.loads(out.stdout)
    assert out.returncode == 0, report["problems"]
    assert report["model"]["loads"] is True and report["problems"] == []
    assert Path(report["model"]["path"]) == ROOT / "backend" / "models" / "toy"
    assert Path(report["model"]["controlnet"]) == ROOT / "backend" / "models" / "toy" / "controlnet"


def test_check_backend_button_says_the_toy_model_loads(tmp_path):
    pytest.importorskip("bpy")
    from blender_piva.core.backend_process import BackendConfig
    from blender_piva.ui.preferences import check_backend

    ok, lines = check_backend(BackendConfig(python=sys.executable, backend_root=str(ROOT)), model="toy")
    assert ok, lines
    assert "model toy: loads" in lines and not [line for line in lines if line.startswith("PROBLEM")]
