"""Add-on preferences: where the backend is, which model, where jobs go, device and memory."""

from __future__ import annotations

import json
import os
import subprocess

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from ..core.extension import PACKAGE as ADDON_ID
from .. import contract
from ..core.backend_process import BackendConfig


class PIVA_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    backend_python: StringProperty(
        name="Backend Python",
        description="Python interpreter with torch, diffusers and peft (e.g. REPO/.venv/bin/python); "
        "empty = the repository's .venv when the add-on runs from a checkout",
        subtype="FILE_PATH",
    )
    backend_root: StringProperty(
        name="Backend folder",
        description="Folder containing the 'backend' package; empty = installed in the backend Python",
        subtype="DIR_PATH",
    )
    model: StringProperty(
        name="Model",
        description="Diffusion model: a hub id (stabilityai/stable-diffusion-2-1-base), a local folder, "
        "or 'toy' for the small model shipped with the project",
        default="toy",
    )
    controlnet: StringProperty(name="Depth ControlNet", description="Hub id or folder; empty = the model's default")
    job_root: StringProperty(
        name="Job folder",
        description="Where captures, checkpoints and results go; empty = the extension's user folder",
        subtype="DIR_PATH",
    )
    device: EnumProperty(
        name="Device",
        items=[(d, d.upper() if d != "auto" else "Auto", "") for d in contract.DEVICES],
        default="auto",
    )
    precision: EnumProperty(
        name="Precision",
        items=[(p, p, "") for p in contract.PRECISIONS],
        default="auto",
    )
    render_resolution: IntProperty(
        name="Edit resolution", description="0 = the preset's; lower it when the GPU runs out of memory",
        default=0, min=0, max=1024,
    )
    rays_per_batch: IntProperty(
        name="Rays per batch", description="0 = the preset's; lower it when the GPU runs out of memory",
        default=0, min=0, max=1 << 20,
    )
    check_report: StringProperty(default="")

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.prop(self, "backend_python")
        col.prop(self, "backend_root")
        col.operator("piva.check_backend", icon="CHECKMARK")
        for line in self.check_report.splitlines():
            col.label(text=line)
        col.separator()
        col.prop(self, "model")
        col.prop(self, "controlnet")
        col.prop(self, "job_root")
        row = col.row()
        row.prop(self, "device")
        row.prop(self, "precision")
        row = col.row()
        row.prop(self, "render_resolution")
        row.prop(self, "rays_per_batch")


def get_preferences(context=None) -> PIVA_AddonPreferences | None:
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


def backend_config(context=None) -> BackendConfig:
    prefs = get_preferences(context)
    if prefs is None:
        return BackendConfig()
    return BackendConfig(
        python=bpy.path.abspath(prefs.backend_python) if prefs.backend_python else "",
        backend_root=bpy.path.abspath(prefs.backend_root) if prefs.backend_root else "",
    )


def check_backend(config: BackendConfig, model: str = "", controlnet: str = "") -> tuple[bool, list[str]]:
    """Run ``python -m backend check`` and turn its JSON into lines for the preferences; the model
    (``toy`` = the shipped one) and ControlNet are loaded as a job would load them."""
    from ..core.backend_process import BackendError

    try:
        python = config.resolved_python()
    except BackendError as exc:
        return False, [str(exc)]
    env_root = config.resolved_root()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    if env_root:
        env["PYTHONPATH"] = env_root
    cmd = [python, "-m", "backend", "check"] + (["--model", model] if model else [])
    cmd += ["--controlnet", controlnet] if model and controlnet else []
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, [f"cannot run {python}: {exc}", "fix the Backend Python path"]
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return False, [f"the backend did not answer (exit {out.returncode})", *tail]
    lines = [f"Python {report['python']}, CUDA: {'yes' if report.get('cuda') else 'no'}"]
    lines += [f"{name}: {version or 'missing'}" for name, version in report["packages"].items()]
    if "model" in report:
        lines.append(f"model {report['model']['name']}: {'loads' if report['model']['loads'] else 'does NOT load'}")
    lines += [f"PROBLEM: {p['what']} -> {p['fix']}" for p in report["problems"]]
    return not report["problems"], lines


CLASSES = (PIVA_AddonPreferences,)
