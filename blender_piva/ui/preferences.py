"""Add-on preferences: where the backend is, which model, where jobs go, device and memory.

The device menu lists what the last Check backend found (``devices_found``); before any check it
offers Auto and CPU. The model menu fills Model and Depth ControlNet with a known-good pair
(``core/known_models.py``); Check model reads a folder's layout without torch
(``contract/model_layout.py``).
"""

from __future__ import annotations

import json
import subprocess
import tempfile

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from .. import contract
from ..core.backend_process import BackendConfig
from ..core.extension import PACKAGE as ADDON_ID

NO_CHECK_HINT = "press Check backend to list this machine's GPUs"
"""Shown under the device menu before the first check."""

DEVICE_NUMBERS = {name: i for i, name in enumerate(contract.DEVICES)}
"""Each device's fixed enum number, so the saved choice keeps its meaning when the list changes."""


def device_choices(devices_json: str, current: str = "") -> list[tuple[str, str, str]]:
    """The device menu's (identifier, label, description): Auto, then the devices the last check
    found (JSON list in ``devices_json``; empty = no check yet: CPU only), limited to what a job
    accepts (``contract.DEVICES``). ``current``, when not among them, stays listed as not found."""
    try:
        found = json.loads(devices_json) if devices_json else None
    except json.JSONDecodeError:
        found = None
    if not isinstance(found, list):
        found = None
    names = [d for d in (found or ["cpu"]) if d in contract.DEVICES and d != "auto"]
    if "cpu" not in names:
        names.insert(0, "cpu")
    hint = "" if found is not None else f" ({NO_CHECK_HINT})"
    items = [("auto", "Auto", f"The best device found: a GPU when there is one, else the CPU{hint}")]
    items += [(d, d.upper(), f"Run the backend on {d.upper()}{hint}") for d in names]
    if current and current not in ("auto", *names) and current in contract.DEVICES:
        items.append((current, f"{current.upper()} (not found)", "The last Check backend did not find this device"))
    return items


_DEVICE_ITEMS: dict[tuple[str, str], list] = {}
"""Items handed to Blender, per (devices found, device chosen): Blender keeps pointers to their
strings, so Python must keep every list it returned alive (there are only a few)."""


def _device_items(self, context):
    # the chosen device comes from device_chosen: reading self.device here would recurse
    key = (self.devices_found, self.device_chosen)
    if key not in _DEVICE_ITEMS:
        items = device_choices(*key)
        _DEVICE_ITEMS[key] = [(ident, label, desc, DEVICE_NUMBERS[ident]) for ident, label, desc in items]
    return _DEVICE_ITEMS[key]


def _device_changed(self, context):
    self.device_chosen = self.device


def report_devices(report: dict) -> list[str]:
    """The devices a ``python -m backend check`` report lists (older backends: CPU, and CUDA when found)."""
    devices = report.get("devices")
    if isinstance(devices, list) and all(isinstance(d, str) for d in devices):
        return list(devices)
    return ["cpu", "cuda"] if report.get("cuda") else ["cpu"]


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
        description="Where the backend runs; the list is what the last Check backend found",
        items=_device_items,
        default=DEVICE_NUMBERS["auto"],
        update=_device_changed,
    )
    device_chosen: StringProperty(default="auto", options={"HIDDEN"}, description="The device last chosen")
    devices_found: StringProperty(
        default="", options={"HIDDEN"}, description="JSON list of the devices the last Check backend found"
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
    use_worker: BoolProperty(
        name="Keep the model loaded",
        description="Run every edit, variant and batch item on one backend worker that loads the model once "
        "(Release Backend stops it and frees its memory; it also stops after 10 minutes without a job); "
        "off = a new backend process per job",
        default=True,
    )
    check_report: StringProperty(default="")
    model_report: StringProperty(default="", description="Lines of the last Check model")

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.prop(self, "backend_python")
        col.prop(self, "backend_root")
        col.operator("piva.check_backend", icon="CHECKMARK")
        for line in self.check_report.splitlines():
            col.label(text=line)
        col.separator()
        col.operator_menu_enum("piva.use_known_model", "key", text="Known models", icon="PRESET")
        col.prop(self, "model")
        col.prop(self, "controlnet")
        col.operator("piva.check_model", icon="VIEWZOOM")
        for line in self.model_report.splitlines():
            col.label(text=line)
        col.prop(self, "job_root")
        row = col.row()
        row.prop(self, "device")
        row.prop(self, "precision")
        if not self.devices_found:
            col.label(text=NO_CHECK_HINT[0].upper() + NO_CHECK_HINT[1:], icon="INFO")
        row = col.row()
        row.prop(self, "render_resolution")
        row.prop(self, "rays_per_batch")
        col.prop(self, "use_worker")


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
        online_access=bpy.app.online_access,
        use_worker=prefs.use_worker,
    )


def check_backend(config: BackendConfig, model: str = "", controlnet: str = "") -> tuple[bool, list[str]]:
    """Run ``python -m backend check`` and turn its JSON into lines for the preferences; the model
    (``toy`` = the shipped one) and ControlNet are loaded as a job would load them."""
    ok, lines, _ = check_backend_devices(config, model, controlnet)
    return ok, lines


def check_backend_devices(
    config: BackendConfig, model: str = "", controlnet: str = ""
) -> tuple[bool, list[str], list[str] | None]:
    """:func:`check_backend`, plus the devices the backend found (None when it did not answer)."""
    from ..core.backend_process import BackendError, backend_env

    try:
        python = config.resolved_python()
    except BackendError as exc:
        return False, [str(exc)], None
    env = backend_env(config)  # offline (HF_HUB_OFFLINE=1) when Blender's online access is off
    cmd = [python, "-m", "backend", "check"] + (["--model", model] if model else [])
    cmd += ["--controlnet", controlnet] if model and controlnet else []
    try:
        # cwd: `-m` puts the working folder first on sys.path, before the backend folder
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tempfile.gettempdir(), check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, [f"cannot run {python}: {exc}", "fix the Backend Python path"], None
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return False, [f"the backend did not answer (exit {out.returncode})", *tail], None
    devices = report_devices(report)
    lines = [f"Python {report['python']}, CUDA: {'yes' if report.get('cuda') else 'no'}, devices: {', '.join(devices)}"]
    lines += [f"{name}: {version or 'missing'}" for name, version in report["packages"].items()]
    if "model" in report:
        lines.append(f"model {report['model']['name']}: {'loads' if report['model']['loads'] else 'does NOT load'}")
    lines += [f"PROBLEM: {p['what']} -> {p['fix']}" for p in report["problems"]]
    return not report["problems"], lines, devices


CLASSES = (PIVA_AddonPreferences,)
