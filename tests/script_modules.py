"""Scripts under bench/ and scripts/ are files, not packages: tests import them by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str, module_name: str) -> ModuleType:
    """The module of ``ROOT / relative_path``, registered as ``module_name`` (dataclasses look their
    module up by name) and executed with its own folder on ``sys.path`` (bench scripts import
    ``_toy.py`` as their neighbour)."""
    path = ROOT / relative_path
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))
