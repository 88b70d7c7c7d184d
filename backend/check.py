"""``python -m backend check``: what this Python offers the backend, each problem with its fix.

Prints one JSON object (the extension's "Check backend" button shows it) and exits 0 when the
backend can run, 1 otherwise.
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
    return report


def main_check(model: str = "") -> int:
    report = probe()
    if model:
        try:
            import torch

            from .diffusion.model import DiffusionModel

            DiffusionModel.load(model, device=torch.device("cpu"), dtype=torch.float32)
            report["model"] = {"name": model, "loads": True}
        except Exception as exc:  # reported, with the loader's own teaching message
            report["model"] = {"name": model, "loads": False}
            report["problems"].append({"what": f"model {model!r} does not load: {exc}", "fix": "check the model id or folder"})
    print(json.dumps(report, indent=2))
    return 0 if not report["problems"] else 1
