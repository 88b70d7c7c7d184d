"""The preferences' "Check model": is the chosen model and ControlNet usable, read without torch (no bpy).

A local folder is checked by its layout (``contract/model_layout.py``: the components, safetensors
weights only); ``toy`` is the shipped folder under the backend; a hub id is checked only when the
backend loads it (it needs online access, see ``core/network.py``).
"""

from __future__ import annotations

from pathlib import Path

from ..contract.model_layout import check_model_folder, check_single_model_folder
from .network import is_hub_id, network_refusal

HUB_LINE = "hub id: checked when the backend loads it (needs online access)"


def toy_folder(backend_root: str) -> Path | None:
    """The shipped toy model under the backend folder, when it is there."""
    if not backend_root:
        return None
    folder = Path(backend_root) / "backend" / "models" / "toy"
    return folder if folder.is_dir() else None


def check_model_choice(
    model: str, controlnet: str = "", *, online_access: bool = True, backend_root: str = ""
) -> tuple[bool, list[str]]:
    """(usable, lines for the preferences) for the Model and Depth ControlNet preferences."""
    model, controlnet = model.strip() or "toy", controlnet.strip()
    lines: list[str] = []
    ok = True
    if model == "toy":
        folder = toy_folder(backend_root)
        if folder is None:
            lines.append("model toy: the model shipped with the backend (Check backend loads it)")
        else:
            report = check_model_folder(folder)
            lines += [f"model toy ({folder}):", *report.lines()]
            ok = report.ok
    elif is_hub_id(model):
        lines.append(f"model {model!r}: {HUB_LINE}")
    else:
        report = check_model_folder(model)
        lines += [f"model folder {report.folder}:", *report.lines()] if report.exists else [f"PROBLEM: {report.message}"]
        ok = report.ok
    if not controlnet:
        lines.append("ControlNet: the model's own (its controlnet/ folder, or the hub default of a hub model)")
    elif is_hub_id(controlnet):
        lines.append(f"ControlNet {controlnet!r}: {HUB_LINE}")
    else:
        report = check_single_model_folder(controlnet)
        lines += report.lines()
        ok = ok and report.ok
    refusal = network_refusal(model, controlnet, online_access)
    if refusal is not None:
        lines.append(f"PROBLEM: {refusal}")
        ok = False
    return ok, lines
