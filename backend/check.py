"""``python -m backend check``: what this Python offers the backend, each problem with its fix.

Prints one JSON object (the extension's "Check backend" button shows it) and exits 0 when the
backend can run, 1 otherwise. ``"devices"`` lists the devices of the contract this torch can use
(``["cpu"]``, ``["cpu", "cuda"]``, ...); ``"cuda"`` and ``"cuda_devices"`` say more about CUDA.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

REQUIRED = ("torch", "numpy", "diffusers", "peft", "transformers", "safetensors", "PIL", "mcubes", "xatlas")
OPTIONAL = ("nerfacc", "tinycudann")

FIXES = {
    "torch": "install the pinned environment: `python3.11 build.py setup` (or pip install torch==2.13.0)",
    "tinycudann": "optional; on a CUDA machine: pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch",
    "nerfacc": "optional on the CPU; pip install nerfacc==0.5.3",
}


def probe() -> dict[str, Any]:
    report: dict[str, Any] = {"python": sys.version.split()[0], "packages": {}, "problems": []}
    for name in REQUIRED + OPTIONAL:
        try:
            module = importlib.import_module(name)
            report["packages"][name] = getattr(module, "__version__", "present")
        except Exception as exc:  # any import failure is a finding to report, not to crash on
            report["packages"][name] = None
            if name in REQUIRED or name == "nerfacc":
                fix = FIXES.get(name, f"pip install {name} (see requirements.txt for the pinned version)")
                report["problems"].append({"what": f"{name} does not import: {exc}", "fix": fix})
    try:
        import torch

        report["cuda"] = torch.cuda.is_available()
        report["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        report["cuda"] = False
        report["cuda_devices"] = []
    report["devices"] = usable_devices()
    return report


def usable_devices() -> list[str]:
    """The names of ``contract.DEVICES`` (other than ``auto``) this Python's torch can run on, in
    that order: ``["cpu"]`` on a plain machine, ``["cpu", "cuda"]`` with an NVIDIA GPU, ``["cpu",
    "mps"]`` on Apple silicon; ``[]`` when torch does not import. The extension fills its device
    list from it (the report's ``"devices"``)."""
    from blender_piva.contract import DEVICES

    try:
        import torch
    except Exception:  # no torch, no device: the problem is reported with its fix by probe()
        return []
    mps = getattr(torch.backends, "mps", None)
    usable = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": bool(mps is not None and mps.is_available()),
    }
    return [name for name in DEVICES if name != "auto" and usable.get(name, False)]


def main_check(model: str = "", controlnet: str = "") -> int:
    report = probe()
    if model:
        report["model"] = {"name": model, "loads": False}
        problem = check_model(model, controlnet, report["model"])
        if problem is not None:
            report["problems"].append(problem)
    print(json.dumps(report, indent=2))
    return 0 if not report["problems"] else 1


def check_model(model: str, controlnet: str, entry: dict[str, Any]) -> dict[str, str] | None:
    """Load ``model`` as a job would (``toy`` = the shipped folder, the model's own ControlNet);
    fill ``entry`` and return the problem, or None when it loads."""
    try:
        import torch

        from .diffusion.model import DiffusionModel
        from .stages.context import StageError
        from .stages.edit import resolve_controlnet, resolve_model
    except Exception as exc:  # a broken environment is reported above; say why the model was not tried
        return {"what": f"model {model!r} was not tried: {type(exc).__name__}: {exc}", "fix": FIXES["torch"]}
    try:
        path = resolve_model(model)
        net = resolve_controlnet(path, controlnet)
        DiffusionModel.load(path, controlnet=net, device=torch.device("cpu"), dtype=torch.float32)
    except StageError as exc:
        return {"what": f"model {model!r} does not load: {exc}", "fix": exc.hint}
    except Exception as exc:  # reported, with the loader's own teaching message
        return {"what": f"model {model!r} does not load: {exc}", "fix": "check the model id or folder"}
    entry.update(path=path, controlnet=net, loads=True)
    return None
